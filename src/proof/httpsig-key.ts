/**
 * The key an httpsig-bound token names (draft-richer-oauth-httpsig-03): `cnf.jwk`, a public JWK
 * whose `alg` is a fully specified JWS algorithm (RFC 9421 §3.3.7 maps it onto an RFC 9421
 * algorithm here), or `cnf.htsk`, `{alg: <RFC 9421 name>, pub: <base64url raw public key>}`
 * (SEC1 uncompressed point for ECDSA, 32 bytes for Ed25519). Exactly one of the two.
 *
 * Each key has an id, a base64url SHA-256 (for `jwk` its RFC 7638 thumbprint), that the binding
 * compares and the nonce replay key is scoped to.
 */
import { createHash, createPublicKey, type JsonWebKey, type KeyObject } from 'node:crypto';
import type { LRUCache } from 'lru-cache';
import { keyFitsAlgorithm, type SignatureAlgorithm } from './http-signature-base.ts';
import { jwkThumbprint } from './jwk-thumbprint.ts';

/** RFC 9421 §3.3.7: the JWS algorithms of a `cnf.jwk` and the RFC 9421 algorithm each verifies as. Never the polymorphic `EdDSA`. */
const JWS_TO_HTTPSIG: Readonly<Record<string, SignatureAlgorithm>> = { Ed25519: 'ed25519', ES256: 'ecdsa-p256-sha256', ES384: 'ecdsa-p384-sha384', PS512: 'rsa-pss-sha512' };

/** `cnf.htsk` algorithms and their raw key lengths (bytes). */
const HTSK_KEYS: Readonly<Partial<Record<SignatureAlgorithm, { length: number; jwk: (raw: Buffer) => Record<string, string> }>>> = {
  ed25519: { length: 32, jwk: (raw) => ({ kty: 'OKP', crv: 'Ed25519', x: raw.toString('base64url') }) },
  'ecdsa-p256-sha256': { length: 65, jwk: (raw) => ({ kty: 'EC', crv: 'P-256', x: raw.subarray(1, 33).toString('base64url'), y: raw.subarray(33).toString('base64url') }) },
  'ecdsa-p384-sha384': { length: 97, jwk: (raw) => ({ kty: 'EC', crv: 'P-384', x: raw.subarray(1, 49).toString('base64url'), y: raw.subarray(49).toString('base64url') }) },
};

/** The `cnf` members an httpsig key is named by. */
export const HTTPSIG_CNF_MEMBERS = ['jwk', 'htsk'] as const;

export interface HttpsigKey {
  readonly id: string;
  readonly algorithm: SignatureAlgorithm;
  readonly key: KeyObject;
}

/** Why a token's key cannot be used: it names none, names two, or names one badly. */
export type KeyProblem = 'none' | 'ambiguous' | 'invalid';

const isObject = (value: unknown): value is Readonly<Record<string, unknown>> => typeof value === 'object' && value !== null && !Array.isArray(value);
const BASE64URL = /^[A-Za-z0-9_-]+$/;

/**
 * Ids already worked out, by the member's value object: a cached token's `cnf` is the same object
 * on every request, so its id is hashed once. A memo of a pure function, keyed weakly: it holds
 * nothing a value's owner does not.
 */
const idsByValue = new WeakMap<object, string | null>();

/** The id of what a `cnf` member's value names (compared with a proven key's id); undefined when it names nothing usable. */
export function memberKeyId(member: string, value: unknown): string | undefined {
  if (!isObject(value)) return undefined;
  const known = idsByValue.get(value);
  if (known !== undefined) return known ?? undefined;
  let id: string | undefined;
  if (member === 'jwk') id = jwkThumbprint(value);
  else if (member === 'htsk' && typeof value.alg === 'string' && typeof value.pub === 'string') id = createHash('sha256').update(`htsk\n${value.alg}\n${value.pub}`).digest('base64url');
  idsByValue.set(value, id ?? null);
  return id;
}

function keyOfJwk(jwk: Readonly<Record<string, unknown>>): Omit<HttpsigKey, 'id'> | undefined {
  // Private members: a key that was never meant to travel.
  if (['d', 'p', 'q', 'dp', 'dq', 'qi', 'k'].some((member) => member in jwk)) return undefined;
  const algorithm = typeof jwk.alg === 'string' ? JWS_TO_HTTPSIG[jwk.alg] : undefined;
  if (algorithm === undefined) return undefined;
  const key = createPublicKey({ key: jwk as JsonWebKey, format: 'jwk' });
  return keyFitsAlgorithm(algorithm, key) ? { algorithm, key } : undefined;
}

function keyOfHtsk(htsk: Readonly<Record<string, unknown>>): Omit<HttpsigKey, 'id'> | undefined {
  const algorithm = htsk.alg as SignatureAlgorithm;
  const form = typeof htsk.alg === 'string' ? HTSK_KEYS[algorithm] : undefined;
  if (form === undefined || typeof htsk.pub !== 'string' || !BASE64URL.test(htsk.pub)) return undefined;
  const raw = Buffer.from(htsk.pub, 'base64url');
  if (raw.length !== form.length || (form.length !== 32 && raw[0] !== 0x04)) return undefined;
  const key = createPublicKey({ key: form.jwk(raw), format: 'jwk' });
  return keyFitsAlgorithm(algorithm, key) ? { algorithm, key } : undefined;
}

/**
 * The key a token's `cnf` names for httpsig, remembered in `cache` by its id (an import costs more
 * than a verification). A problem when the token names none, both `jwk` and `htsk`, or one that is
 * not a usable public key of a known algorithm.
 */
export function httpsigKeyOf(cnf: Readonly<Record<string, unknown>> | undefined, cache: LRUCache<string, HttpsigKey | false>, byValue?: WeakMap<object, HttpsigKey | false>): HttpsigKey | KeyProblem {
  const members = cnf === undefined ? [] : HTTPSIG_CNF_MEMBERS.filter((member) => Object.hasOwn(cnf, member));
  if (members.length === 0) return 'none';
  if (members.length > 1) return 'ambiguous';
  const member = members[0] as (typeof HTTPSIG_CNF_MEMBERS)[number];
  const value = cnf?.[member];
  if (!isObject(value)) return 'invalid';
  // The same value object as before (a cached token): no JSON, no lookup by text.
  const seen = byValue?.get(value);
  if (seen !== undefined) return seen === false ? 'invalid' : seen;
  const id = memberKeyId(member, value);
  if (id === undefined) return 'invalid';
  // The cache is keyed by the id and the member's exact JSON: one thumbprint, one alg.
  const cacheKey = `${member}:${id}:${JSON.stringify(value)}`;
  let known = cache.get(cacheKey);
  if (known === undefined) {
    let found: Omit<HttpsigKey, 'id'> | undefined;
    try {
      found = member === 'jwk' ? keyOfJwk(value) : keyOfHtsk(value);
    } catch {
      found = undefined;
    }
    known = found === undefined ? false : { id, ...found };
    if (cacheKey.length <= 4096) cache.set(cacheKey, known);
  }
  byValue?.set(value, known);
  return known === false ? 'invalid' : known;
}
