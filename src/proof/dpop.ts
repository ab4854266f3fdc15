/**
 * Step: the DPoP proof check (RFC 9449 §4.3 and §7.1), for requests with `Authorization: DPoP`.
 * Pure apart from what is injected (clock, replay store, nonce source). It never throws: every
 * outcome is `{ ok: true, jkt }` or a typed failure carrying the reason id the request is refused
 * with. The checks run in the order of {@link verifyDpopProof}; the replay store is asked last, so
 * a `jti` is recorded only for a proof that passed every other check.
 *
 * Neither the proof nor the access token appears in a failure, a detail or a log line.
 */
import { constants, createHash, hash, KeyObject, verify as verifySignature, type VerifyKeyObjectInput } from 'node:crypto';
import type { JWK } from 'jose';
import { LRUCache } from 'lru-cache';
import { GuardError, type ReasonId } from '../oauth/errors.ts';
import { jose } from '../validation/jose.ts';
import { thumbprintsEqual } from '../tls/certificates.ts';
import type { NonceSource } from './nonce.ts';
import { originOf, type OriginCheck } from './origins.ts';
import { replayKey, type ReplayStore } from '../state/replay-store.ts';

/** A proof longer than this is refused before it is parsed (the header line, in bytes). */
export const MAX_PROOF_BYTES = 4096;
/** Longest `jti` accepted (RFC 9449 §11.1: reject huge values; the store keeps a hash anyway). */
export const MAX_JTI_LENGTH = 256;

/** Shortest RSA modulus a proof key may have (RFC 7518 §3.3 and §3.5: 2048 bits or larger; FAPI 2.0 §5.4). */
export const MIN_RSA_BITS = 2048;
/** Asymmetric JWS algorithms only: never `none`, never a MAC (RFC 9449 §4.3 step 4). */
const ASYMMETRIC = new Set(['ES256', 'ES384', 'ES512', 'PS256', 'PS384', 'PS512', 'RS256', 'RS384', 'RS512', 'EdDSA', 'Ed25519']);
/** Members that make a JWK private (RFC 7518 §6.2.2, §6.3.2, §6.4; RFC 8037 §2). */
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'];
const PUBLIC_KEY_TYPES = new Set(['EC', 'RSA', 'OKP']);
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;

/** RFC 7638 §3.2: the required members of each key type, in lexicographic order. */
const THUMBPRINT_MEMBERS: Readonly<Record<string, readonly string[]>> = { EC: ['crv', 'kty', 'x', 'y'], RSA: ['e', 'kty', 'n'], OKP: ['crv', 'kty', 'x'] };

/**
 * RFC 7638 SHA-256 thumbprint, base64url: the required members, in order, as JSON without
 * whitespace. Undefined when a required member is missing or not a string.
 */
export function jwkThumbprint(jwk: Readonly<Record<string, unknown>>): string | undefined {
  const members = THUMBPRINT_MEMBERS[String(jwk.kty)];
  if (members === undefined) return undefined;
  const required: Record<string, string> = {};
  for (const member of members) {
    const value = jwk[member];
    if (typeof value !== 'string') return undefined;
    required[member] = value;
  }
  return createHash('sha256').update(JSON.stringify(required)).digest('base64url');
}

/** node:crypto verify parameters per JWS algorithm (RFC 7518 §3; RFC 8037 §3.1). ECDSA signatures are converted to DER here. */
const SIGNATURE: Readonly<Record<string, { hash: string | null; padding?: number; saltLength?: number; ecdsaBytes?: number }>> = {
  ES256: { hash: 'sha256', ecdsaBytes: 32 },
  ES384: { hash: 'sha384', ecdsaBytes: 48 },
  ES512: { hash: 'sha512', ecdsaBytes: 66 },
  PS256: { hash: 'sha256', padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 },
  PS384: { hash: 'sha384', padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 48 },
  PS512: { hash: 'sha512', padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 64 },
  RS256: { hash: 'sha256', padding: constants.RSA_PKCS1_PADDING },
  RS384: { hash: 'sha384', padding: constants.RSA_PKCS1_PADDING },
  RS512: { hash: 'sha512', padding: constants.RSA_PKCS1_PADDING },
  EdDSA: { hash: null },
  Ed25519: { hash: null },
};

/** One DER INTEGER (X.690 §8.3) of an unsigned big-endian value. */
function derInteger(bytes: Buffer): Buffer {
  let start = 0;
  while (start < bytes.length - 1 && bytes[start] === 0 && ((bytes[start + 1] as number) & 0x80) === 0) start++;
  const value = bytes.subarray(start);
  const pad = ((value[0] as number) & 0x80) !== 0 ? 1 : 0;
  const out = Buffer.allocUnsafe(2 + pad + value.length);
  out[0] = 0x02;
  out[1] = pad + value.length;
  if (pad === 1) out[2] = 0;
  value.copy(out, 2 + pad);
  return out;
}

/**
 * A JWS ECDSA signature (R || S, RFC 7518 §3.4) as the DER SEQUENCE node:crypto verifies by default:
 * verify() with a bare KeyObject and a DER signature cost 0.7x of the same call with
 * `dsaEncoding: 'ieee-p1363'` here (bench/dpop.ts). Undefined when the length is wrong.
 */
export function ecdsaSignatureToDer(signature: Buffer, bytes: number): Buffer | undefined {
  if (signature.length !== 2 * bytes) return undefined;
  const r = derInteger(signature.subarray(0, bytes));
  const s = derInteger(signature.subarray(bytes));
  const length = r.length + s.length;
  // P-521's two integers can pass 127 bytes: the long form of the length.
  const head = length < 0x80 ? Buffer.from([0x30, length]) : Buffer.from([0x30, 0x81, length]);
  return Buffer.concat([head, r, s]);
}

/**
 * Where a proof's signature is checked. `event-loop`: synchronously, the cheapest per proof when
 * the process has one CPU. `threadpool`: crypto.verify with a callback, on libuv's threadpool, so
 * that the 50-80 µs of an ES256 check run on a spare CPU while the event loop serves other
 * requests (it costs the event loop about 12 µs per proof instead; bench/dpop.ts).
 */
export type SignatureThread = 'event-loop' | 'threadpool';

/** `threadpool` when the process may use more CPUs than it runs event loops (workers), else `event-loop`. */
export function signatureThreadFor(usableCpus: number, eventLoops: number): SignatureThread {
  return usableCpus > eventLoops ? 'threadpool' : 'event-loop';
}

function checkSignature(where: SignatureThread, hashName: string | null, signed: Buffer, key: KeyObject | VerifyKeyObjectInput, signature: Buffer): boolean | Promise<boolean> {
  if (where === 'event-loop') return verifySignature(hashName, signed, key, signature);
  return new Promise((resolve) => verifySignature(hashName, signed, key, signature, (err, valid) => resolve(err === null && valid)));
}

function signatureValid(alg: string, key: KeyObject, signed: Buffer, signature: Buffer, where: SignatureThread): boolean | Promise<boolean> {
  const params = SIGNATURE[alg];
  if (params === undefined) return false;
  if (params.ecdsaBytes !== undefined) {
    const der = ecdsaSignatureToDer(signature, params.ecdsaBytes);
    return der !== undefined && checkSignature(where, params.hash, signed, key, der);
  }
  if (params.padding === undefined) return checkSignature(where, params.hash, signed, key, signature);
  return checkSignature(where, params.hash, signed, { key, padding: params.padding, ...(params.saltLength !== undefined && { saltLength: params.saltLength }) }, signature);
}

interface KnownHeader {
  readonly alg: string;
  readonly jkt: string;
  readonly key: KeyObject;
}

/** Protected headers longer than this are checked every time rather than remembered. */
const MAX_KNOWN_HEADER_CHARS = 1024;

/**
 * Protected headers already checked, by their exact base64url text. A client signs every proof
 * with one key, and so sends one header ({typ, alg, jwk}) again and again: its parse, `typ`, `jwk`
 * checks, RFC 7638 thumbprint and key import (checked against `alg` by jose) are done once. A
 * header is remembered only after a signature made with it verified. The `alg` is checked against
 * the policy on every proof, since routes and reloads may differ.
 */
const knownHeaders = new LRUCache<string, KnownHeader>({ max: 10_000 });

async function importPublicKey(jwk: Record<string, unknown>, alg: string): Promise<KeyObject | undefined> {
  const imported = await jose().importJWK(jwk as JWK, alg);
  if (!(imported instanceof CryptoKey) || imported.type !== 'public') return undefined;
  return KeyObject.from(imported);
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

/** Whether a proof's `alg` is accepted under the configured list (EdDSA and Ed25519 are one algorithm for Ed25519 keys). */
export function algorithmAccepted(alg: string, configured: readonly string[]): boolean {
  if (!ASYMMETRIC.has(alg)) return false;
  if (configured.includes(alg)) return true;
  return (alg === 'EdDSA' && configured.includes('Ed25519')) || (alg === 'Ed25519' && configured.includes('EdDSA'));
}

/** Throws on a policy that names `none`, a MAC or an unknown algorithm (the config schema already refuses them). */
export function checkDpopPolicy(policy: DpopPolicy): DpopPolicy {
  const bad = policy.algorithms.filter((alg) => !ASYMMETRIC.has(alg));
  if (bad.length > 0 || policy.algorithms.length === 0) throw new RangeError(`dpop.algorithms: not asymmetric JWS algorithms: ${bad.join(', ') || '(empty)'}`);
  return policy;
}

const UNRESERVED = /[A-Za-z0-9\-._~]/;
// eslint-disable-next-line no-control-regex -- control characters are what it finds
const CONTROL_OR_SPACE = /[\u0000-\u0020\u007f\s]/;

/**
 * RFC 3986 §6.2.2 syntax-based normalisation of an http(s) URI, without query and fragment:
 * scheme and host lower case, default port dropped, percent-encodings upper case and decoded when
 * they encode an unreserved character, dot segments removed, empty path as `/`. Undefined when
 * the text is not an absolute http(s) URI.
 */
export function normalizeHtu(uri: string): string | undefined {
  // Whitespace and control characters (URL would silently strip some of them).
  if (uri.length > 8192 || CONTROL_OR_SPACE.test(uri)) return undefined;
  // Decode encoded unreserved characters first, so that `%2E%2E` is a dot segment as RFC 3986
  // §6.2.2 orders it; upper-case the rest.
  const text = uri.replace(/%([0-9A-Fa-f]{2})/g, (_match, hex: string) => {
    const char = String.fromCharCode(Number.parseInt(hex, 16));
    return UNRESERVED.test(char) ? char : `%${hex.toUpperCase()}`;
  });
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return undefined;
  }
  if ((url.protocol !== 'https:' && url.protocol !== 'http:') || url.username !== '' || url.password !== '') return undefined;
  return `${url.protocol}//${url.host}${url.pathname}`;
}

/**
 * {@link normalizeHtu}, remembered for the URIs of the last requests: a client calls the same few
 * URIs again and again, and the URL parse is most of the cost. Long URIs are not kept.
 */
const normalizedHtus = new LRUCache<string, string | false>({ max: 1000 });
function normalizedHtu(uri: string): string | undefined {
  let normalized = normalizedHtus.get(uri);
  if (normalized === undefined) {
    normalized = normalizeHtu(uri) ?? false;
    if (uri.length <= 1024) normalizedHtus.set(uri, normalized);
  }
  return normalized === false ? undefined : normalized;
}

/**
 * The `htu` a request must carry: the route's `publicOrigin` (RFC 9449 §4.3 wants the URI the
 * client used, not the upstream's), else `https://<Host>`, followed by the request path.
 */
export function expectedHtu(publicOrigin: string | undefined, host: string, path: string): string {
  const origin = publicOrigin ?? `https://${host}`;
  const cut = path.search(/[?#]/);
  return `${origin}${cut === -1 ? path : path.slice(0, cut)}`;
}

/** base64url(SHA-256(access token)), the `ath` a proof must carry (RFC 9449 §4.2). */
export function accessTokenHash(accessToken: string): string {
  // The token is token68 (ASCII), so UTF-8 is the same bytes; one-shot: no Hash object per proof.
  return hash('sha256', accessToken, 'base64url');
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function jsonPart(part: string): unknown {
  try {
    return JSON.parse(Buffer.from(part, 'base64url').toString('utf8')) as unknown;
  } catch {
    return undefined;
  }
}

/** The protected header's checks (`typ`, `alg`, a public `jwk`), its thumbprint and the imported key; or the refusal. */
async function checkHeader(headerPart: string, policy: DpopPolicy): Promise<KnownHeader | DpopResult> {
  const header = jsonPart(headerPart);
  if (!isObject(header)) return fail('header', 'protected header is not a JSON object');
  const typ = typeof header.typ === 'string' ? header.typ.toLowerCase() : undefined;
  if (typ !== 'dpop+jwt' && typ !== 'application/dpop+jwt') return fail('typ', 'typ is not dpop+jwt');
  const alg = header.alg;
  if (typeof alg !== 'string' || !algorithmAccepted(alg, policy.algorithms)) return fail('alg', 'alg not accepted');
  const jwk = header.jwk;
  if (!isObject(jwk) || typeof jwk.kty !== 'string' || !PUBLIC_KEY_TYPES.has(jwk.kty)) return fail('jwk', 'jwk is not a public EC, RSA or OKP key');
  if (PRIVATE_MEMBERS.some((member) => Object.hasOwn(jwk, member))) return fail('jwk', 'jwk has private key members');
  const jkt = jwkThumbprint(jwk);
  if (jkt === undefined) return fail('jwk', 'jwk lacks its required members');
  let key: KeyObject | undefined;
  try {
    key = await importPublicKey(jwk, alg);
  } catch {
    return fail('jwk', 'jwk does not import for alg');
  }
  if (key === undefined) return fail('jwk', 'jwk is not a public key');
  const bits = key.asymmetricKeyDetails?.modulusLength;
  if ((key.asymmetricKeyType === 'rsa' || key.asymmetricKeyType === 'rsa-pss') && (bits === undefined || bits < MIN_RSA_BITS)) return fail('jwk', `RSA key of ${bits ?? '?'} bits, under ${MIN_RSA_BITS}`);
  return { alg, jkt, key };
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
  let known = knownHeaders.get(headerPart);
  const seenBefore = known !== undefined;
  if (known === undefined) {
    const checked = await checkHeader(headerPart, deps.policy);
    if (!('key' in checked)) return checked;
    known = checked;
  } else if (!algorithmAccepted(known.alg, deps.policy.algorithms)) return fail('alg', 'alg not accepted');
  // A payload that is not JSON fails before any crypto.
  const claims = jsonPart(proof.slice(firstDot + 1, lastDot));
  if (!isObject(claims)) return fail('claims', 'payload is not a JSON object');
  const { jkt } = known;
  let valid: boolean;
  try {
    const checked = signatureValid(known.alg, known.key, Buffer.from(proof.slice(0, lastDot), 'ascii'), Buffer.from(proof.slice(lastDot + 1), 'base64url'), deps.signatureThread ?? 'event-loop');
    // No await (and no microtask turn) for an answer given on the spot.
    valid = typeof checked === 'boolean' ? checked : await checked;
  } catch {
    valid = false;
  }
  if (!valid) return fail('signature', 'signature does not verify with the header jwk');
  // A header seen before is already in the cache (and get() made it the most recent).
  if (!seenBefore && headerPart.length <= MAX_KNOWN_HEADER_CHARS) knownHeaders.set(headerPart, known);

  const { jti, htm, htu, iat, ath, nonce } = claims;
  if (typeof jti !== 'string' || jti.length === 0 || jti.length > MAX_JTI_LENGTH) return fail('claims', 'jti missing or not a string of 1..256');
  if (typeof htm !== 'string' || typeof htu !== 'string' || typeof iat !== 'number' || !Number.isFinite(iat)) return fail('claims', 'htm, htu or iat missing');
  if (nonce !== undefined && typeof nonce !== 'string') return fail('claims', 'nonce is not a string');

  if (htm !== input.method) return fail('htm', 'htm differs from the request method');
  // The same text normalises the same way: the usual case costs one normalisation.
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
