/**
 * The RFC 7662 client: one POST per token, authenticated as the resource server, over a
 * keep-alive undici pool. Every way the call can fail (timeout, refused connection, TLS error,
 * non-200, oversized or non-JSON body, malformed answer) is the authorization server's fault and
 * becomes `introspection_unavailable` (503, fail closed), never `invalid_token`.
 */
import { Agent, request } from 'undici';
import { GuardError } from '../oauth/errors.ts';
import { InvalidIntrospectionAnswer, tokenInfoFromAnswer, type TokenInfo } from './token-info.ts';

export type IntrospectionOutcome = 'active' | 'inactive' | 'timeout' | 'network_error' | 'http_error' | 'rate_limited' | 'invalid_response' | 'circuit_open';

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
