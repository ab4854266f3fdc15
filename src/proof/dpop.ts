/**
 * Step: the DPoP proof check (RFC 9449 §4.3 and §7.1), for requests with `Authorization: DPoP`.
 * Pure apart from what is injected (clock, replay store, nonce source). It never throws: every
 * outcome is `{ ok: true, jkt }` or a typed failure carrying the reason id the request is refused
 * with. The checks run in the order of {@link verifyDpopProof}; the replay store is asked last, so
 * a `jti` is recorded only for a proof that passed every other check.
 *
 * Neither the proof nor the access token appears in a failure, a detail or a log line.
 */
import { hash } from 'node:crypto';
import type { LRUCache } from 'lru-cache';
import { lazyLru } from '../lru.ts';
import { isAsymmetricJwsAlgorithm } from '../oauth/jws-algorithms.ts';
import { GuardError, type ReasonId } from '../oauth/reasons.ts';
import { thumbprintsEqual } from '../tls/certificates.ts';
import { createHtuNormalizer, normalizeHtu, type HtuNormalizer } from './htu.ts';
import { algorithmAccepted, checkHeader, isObject, jsonPart, type KnownHeader } from './dpop-header.ts';
import { verifyJwsSignature, type SignatureThread } from './jws-signature.ts';
import type { NonceSource } from './nonce.ts';

export { signatureThreadFor, type SignatureThread } from './jws-signature.ts';
import { originOf, type OriginCheck } from './origins.ts';
import { replayKey, type ReplayStore } from '../state/replay-store.ts';

/** A proof longer than this is refused before it is parsed (the header line, in bytes). */
export const MAX_PROOF_BYTES = 4096;
/** Longest `jti` accepted (RFC 9449 §11.1: reject huge values; the store keeps a hash anyway). */
export const MAX_JTI_LENGTH = 256;

const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;

/** Protected headers longer than this are checked every time rather than remembered. */
const MAX_KNOWN_HEADER_CHARS = 1024;

/**
 * What the DPoP check remembers between requests, made where the DPoP dependencies are composed
 * (src/runtime.ts) and injected; none is a module global.
 *
 * `knownHeaders`: protected headers already checked, by their exact base64url text. A client signs
 * every proof with one key, and so sends one header ({typ, alg, jwk}) again and again: its parse,
 * `typ`, `jwk` checks, RFC 7638 thumbprint and key import (checked against `alg` by jose) are done
 * once. A header is remembered only after a signature made with it verified. The `alg` is checked
 * against the policy on every proof, since routes and reloads may differ.
 *
 * `htu`: the normalisation of the URIs of the last requests (htu.ts).
 */
export interface DpopCaches {
  readonly knownHeaders: LRUCache<string, KnownHeader>;
  readonly htu: HtuNormalizer;
}

export function createDpopCaches(options: { knownHeaders?: number; htus?: number } = {}): DpopCaches {
  return { knownHeaders: lazyLru<string, KnownHeader>(options.knownHeaders ?? 10_000), htu: createHtuNormalizer(options.htus ?? 1000) };
}

export interface DpopPolicy {
  /** `dpop.algorithms`; MAC algorithms and `none` are never accepted, configured or not. */
  readonly algorithms: readonly string[];
  readonly proofMaxAgeSeconds: number;
  readonly clockSkewSeconds: number;
}

export interface DpopProofInput {
  /** Every `DPoP` header field line as received (`req.headersDistinct.dpop`); none is undefined or []. */
  readonly headerLines: readonly string[] | undefined;
  /** The request method as received (case-sensitive, RFC 9110 §9.1). */
  readonly method: string;
  /** The URI the client called, e.g. from {@link expectedHtu}; query and fragment are ignored. */
  readonly htu: string;
  /** The access token from `Authorization: DPoP <token>`, for `ath`. */
  readonly accessToken: string;
}

export interface DpopDeps {
  readonly policy: DpopPolicy;
  readonly replayStore: ReplayStore;
  /** Set when `dpop.nonce: true`: proofs must then carry a nonce this source issued. */
  readonly nonces?: NonceSource | undefined;
  /** Epoch seconds. */
  readonly now: () => number;
  /** Where signatures are checked; default `event-loop`. */
  readonly signatureThread?: SignatureThread | undefined;
  /** The origins the expected `htu` may have (origins.ts); unset: any. */
  readonly origins?: OriginCheck | undefined;
  /** What is remembered between proofs ({@link createDpopCaches}); unset: nothing is. */
  readonly caches?: DpopCaches | undefined;
}

/** Which check refused the proof: finer than the reason id, for the log-only detail. */
export type DpopCheck =
  | 'header_missing'
  | 'header_repeated'
  | 'too_large'
  | 'compact'
  | 'header'
  | 'typ'
  | 'alg'
  | 'jwk'
  | 'signature'
  | 'claims'
  | 'htm'
  | 'htu'
  | 'iat'
  | 'ath'
  | 'nonce'
  | 'replayed'
  | 'store_unavailable';

export type DpopResult =
  | {
      readonly ok: true;
      /** RFC 7638 SHA-256 thumbprint of the proof key: compared with `cnf.jkt`, forwarded as x-auth-dpop-jkt. */
      readonly jkt: string;
      /** With nonces on: a fresh nonce for the success's `DPoP-Nonce` when the proof's was not the current one. */
      readonly nonce?: string;
    }
  | { readonly ok: false; readonly check: DpopCheck; readonly reason: ReasonId; readonly error: GuardError };

const REASON_OF: Readonly<Record<DpopCheck, ReasonId>> = {
  header_missing: 'dpop_proof_missing',
  header_repeated: 'dpop_proof_repeated',
  too_large: 'dpop_proof_invalid',
  compact: 'dpop_proof_invalid',
  header: 'dpop_proof_invalid',
  typ: 'dpop_proof_invalid',
  alg: 'dpop_alg_unsupported',
  jwk: 'dpop_key_invalid',
  signature: 'dpop_signature_invalid',
  claims: 'dpop_proof_invalid',
  htm: 'dpop_htm_mismatch',
  htu: 'dpop_htu_mismatch',
  iat: 'dpop_iat_window',
  ath: 'dpop_ath_mismatch',
  nonce: 'dpop_nonce_required',
  replayed: 'dpop_proof_replayed',
  store_unavailable: 'dpop_replay_unavailable',
};

function fail(check: DpopCheck, detail: string, more: { dpopNonce?: string; retryAfterSeconds?: number } = {}): DpopResult {
  const reason = REASON_OF[check];
  const error = new GuardError(reason, { detail: `dpop ${check}: ${detail}`, ...more });
  return { ok: false, check, reason, error };
}

/** A replay store that cannot answer is a short outage (the shared store's reconnects take about a second). */
const STORE_RETRY_AFTER_SECONDS = 1;

/** Throws on a policy that names `none`, a MAC or an unknown algorithm (the config schema already refuses them). */
export function checkDpopPolicy(policy: DpopPolicy): DpopPolicy {
  const bad = policy.algorithms.filter((alg) => !isAsymmetricJwsAlgorithm(alg));
  if (bad.length > 0 || policy.algorithms.length === 0) throw new RangeError(`dpop.algorithms: not asymmetric JWS algorithms: ${bad.join(', ') || '(empty)'}`);
  return policy;
}

/** base64url(SHA-256(access token)), the `ath` a proof must carry (RFC 9449 §4.2). */
export function accessTokenHash(accessToken: string): string {
  // The token is token68 (ASCII), so UTF-8 is the same bytes; one-shot: no Hash object per proof.
  return hash('sha256', accessToken, 'base64url');
}

/**
 * RFC 9449 §4.3, in order: one header line; size; compact JWS; `typ` `dpop+jwt`; `alg` allowed;
 * `jwk` public; signature; claims present and typed; `htm`; `htu`; `iat` window; `ath`; `nonce`
 * (when required); then `jti` unseen, recorded until the proof can no longer be accepted.
 * The binding (`cnf.jkt` = the returned `jkt`) is the binding step's, not this one's.
 */
export async function verifyDpopProof(input: DpopProofInput, deps: DpopDeps): Promise<DpopResult> {
  try {
    return await verify(input, deps);
  } catch {
    // jose and WebCrypto reject odd keys in many ways; none of them may escape as anything but a refusal.
    return fail('signature', 'verification failed');
  }
}

async function verify(input: DpopProofInput, deps: DpopDeps): Promise<DpopResult> {
  const lines = input.headerLines ?? [];
  if (lines.length === 0) return fail('header_missing', 'no DPoP header');
  if (lines.length > 1) return fail('header_repeated', `${lines.length} DPoP header lines`);
  const raw = lines[0] as string;
  if (raw.length > MAX_PROOF_BYTES) return fail('too_large', `${raw.length} bytes`);
  const proof = raw.replace(/^[ \t]+|[ \t]+$/g, '');
  if (!COMPACT_JWS.test(proof)) return fail('compact', 'not a compact JWS');

  const firstDot = proof.indexOf('.');
  const lastDot = proof.lastIndexOf('.');
  const headerPart = proof.slice(0, firstDot);
  const knownHeaders = deps.caches?.knownHeaders;
  let known = knownHeaders?.get(headerPart);
  const seenBefore = known !== undefined;
  if (known === undefined) {
    const checked = await checkHeader(headerPart, deps.policy.algorithms);
    if (!('key' in checked)) return fail(checked.check, checked.detail);
    known = checked;
  } else if (!algorithmAccepted(known.alg, deps.policy.algorithms)) return fail('alg', 'alg not accepted');
  // A payload that is not JSON fails before any crypto.
  const claims = jsonPart(proof.slice(firstDot + 1, lastDot));
  if (!isObject(claims)) return fail('claims', 'payload is not a JSON object');
  const { jkt } = known;
  let valid: boolean;
  try {
    const checked = verifyJwsSignature(known.alg, known.key, Buffer.from(proof.slice(0, lastDot), 'ascii'), Buffer.from(proof.slice(lastDot + 1), 'base64url'), deps.signatureThread ?? 'event-loop');
    // No await (and no microtask turn) for an answer given on the spot.
    valid = typeof checked === 'boolean' ? checked : await checked;
  } catch {
    valid = false;
  }
  if (!valid) return fail('signature', 'signature does not verify with the header jwk');
  // A header seen before is already in the cache (and get() made it the most recent).
  if (!seenBefore && headerPart.length <= MAX_KNOWN_HEADER_CHARS) knownHeaders?.set(headerPart, known);

  const { jti, htm, htu, iat, ath, nonce } = claims;
  if (typeof jti !== 'string' || jti.length === 0 || jti.length > MAX_JTI_LENGTH) return fail('claims', 'jti missing or not a string of 1..256');
  if (typeof htm !== 'string' || typeof htu !== 'string' || typeof iat !== 'number' || !Number.isFinite(iat)) return fail('claims', 'htm, htu or iat missing');
  if (nonce !== undefined && typeof nonce !== 'string') return fail('claims', 'nonce is not a string');

  if (htm !== input.method) return fail('htm', 'htm differs from the request method');
  // The same text normalises the same way: the usual case costs one normalisation.
  const normalizedHtu = deps.caches?.htu ?? normalizeHtu;
  const expected = normalizedHtu(input.htu);
  const presented = htu === input.htu ? expected : normalizedHtu(htu);
  if (expected === undefined || presented === undefined || presented !== expected) return fail('htu', 'htu differs from the request URI');
  if (deps.origins !== undefined && !deps.origins(originOf(expected))) return fail('htu', 'the request names a host or port cnfguard is not reached at (no publicOrigin)');

  const now = deps.now();
  if (iat < now - deps.policy.proofMaxAgeSeconds) return fail('iat', `iat ${Math.round(now - iat)} s old`);
  if (iat > now + deps.policy.clockSkewSeconds) return fail('iat', `iat ${Math.round(iat - now)} s ahead`);

  if (typeof ath !== 'string' || !thumbprintsEqual(accessTokenHash(input.accessToken), ath)) return fail('ath', 'ath missing or not the access token hash');

  if (deps.nonces !== undefined && (nonce === undefined || !deps.nonces.accepts(nonce))) {
    return fail('nonce', nonce === undefined ? 'no nonce' : 'nonce not current', { dpopNonce: deps.nonces.current() });
  }

  let fresh: boolean;
  try {
    // Acceptable while iat >= now - maxAge, so remembered until iat + maxAge (and a second more).
    fresh = await deps.replayStore.remember(replayKey(jkt, jti), Math.ceil(iat) + deps.policy.proofMaxAgeSeconds + 1);
  } catch (err) {
    const retryAfterSeconds = err instanceof GuardError ? (err.retryAfterSeconds ?? STORE_RETRY_AFTER_SECONDS) : STORE_RETRY_AFTER_SECONDS;
    return fail('store_unavailable', err instanceof Error ? err.message.slice(0, 100) : 'replay store failed', { retryAfterSeconds });
  }
  if (!fresh) return fail('replayed', 'jti already used');

  const fresher = deps.nonces?.freshFor(nonce);
  return fresher === undefined ? { ok: true, jkt } : { ok: true, jkt, nonce: fresher };
}
