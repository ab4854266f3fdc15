/**
 * Local validation of RFC 9068 JWT access tokens: JWS only, `typ` at+jwt, an allowed asymmetric
 * alg, a key from the AS's JWKS by `kid` (jose's local JWK set: key type must fit the alg),
 * `iss`, `exp` present (RFC 9068 §2.2), `exp`/`nbf` against the injected clock with no leeway, an
 * `iat` at most `clockSkewSeconds` ahead. The claims then go through the same reader as an
 * introspection answer, so `cnf` meets the same binding code.
 */
import type { createLocalJWKSet, JSONWebKeySet, JWTPayload } from 'jose';
import { Agent } from '../undici.ts';
import { connectWithin, requestWithin } from '../introspection/bounded-request.ts';
import { InvalidIntrospectionAnswer, tokenInfoFromAnswer, type TokenInfo } from '../introspection/token-info.ts';
import { GuardError, type ReasonId } from '../oauth/reasons.ts';
import { jose, localKeySet, type JwksCache } from '../oauth/jose.ts';
import { JWT_ALGORITHMS } from './names.ts';

/** Algorithms a JWT access token may use: asymmetric only (a MAC alg would let the JWKS's public bytes sign). */
export { JWT_ALGORITHMS };

const B64URL = /^[A-Za-z0-9_-]+$/;

export interface ParsedJwt {
  header: Record<string, unknown>;
  payload: Record<string, unknown>;
}

function jsonPart(part: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
  } catch {
    throw new GuardError('jwt_malformed', { detail: 'a JWT part is not base64url JSON' });
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new GuardError('jwt_malformed', { detail: 'a JWT part is not a JSON object' });
  return value as Record<string, unknown>;
}

/** Whether the token has the shape of a JWS compact serialization (three base64url parts). */
export function looksLikeJws(token: string): boolean {
  const parts = token.split('.');
  return parts.length === 3 && parts.every((p, i) => (i === 2 ? p === '' || B64URL.test(p) : B64URL.test(p)));
}

/** Reads header and payload without verifying. Throws only GuardError('jwt_malformed' | 'jwt_algorithm_refused'). */
export function parseJwt(token: string): ParsedJwt {
  const parts = token.split('.');
  if (parts.length === 5) throw new GuardError('jwt_malformed', { detail: 'a JWE (encrypted) token is not accepted' });
  if (!looksLikeJws(token)) throw new GuardError('jwt_malformed', { detail: 'not three base64url parts' });
  const header = jsonPart(parts[0] as string);
  const payload = jsonPart(parts[1] as string);
  if (typeof header.alg !== 'string' || header.alg.toLowerCase() === 'none' || (parts[2] as string).length === 0) {
    throw new GuardError('jwt_algorithm_refused', { detail: 'unsigned JWT' });
  }
  return { header, payload };
}

/** RFC 9068 §4: `at+jwt` or `application/at+jwt`, any letter case. */
export function isAccessTokenType(typ: unknown): boolean {
  if (typeof typ !== 'string') return false;
  const t = typ.toLowerCase();
  return t === 'at+jwt' || t === 'application/at+jwt';
}

export type FetchJwks = () => Promise<unknown>;

export interface JwksOptions {
  fetch: FetchJwks;
  /** Milliseconds since the epoch. */
  now: () => number;
  /** Least time between two fetches that are not the one at start (unknown kid, failed signature, stale keys). */
  cooldownMs: number;
  /** Keys older than this are fetched again, in the background, when next used (`jwt.refreshSeconds`). Default 300 s. */
  refreshMs?: number;
  onFetch?: (ok: boolean, detail?: string) => void;
}

export type { JwksCache };

/** The default of `jwt.refreshSeconds`, in milliseconds. */
export const DEFAULT_JWKS_REFRESH_MS = 300_000;

function isJwks(value: unknown): value is JSONWebKeySet {
  return value !== null && typeof value === 'object' && Array.isArray((value as { keys?: unknown }).keys) && (value as { keys: unknown[] }).keys.every((k) => k !== null && typeof k === 'object');
}

/** A key as a string that is the same whatever the order of its members: any member that differs makes it another key. */
function keyIdentity(key: object): string {
  return JSON.stringify(Object.entries(key).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

function identities(set: JSONWebKeySet): Set<string> {
  return new Set(set.keys.map(keyIdentity));
}

/**
 * The AS's keys, fetched at start (`refresh(true)`), again when they are older than `refreshMs`
 * (in the background, on next use: no request waits for it), and when a verifier meets an unknown
 * kid or a signature its key does not verify. Fetches other than the one at start are at least
 * `cooldownMs` apart, failed ones included; a failed fetch keeps the keys held. A fetch that no
 * longer holds a key held before tells `onKeysDropped` listeners (the verified-JWT cache is
 * cleared: RFC 9068 §4 validates with the AS's current keys). Time is the injected `now`: no timers.
 */
export function createJwksCache(options: JwksOptions): JwksCache {
  const refreshMs = options.refreshMs ?? DEFAULT_JWKS_REFRESH_MS;
  let keys: JSONWebKeySet | undefined;
  let fetchedAt = -Infinity;
  let lastAttempt = -Infinity;
  let failing = false;
  let pending: Promise<boolean> | undefined;
  const droppedListeners: (() => void)[] = [];
  async function fetchOnce(force: boolean): Promise<boolean> {
    const started = options.now();
    // The cooldown spaces every fetch but the one at start.
    if (!force) lastAttempt = started;
    try {
      const value = await options.fetch();
      if (!isJwks(value)) throw new Error('not a JWK set');
      const before = keys === undefined ? undefined : identities(keys);
      const after = identities(value);
      const same = before !== undefined && before.size === after.size && [...before].every((id) => after.has(id));
      // The same keys keep the same object: verifiers rebuild nothing and see no new key set.
      if (!same) keys = value;
      fetchedAt = started;
      failing = false;
      options.onFetch?.(true);
      if (before !== undefined && [...before].some((id) => !after.has(id))) {
        for (const listener of droppedListeners) listener();
      }
      return true;
    } catch (err) {
      failing = true;
      options.onFetch?.(false, (err as Error).message);
      return false;
    } finally {
      pending = undefined;
    }
  }
  function withinCooldown(): boolean {
    return options.now() - lastAttempt < options.cooldownMs;
  }
  return {
    get keys() {
      return keys;
    },
    get failing() {
      return failing;
    },
    refresh(force = false) {
      if (pending !== undefined) return pending;
      if (!force && withinCooldown()) return Promise.resolve(false);
      pending = fetchOnce(force);
      return pending;
    },
    refreshIfStale() {
      if (pending !== undefined || keys === undefined || options.now() - fetchedAt < refreshMs || withinCooldown()) return undefined;
      pending = fetchOnce(false);
      return pending;
    },
    onKeysDropped(listener) {
      droppedListeners.push(listener);
    },
  };
}

export interface HttpJwksOptions {
  url: string;
  ca?: string | undefined;
  timeoutMs: number;
  maxBytes: number;
}

/** GET the JWKS over undici with the AS's trust, a timeout and a size cap. */
export function createHttpJwksFetch(options: HttpJwksOptions): { fetch: FetchJwks; close(): Promise<void> } {
  // The connect and TLS handshake within timeoutMs too, and the whole call (bounded-request.ts).
  const dispatcher = new Agent({ connect: { ...connectWithin(options.timeoutMs), ...(options.ca !== undefined && { ca: options.ca }) }, keepAliveTimeout: 30_000 });
  async function fetch(): Promise<unknown> {
    const response = await requestWithin(options.url, { dispatcher, headers: { accept: 'application/json, application/jwk-set+json' }, signal: AbortSignal.timeout(options.timeoutMs) });
    if (response.statusCode !== 200) {
      await response.body.dump();
      throw new Error(`JWKS answered HTTP ${response.statusCode}`);
    }
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of response.body as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > options.maxBytes) {
        response.body.destroy();
        throw new Error(`JWKS larger than ${options.maxBytes} bytes`);
      }
      chunks.push(chunk);
    }
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  }
  return { fetch, close: () => dispatcher.close() };
}

export interface JwtVerifierOptions {
  issuer: string;
  algorithms: readonly string[];
  jwks: JwksCache;
  /** Milliseconds since the epoch. */
  now: () => number;
  /** How far ahead of our clock a token's `iat` may be (an AS clock running slightly ahead). */
  clockSkewSeconds: number;
  keepClaims?: boolean;
}

export type JwtVerify = (token: string) => Promise<TokenInfo>;

function reasonOf(err: unknown): { reason: ReasonId; detail: string } {
  const joseErrors = jose().errors;
  if (err instanceof GuardError) return { reason: err.reason, detail: err.detail ?? err.reason };
  if (err instanceof joseErrors.JWTExpired) return { reason: 'jwt_expired', detail: 'exp is past' };
  if (err instanceof joseErrors.JWTClaimValidationFailed) {
    const claim = err.claim;
    if (claim === 'iss') return { reason: 'jwt_issuer_mismatch', detail: 'iss differs from jwt.issuer' };
    if (claim === 'nbf') return { reason: 'jwt_not_yet_valid', detail: 'nbf is in the future' };
    if (claim === 'typ') return { reason: 'jwt_type_invalid', detail: 'typ is not at+jwt' };
    if (claim === 'exp' && err.reason === 'missing') return { reason: 'jwt_claims_invalid', detail: 'exp is missing (RFC 9068 §2.2)' };
    return { reason: 'jwt_claims_invalid', detail: `claim ${claim} invalid` };
  }
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return { reason: 'jwt_algorithm_refused', detail: 'alg not in jwt.algorithms' };
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return { reason: 'jwt_signature_invalid', detail: 'signature does not verify' };
  if (err instanceof joseErrors.JWKSNoMatchingKey || err instanceof joseErrors.JWKSMultipleMatchingKeys) return { reason: 'jwt_key_unknown', detail: 'no JWKS key matches kid and alg' };
  if (err instanceof joseErrors.JOSEError) return { reason: 'jwt_malformed', detail: err.code };
  return { reason: 'jwt_malformed', detail: 'unreadable JWT' };
}

/** Verifies a JWT access token; rejects with a GuardError (401 jwt_*, or 503 jwks_unavailable). */
export function createJwtVerifier(options: JwtVerifierOptions): JwtVerify {
  for (const alg of options.algorithms) {
    if (!(JWT_ALGORITHMS as readonly string[]).includes(alg)) throw new Error(`jwt.algorithms: ${alg} is not an asymmetric JWS algorithm`);
  }
  const algorithms = [...options.algorithms];
  const getKeys = localKeySet(options.jwks);

  async function attempt(token: string, get: ReturnType<typeof createLocalJWKSet>): Promise<JWTPayload> {
    const { payload } = await jose().jwtVerify(token, get, { issuer: options.issuer, algorithms, typ: 'at+jwt', currentDate: new Date(options.now()), clockTolerance: 0, requiredClaims: ['exp'] });
    return payload;
  }

  return async function verify(token: string): Promise<TokenInfo> {
    const { header } = parseJwt(token);
    if (!isAccessTokenType(header.typ)) throw new GuardError('jwt_type_invalid', { detail: 'typ is not at+jwt' });
    if (!algorithms.includes(header.alg as string)) throw new GuardError('jwt_algorithm_refused', { detail: 'alg not in jwt.algorithms' });
    if (header.crit !== undefined) throw new GuardError('jwt_malformed', { detail: 'crit header not supported' });
    let payload: JWTPayload;
    // Keys past jwt.refreshSeconds are fetched again in the background; this token meets the keys held.
    void options.jwks.refreshIfStale();
    try {
      let get = getKeys();
      if (get === undefined) {
        await options.jwks.refresh();
        get = getKeys();
        if (get === undefined) throw new GuardError('jwks_unavailable', { detail: 'no JWKS fetched yet' });
      }
      try {
        payload = await attempt(token, get);
      } catch (err) {
        const errors = jose().errors;
        const unknownKid = err instanceof errors.JWKSNoMatchingKey;
        if (!unknownKid && !(err instanceof errors.JWSSignatureVerificationFailed)) throw err;
        // An unknown kid (the AS may have rotated), or a key that does not verify (the AS may
        // have re-keyed under the same kid): refetch (within the cooldown) and, when the key set
        // changed, try once more.
        const fetched = await options.jwks.refresh();
        if (unknownKid && !fetched && options.jwks.failing) throw new GuardError('jwks_unavailable', { detail: 'unknown key and the JWKS cannot be fetched' });
        const next = getKeys();
        if (next === undefined || next === get) throw err;
        payload = await attempt(token, next);
      }
    } catch (err) {
      if (err instanceof GuardError && err.reason === 'jwks_unavailable') throw err;
      const { reason, detail } = reasonOf(err);
      throw new GuardError(reason, { detail });
    }
    // jose checks iat's type only; a token from the future is not yet valid (beyond the skew).
    const ahead = typeof payload.iat === 'number' ? payload.iat - options.now() / 1000 : 0;
    if (ahead > options.clockSkewSeconds) throw new GuardError('jwt_not_yet_valid', { detail: `iat is ${Math.ceil(ahead)} s ahead (jwt.clockSkewSeconds: ${options.clockSkewSeconds})` });
    try {
      const { active: _ignored, ...claims } = payload as Record<string, unknown>;
      return tokenInfoFromAnswer({ ...claims, active: true }, { keepClaims: options.keepClaims === true });
    } catch (err) {
      throw new GuardError('jwt_claims_invalid', { detail: err instanceof InvalidIntrospectionAnswer ? err.message : 'claims of the wrong type' });
    }
  };
}
