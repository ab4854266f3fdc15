/**
 * The RFC 7662 client: one POST per token, authenticated as the resource server, over a
 * keep-alive undici pool. What an answer means depends on who it is about:
 *
 * - 200 with a valid body: the answer (active or not).
 * - 400 and other 4xx about the token (413, 422, …): that token is refused, i.e. inactive
 *   (401 invalid_token, negatively cached). oidc-provider answers 400 to every JWT-shaped token,
 *   so anybody can cause these; they must not look like an AS fault.
 * - 401, 403 (cnfguard's own credentials), 404, 405 (a wrong URL), 3xx: cnfguard's configuration
 *   is wrong. Fail closed with `introspection_misconfigured` (503), which the circuit breaker does
 *   not count, and warn (at most once a minute) naming the URL and the status.
 * - Timeouts, transport errors, 408, 429, 5xx, oversized or malformed answers: the AS is failing,
 *   `introspection_unavailable` (503), which the breaker counts.
 */
import { Agent, request } from 'undici';
import { GuardError } from '../oauth/errors.ts';
import { INACTIVE, InvalidIntrospectionAnswer, tokenInfoFromAnswer, type TokenInfo } from './token-info.ts';

/**
 * Labels of `cnfguard_introspection_requests_total{outcome}`. AS calls: `active`, `inactive`,
 * `refused` (a 4xx about the token), `misconfigured` (401/403/404/405/3xx), `timeout`,
 * `network_error`, `http_error` (408, 5xx), `rate_limited` (the AS's 429), `invalid_response`.
 * Not sent: `circuit_open`, `over_peer_budget`, `over_total_budget`.
 */
export type IntrospectionOutcome =
  | 'active'
  | 'inactive'
  | 'refused'
  | 'misconfigured'
  | 'timeout'
  | 'network_error'
  | 'http_error'
  | 'rate_limited'
  | 'invalid_response'
  | 'circuit_open'
  | 'over_peer_budget'
  | 'over_total_budget';

export interface IntrospectionClientOptions {
  url: string;
  clientId: string;
  clientSecret: string | undefined;
  authMethod: 'client_secret_basic' | 'client_secret_post' | 'tls_client_auth';
  /** PEM trust for the AS; the system store when absent. */
  ca?: string | undefined;
  /** PEM certificate and key for tls_client_auth. */
  cert?: string | undefined;
  key?: string | undefined;
  timeoutMs: number;
  /** Largest answer read; a bigger one is an AS fault. */
  maxAnswerBytes?: number;
  /** Keep whole answers for claim -> header mappings. */
  keepClaims?: boolean;
  onOutcome?: (outcome: IntrospectionOutcome, seconds: number) => void;
  /** Told when the AS refuses cnfguard itself (401/403/404/405/3xx); called at most once per `warnIntervalMs`. */
  onMisconfigured?: (warning: MisconfigurationWarning) => void;
  /** Default 60 000. */
  warnIntervalMs?: number;
}

export interface MisconfigurationWarning {
  /** The introspection URL without userinfo, query or fragment. */
  url: string;
  status: number;
  /** How many more such answers came since the previous warning. */
  suppressed: number;
}

/** What an HTTP status other than 200 from the introspection endpoint says, and about whom. */
export type StatusMeaning = 'token_refused' | 'misconfigured' | 'as_fault';

export function statusMeaning(status: number): StatusMeaning {
  if (status === 408 || status === 429 || status >= 500) return 'as_fault';
  if (status === 401 || status === 403 || status === 404 || status === 405 || status < 400) return 'misconfigured';
  return 'token_refused';
}

export type Introspect = (token: string) => Promise<TokenInfo>;

/** RFC 6749 §2.3.1: client_id and secret are form-urlencoded before Basic encoding. */
export function formUrlEncode(value: string): string {
  return encodeURIComponent(value)
    .replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)
    .replace(/%20/g, '+');
}

export function basicAuthorization(clientId: string, clientSecret: string): string {
  return `Basic ${Buffer.from(`${formUrlEncode(clientId)}:${formUrlEncode(clientSecret)}`).toString('base64')}`;
}

/** Retry-After as seconds (delay-seconds or an HTTP date), or undefined. */
export function retryAfterSeconds(value: string | string[] | undefined, nowMs = Date.now()): number | undefined {
  const text = Array.isArray(value) ? value[0] : value;
  if (text === undefined) return undefined;
  if (/^\d+$/.test(text.trim())) return Number(text.trim());
  const date = Date.parse(text);
  return Number.isNaN(date) ? undefined : Math.max(0, Math.ceil((date - nowMs) / 1000));
}

export interface IntrospectionClient {
  introspect: Introspect;
  close(): Promise<void>;
}

export function createIntrospectionClient(options: IntrospectionClientOptions): IntrospectionClient {
  const maxAnswerBytes = options.maxAnswerBytes ?? 256 * 1024;
  const dispatcher = new Agent({
    connect: {
      ...(options.ca !== undefined && { ca: options.ca }),
      ...(options.cert !== undefined && options.key !== undefined && { cert: options.cert, key: options.key }),
    },
    keepAliveTimeout: 30_000,
    connections: 64,
  });
  const headers: Record<string, string> = {
    'content-type': 'application/x-www-form-urlencoded',
    accept: 'application/json',
  };
  if (options.authMethod === 'client_secret_basic') headers.authorization = basicAuthorization(options.clientId, options.clientSecret ?? '');
  const credentials: Record<string, string> = {};
  if (options.authMethod !== 'client_secret_basic') credentials.client_id = options.clientId;
  if (options.authMethod === 'client_secret_post') credentials.client_secret = options.clientSecret ?? '';

  const shownUrl = (() => {
    const url = new URL(options.url);
    return `${url.origin}${url.pathname}`;
  })();
  const warnIntervalMs = options.warnIntervalMs ?? 60_000;
  let lastWarnMs = -Infinity;
  let suppressed = 0;
  const warnMisconfigured = (status: number) => {
    const t = performance.now();
    if (t - lastWarnMs < warnIntervalMs) {
      suppressed++;
      return;
    }
    lastWarnMs = t;
    options.onMisconfigured?.({ url: shownUrl, status, suppressed });
    suppressed = 0;
  };

  const report = (outcome: IntrospectionOutcome, started: number) => options.onOutcome?.(outcome, (performance.now() - started) / 1000);
  const fail = (outcome: IntrospectionOutcome, started: number, detail: string, retryAfterSeconds?: number): never => {
    report(outcome, started);
    throw new GuardError('introspection_unavailable', { detail, ...(retryAfterSeconds !== undefined && { retryAfterSeconds }) });
  };

  async function introspect(token: string): Promise<TokenInfo> {
    const started = performance.now();
    const body = new URLSearchParams({ token, token_type_hint: 'access_token', ...credentials }).toString();
    const signal = AbortSignal.timeout(options.timeoutMs);
    let text: string;
    let statusCode: number;
    try {
      const response = await request(options.url, { dispatcher, method: 'POST', headers, body, signal });
      statusCode = response.statusCode;
      if (statusCode !== 200) {
        await response.body.dump();
        const meaning = statusMeaning(statusCode);
        if (meaning === 'token_refused') {
          report('refused', started);
          return INACTIVE;
        }
        if (meaning === 'misconfigured') {
          report('misconfigured', started);
          warnMisconfigured(statusCode);
          throw new GuardError('introspection_misconfigured', { detail: `introspection answered HTTP ${statusCode}: check introspection.url and the client credentials` });
        }
        if (statusCode === 429 || statusCode === 503) {
          const retryAfter = retryAfterSeconds(response.headers['retry-after']);
          return fail(statusCode === 429 ? 'rate_limited' : 'http_error', started, `introspection answered HTTP ${statusCode}`, retryAfter);
        }
        return fail('http_error', started, `introspection answered HTTP ${statusCode}`);
      }
      const chunks: Buffer[] = [];
      let size = 0;
      for await (const chunk of response.body as AsyncIterable<Buffer>) {
        size += chunk.length;
        if (size > maxAnswerBytes) {
          response.body.destroy();
          return fail('invalid_response', started, `introspection answer larger than ${maxAnswerBytes} bytes`);
        }
        chunks.push(chunk);
      }
      text = Buffer.concat(chunks).toString('utf8');
    } catch (err) {
      if (err instanceof GuardError) throw err;
      const timedOut = signal.aborted || (err as { name?: string }).name === 'TimeoutError' || (err as { code?: string }).code?.includes('TIMEOUT') === true;
      return fail(timedOut ? 'timeout' : 'network_error', started, `introspection ${timedOut ? 'timed out' : `failed: ${(err as { code?: string }).code ?? (err as Error).message}`}`);
    }
    let info: TokenInfo;
    try {
      info = tokenInfoFromAnswer(JSON.parse(text), { keepClaims: options.keepClaims === true });
    } catch (err) {
      return fail('invalid_response', started, err instanceof InvalidIntrospectionAnswer ? err.message : 'introspection answer is not JSON');
    }
    report(info.active ? 'active' : 'inactive', started);
    return info;
  }

  return { introspect, close: () => dispatcher.close() };
}
