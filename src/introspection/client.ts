/**
 * The RFC 7662 client: one POST per token, authenticated as the resource server, over a
 * keep-alive undici pool. What an answer means depends on who it is about:
 *
 * - 200 with a valid body: the answer (active or not).
 * - 400 and other 4xx about the token (413, 422, …): that token is refused, i.e. inactive
 *   (401 invalid_token, negatively cached). oidc-provider answers 400 to every JWT-shaped token,
 *   so anybody can cause these; they must not look like an AS fault (RFC 7662 §2.3 allows a 400).
 * - Except a 400 that asks for a grant (`unsupported_grant_type`, `invalid_grant`, or an
 *   `error_description` naming `grant_type`): that is a token endpoint, i.e. introspection.url
 *   points at the wrong endpoint and no token could ever pass. `introspection_misconfigured`, as
 *   below, and the probe fails saying so (before, every valid token was refused token_inactive).
 * - 401, 403 (cnfguard's own credentials), 404, 405 (a wrong URL), 3xx: cnfguard's configuration
 *   is wrong. Fail closed with `introspection_misconfigured` (503), which the circuit breaker does
 *   not count, and warn (at most once a minute) naming the URL and the status.
 * - Timeouts, transport errors, 408, 429, 5xx, oversized or malformed answers: the AS is failing,
 *   `introspection_unavailable` (503), which the breaker counts.
 */
import { randomBytes } from 'node:crypto';
import { Agent } from '../undici.ts';
import { connectWithin, requestWithin } from './bounded-request.ts';
import { GuardError } from '../oauth/reasons.ts';
import { explainIntrospectionFailure, type IntrospectionFailure } from './explain.ts';
import { INACTIVE, InvalidIntrospectionAnswer, tokenInfoFromAnswer, type TokenInfo } from './token-info.ts';
import { SIGNED_ANSWER_TYPE, UnverifiedAnswer, type VerifySignedAnswer } from './signed-answer.ts';

/**
 * Labels of `cnfguard_introspection_requests_total{outcome}`. AS calls: `active`, `inactive`,
 * `refused` (a 4xx about the token), `misconfigured` (401/403/404/405/3xx), `timeout`,
 * `network_error`, `http_error` (408, 5xx), `rate_limited` (the AS's 429), `invalid_response`,
 * `unverified` (responseFormat jwt: not a valid signed answer).
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
  | 'unverified'
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
  /** `responseFormat: jwt` (RFC 9701): ask for signed answers and accept nothing else. */
  signedAnswers?: VerifySignedAnswer | undefined;
  /** Told, with the cause, when a signed answer does not verify (an AS failure: 503, fail closed). */
  onUnverified?: (warning: { url: string; cause: string }) => void;
  /** Milliseconds, for the warning interval; `performance.now` by default (tests pass their clock). */
  now?: () => number;
}

export interface MisconfigurationWarning {
  /** The introspection URL without userinfo, query or fragment. */
  url: string;
  status: number;
  /** The AS's `error` code, when its answer named one (a token endpoint's 400). */
  asError?: string;
  /** The likely cause, when the answer tells more than the status. */
  hint?: string;
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

/** What the probe and the warning say when introspection.url answered like a token endpoint. */
export const TOKEN_ENDPOINT_HINT =
  "is introspection.url the introspection endpoint? it answered like a token endpoint (it asked for a grant_type): use the AS's introspection_endpoint (named in its /.well-known/oauth-authorization-server or openid-configuration metadata)";

/**
 * The `error` of a 400 answer that asks for a grant: `unsupported_grant_type`, `invalid_grant`, or
 * any error whose `error_description` names `grant_type` (oidc-provider: invalid_request,
 * "missing required parameter 'grant_type'"). An introspection endpoint never asks for one, so
 * such an answer comes from a token endpoint. Undefined for anything else (a 400 about the token).
 */
export function tokenEndpointError(answer: unknown): string | undefined {
  if (typeof answer !== 'object' || answer === null) return undefined;
  const { error, error_description: description } = answer as Record<string, unknown>;
  if (typeof error !== 'string' || !/^[\x20-\x7e]{1,64}$/.test(error)) return undefined;
  if (error === 'unsupported_grant_type' || error === 'invalid_grant') return error;
  return typeof description === 'string' && /grant_type/i.test(description) ? error : undefined;
}

/** The JSON of a small error answer, or undefined (bigger than `cap`, not JSON). */
async function readErrorAnswer(body: AsyncIterable<Buffer> & { destroy(): unknown }, cap: number): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += chunk.length;
    if (size > cap) {
      body.destroy();
      return undefined;
    }
    chunks.push(chunk);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
  } catch {
    return undefined;
  }
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

/** The start-up probe's verdict: the AS answered as an introspection endpoint, or why not. */
export type ProbeResult = { ok: true; ms: number } | { ok: false; url: string; failure: IntrospectionFailure; cause: string; check: string };

export interface IntrospectionClient {
  introspect: Introspect;
  /** How the latest failed call failed (for the breaker's warning); undefined before any. */
  lastFailure(): IntrospectionFailure | undefined;
  /**
   * Introspects a random dummy token once, outside the metrics and the misconfiguration warning,
   * and says whether the AS answered like an introspection endpoint (any active or inactive answer,
   * or a 400 about the token; not a token endpoint's 400 asking for a grant_type) or why it did not.
   */
  probe(): Promise<ProbeResult>;
  /** introspection.url without query or fragment: what logs may show. */
  readonly shownUrl: string;
  close(): Promise<void>;
}

export function createIntrospectionClient(options: IntrospectionClientOptions): IntrospectionClient {
  const maxAnswerBytes = options.maxAnswerBytes ?? 256 * 1024;
  const dispatcher = new Agent({
    connect: {
      // The TCP connect and TLS handshake within timeoutMs too (undici's default is 10 s).
      ...connectWithin(options.timeoutMs),
      ...(options.ca !== undefined && { ca: options.ca }),
      ...(options.cert !== undefined && options.key !== undefined && { cert: options.cert, key: options.key }),
    },
    keepAliveTimeout: 30_000,
    connections: 64,
  });
  const headers: Record<string, string> = {
    'content-type': 'application/x-www-form-urlencoded',
    accept: options.signedAnswers === undefined ? 'application/json' : SIGNED_ANSWER_TYPE,
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
  const warnMisconfigured = (status: number, more: { asError?: string; hint?: string } = {}) => {
    const t = (options.now ?? performance.now.bind(performance))();
    if (t - lastWarnMs < warnIntervalMs) {
      suppressed++;
      return;
    }
    lastWarnMs = t;
    options.onMisconfigured?.({ url: shownUrl, status, ...more, suppressed });
    suppressed = 0;
  };

  let lastFailure: IntrospectionFailure | undefined;
  /** Set for the probe's call: its outcome goes here, not to the metrics, the warning or lastFailure. */
  interface ProbeSink {
    failure?: IntrospectionFailure;
    /** The AS's error code when it answered like a token endpoint. */
    tokenEndpoint?: string;
  }
  const report = (outcome: IntrospectionOutcome, started: number, sink: ProbeSink | undefined) => {
    if (sink === undefined) options.onOutcome?.(outcome, (performance.now() - started) / 1000);
  };
  const failed = (failure: IntrospectionFailure, sink: ProbeSink | undefined) => {
    if (sink === undefined) lastFailure = failure;
    else sink.failure = failure;
  };
  const fail = (outcome: IntrospectionOutcome, started: number, sink: ProbeSink | undefined, failure: IntrospectionFailure, detail: string, retryAfterSeconds?: number): never => {
    report(outcome, started, sink);
    failed(failure, sink);
    throw new GuardError('introspection_unavailable', { detail, ...(retryAfterSeconds !== undefined && { retryAfterSeconds }) });
  };

  async function introspect(token: string): Promise<TokenInfo> {
    return call(token, undefined);
  }

  async function call(token: string, sink: ProbeSink | undefined): Promise<TokenInfo> {
    const started = performance.now();
    const body = new URLSearchParams({ token, token_type_hint: 'access_token', ...credentials }).toString();
    const signal = AbortSignal.timeout(options.timeoutMs);
    let text: string;
    let statusCode: number;
    let contentType: string | undefined;
    try {
      const response = await requestWithin(options.url, { dispatcher, method: 'POST', headers, body, signal });
      statusCode = response.statusCode;
      if (statusCode === 400) {
        const asError = tokenEndpointError(await readErrorAnswer(response.body as AsyncIterable<Buffer> & { destroy(): unknown }, 16 * 1024));
        if (asError !== undefined) {
          report('misconfigured', started, sink);
          failed({ kind: 'status', status: statusCode }, sink);
          if (sink === undefined) warnMisconfigured(statusCode, { asError, hint: TOKEN_ENDPOINT_HINT });
          else sink.tokenEndpoint = asError;
          throw new GuardError('introspection_misconfigured', { detail: `introspection answered HTTP 400 ${asError} like a token endpoint: check introspection.url` });
        }
        report('refused', started, sink);
        return INACTIVE;
      }
      if (statusCode !== 200) {
        await response.body.dump();
        const meaning = statusMeaning(statusCode);
        if (meaning === 'token_refused') {
          report('refused', started, sink);
          return INACTIVE;
        }
        if (meaning === 'misconfigured') {
          report('misconfigured', started, sink);
          failed({ kind: 'status', status: statusCode }, sink);
          if (sink === undefined) warnMisconfigured(statusCode);
          throw new GuardError('introspection_misconfigured', { detail: `introspection answered HTTP ${statusCode}: check introspection.url and the client credentials` });
        }
        if (statusCode === 429 || statusCode === 503) {
          const retryAfter = retryAfterSeconds(response.headers['retry-after']);
          return fail(statusCode === 429 ? 'rate_limited' : 'http_error', started, sink, { kind: 'status', status: statusCode }, `introspection answered HTTP ${statusCode}`, retryAfter);
        }
        return fail('http_error', started, sink, { kind: 'status', status: statusCode }, `introspection answered HTTP ${statusCode}`);
      }
      const chunks: Buffer[] = [];
      let size = 0;
      for await (const chunk of response.body as AsyncIterable<Buffer>) {
        size += chunk.length;
        if (size > maxAnswerBytes) {
          response.body.destroy();
          const detail = `introspection answer larger than ${maxAnswerBytes} bytes`;
          return fail('invalid_response', started, sink, { kind: 'answer', detail }, detail);
        }
        chunks.push(chunk);
      }
      text = Buffer.concat(chunks).toString('utf8');
      contentType = [response.headers['content-type']].flat()[0];
    } catch (err) {
      if (err instanceof GuardError) throw err;
      const timedOut = signal.aborted || (err as { name?: string }).name === 'TimeoutError' || (err as { code?: string }).code?.includes('TIMEOUT') === true;
      const code = (err as { code?: string }).code;
      return fail(
        timedOut ? 'timeout' : 'network_error',
        started,
        sink,
        timedOut ? { kind: 'timeout' } : { kind: 'transport', code: code ?? 'unknown' },
        `introspection ${timedOut ? 'timed out' : `failed: ${code ?? (err as Error).message}`}`,
      );
    }
    let info: TokenInfo;
    try {
      // RFC 9701: only the verified token_introspection member is read.
      const answer: unknown = options.signedAnswers === undefined ? JSON.parse(text) : await options.signedAnswers(text, contentType);
      info = tokenInfoFromAnswer(answer, { keepClaims: options.keepClaims === true });
    } catch (err) {
      if (err instanceof UnverifiedAnswer) {
        report('unverified', started, sink);
        failed({ kind: 'answer', detail: `unverified signed answer: ${err.message}` }, sink);
        if (sink === undefined) options.onUnverified?.({ url: shownUrl, cause: err.message });
        throw new GuardError('introspection_unverified', { detail: `signed introspection answer refused: ${err.message}` });
      }
      const detail = err instanceof InvalidIntrospectionAnswer ? err.message : 'introspection answer is not JSON';
      return fail('invalid_response', started, sink, { kind: 'answer', detail }, detail);
    }
    report(info.active ? 'active' : 'inactive', started, sink);
    return info;
  }

  async function probe(): Promise<ProbeResult> {
    const started = performance.now();
    const sink: ProbeSink = {};
    try {
      // Random, so no AS can know it: whatever it answers says nothing about a real token.
      await call(`cnfguard-startup-probe-${randomBytes(16).toString('base64url')}`, sink);
      return { ok: true, ms: performance.now() - started };
    } catch (err) {
      const failure: IntrospectionFailure = sink.failure ?? { kind: 'answer', detail: (err as Error).message };
      if (sink.tokenEndpoint !== undefined) return { ok: false, url: shownUrl, failure, cause: `HTTP 400 ${sink.tokenEndpoint}`, check: TOKEN_ENDPOINT_HINT };
      return { ok: false, url: shownUrl, failure, ...explainIntrospectionFailure(failure) };
    }
  }

  return { introspect, probe, lastFailure: () => lastFailure, shownUrl, close: () => dispatcher.close() };
}
