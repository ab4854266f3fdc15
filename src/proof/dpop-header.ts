/**
 * The protected header of a DPoP proof (RFC 9449 §4.3 steps 4-6): no `crit` or `b64` (RFC 7515
 * §4.1.11), `typ`, an accepted asymmetric `alg`, a public `jwk` that imports for it (jose), and
 * its RFC 7638 thumbprint.
 */
import { KeyObject } from 'node:crypto';
import type { JWK } from 'jose';
import { isAsymmetricJwsAlgorithm } from '../oauth/jws-algorithms.ts';
import { jose } from '../oauth/jose.ts';
import { jwkThumbprint } from './jwk-thumbprint.ts';

/** Shortest RSA modulus a proof key may have (RFC 7518 §3.3 and §3.5: 2048 bits or larger; FAPI 2.0 §5.4). */
export const MIN_RSA_BITS = 2048;
/** Members that make a JWK private (RFC 7518 §6.2.2, §6.3.2, §6.4; RFC 8037 §2). */
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'];
const PUBLIC_KEY_TYPES = new Set(['EC', 'RSA', 'OKP']);

/** A header that passed: what a proof signed under it is checked with. */
export interface KnownHeader {
  readonly alg: string;
  readonly jkt: string;
  readonly key: KeyObject;
}

/** Which header check refused it, and the log-only detail. */
export interface HeaderRefusal {
  readonly check: 'header' | 'typ' | 'alg' | 'jwk';
  readonly detail: string;
}

function refuse(check: HeaderRefusal['check'], detail: string): HeaderRefusal {
  return { check, detail };
}

async function importPublicKey(jwk: Record<string, unknown>, alg: string): Promise<KeyObject | undefined> {
  const imported = await jose().importJWK(jwk as JWK, alg);
  if (!(imported instanceof CryptoKey) || imported.type !== 'public') return undefined;
  return KeyObject.from(imported);
}

/** Whether a proof's `alg` is accepted under the configured list (EdDSA and Ed25519 are one algorithm for Ed25519 keys). */
export function algorithmAccepted(alg: string, configured: readonly string[]): boolean {
  if (!isAsymmetricJwsAlgorithm(alg)) return false;
  if (configured.includes(alg)) return true;
  return (alg === 'EdDSA' && configured.includes('Ed25519')) || (alg === 'Ed25519' && configured.includes('EdDSA'));
}

export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export function jsonPart(part: string): unknown {
  try {
    return JSON.parse(Buffer.from(part, 'base64url').toString('utf8')) as unknown;
  } catch {
    return undefined;
  }
}

/** The protected header's checks (`typ`, `alg`, a public `jwk`), its thumbprint and the imported key; or the refusal. */
export async function checkHeader(headerPart: string, algorithms: readonly string[]): Promise<KnownHeader | HeaderRefusal> {
  const header = jsonPart(headerPart);
  if (!isObject(header)) return refuse('header', 'protected header is not a JSON object');
  // RFC 7515 §4.1.11: a JWS naming critical extensions its recipient does not understand is
  // invalid, and no extension is understood here (a malformed or empty crit is invalid too).
  // RFC 7797's b64 would change the signing input: refused with or without crit.
  if (Object.hasOwn(header, 'crit')) return refuse('header', 'crit: no critical header extension is understood');
  if (Object.hasOwn(header, 'b64')) return refuse('header', 'b64: an unencoded payload is not a DPoP proof');
  const typ = typeof header.typ === 'string' ? header.typ.toLowerCase() : undefined;
  if (typ !== 'dpop+jwt' && typ !== 'application/dpop+jwt') return refuse('typ', 'typ is not dpop+jwt');
  const alg = header.alg;
  if (typeof alg !== 'string' || !algorithmAccepted(alg, algorithms)) return refuse('alg', 'alg not accepted');
  const jwk = header.jwk;
  if (!isObject(jwk) || typeof jwk.kty !== 'string' || !PUBLIC_KEY_TYPES.has(jwk.kty)) return refuse('jwk', 'jwk is not a public EC, RSA or OKP key');
  if (PRIVATE_MEMBERS.some((member) => Object.hasOwn(jwk, member))) return refuse('jwk', 'jwk has private key members');
  const jkt = jwkThumbprint(jwk);
  if (jkt === undefined) return refuse('jwk', 'jwk lacks its required members');
  let key: KeyObject | undefined;
  try {
    key = await importPublicKey(jwk, alg);
  } catch {
    return refuse('jwk', 'jwk does not import for alg');
  }
  if (key === undefined) return refuse('jwk', 'jwk is not a public key');
  const bits = key.asymmetricKeyDetails?.modulusLength;
  if ((key.asymmetricKeyType === 'rsa' || key.asymmetricKeyType === 'rsa-pss') && (bits === undefined || bits < MIN_RSA_BITS)) return refuse('jwk', `RSA key of ${bits ?? '?'} bits, under ${MIN_RSA_BITS}`);
  return { alg, jkt, key };
}

