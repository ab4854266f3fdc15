/**
 * The assertion signing key: read from `assertion.keyFile` (PEM), checked against
 * `assertion.algorithm` (ES256: P-256; EdDSA: Ed25519; PS256/RS256: RSA of at least 2048 bits),
 * named by its RFC 7638 thumbprint (the `kid`), and the key ring that publishes it: the current key
 * and, after a change (SIGHUP), each previous key for one assertion lifetime, so that assertions
 * signed just before the change still verify.
 */
import { constants, createPrivateKey, createPublicKey, sign, type KeyObject } from 'node:crypto';
import { jwkThumbprint } from '../proof/jwk-thumbprint.ts';

export type AssertionAlgorithm = 'ES256' | 'EdDSA' | 'PS256' | 'RS256';

export interface AssertionKey {
  readonly algorithm: AssertionAlgorithm;
  /** RFC 7638 SHA-256 thumbprint of the public key. */
  readonly kid: string;
  /** The public JWK as published (kty and its members, kid, alg, use). */
  readonly publicJwk: Readonly<Record<string, unknown>>;
  /** JWS signature of `data` (the signing input), base64url. */
  sign(data: string): string;
}

/** `an ed25519`, `a dsa`: the key type with its article. */
const withArticle = (type: string | undefined): string => `${/^[aeiou]/i.test(type ?? '') ? 'an' : 'a'} ${type}`;

/** Why a key does not fit an algorithm, or undefined when it does. */
function mismatch(key: KeyObject, algorithm: AssertionAlgorithm): string | undefined {
  const type = key.asymmetricKeyType;
  const details = key.asymmetricKeyDetails ?? {};
  if (algorithm === 'ES256') return type === 'ec' && details.namedCurve === 'prime256v1' ? undefined : `ES256 needs an EC P-256 key, the file holds ${type === 'ec' ? `an EC ${details.namedCurve} key` : `${withArticle(type)} key`}`;
  if (algorithm === 'EdDSA') return type === 'ed25519' ? undefined : `EdDSA needs an Ed25519 key, the file holds ${withArticle(type)} key`;
  if (type !== 'rsa') return `${algorithm} needs an RSA key, the file holds ${withArticle(type)} key`;
  return (details.modulusLength ?? 0) >= 2048 ? undefined : `${algorithm} needs an RSA key of at least 2048 bits, the file's has ${details.modulusLength}`;
}

/** Reads a PEM private key for `algorithm`; throws an Error whose message names the problem (never the key). */
export function assertionKeyFrom(pem: string, algorithm: AssertionAlgorithm): AssertionKey {
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(pem);
  } catch {
    throw new Error('not a PEM private key');
  }
  const problem = mismatch(privateKey, algorithm);
  if (problem !== undefined) throw new Error(problem);
  const jwk = createPublicKey(privateKey).export({ format: 'jwk' }) as Record<string, unknown>;
  const kid = jwkThumbprint(jwk) as string;
  const hash = algorithm === 'EdDSA' ? null : 'sha256';
  const options =
    algorithm === 'ES256'
      ? { key: privateKey, dsaEncoding: 'ieee-p1363' as const }
      : algorithm === 'PS256'
        ? { key: privateKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }
        : privateKey;
  return Object.freeze({
    algorithm,
    kid,
    publicJwk: Object.freeze({ ...jwk, kid, alg: algorithm, use: 'sig' }),
    sign: (data: string) => sign(hash, Buffer.from(data), options).toString('base64url'),
  });
}

export interface AssertionKeyRing {
  /** The key that signs now; undefined while `assertion` is not configured. */
  readonly current: AssertionKey | undefined;
  /**
   * Makes `key` the current key. A different previous key stays published until `lifetimeSeconds`
   * from now (milliseconds clock).
   */
  use(key: AssertionKey | undefined, lifetimeSeconds: number): void;
  /** The JWKS document (JSON): the current key, then the previous ones still within their lifetime. */
  jwks(): string;
}

export function createAssertionKeyRing(now: () => number): AssertionKeyRing {
  let current: AssertionKey | undefined;
  let retired: { key: AssertionKey; until: number }[] = [];
  let published: { at: number; body: string } | undefined;
  return {
    get current() {
      return current;
    },
    use(key, lifetimeSeconds) {
      if (key?.kid === current?.kid) return;
      if (current !== undefined) retired = [{ key: current, until: now() + lifetimeSeconds * 1000 }, ...retired.filter((r) => r.key.kid !== key?.kid)];
      current = key;
      published = undefined;
    },
    jwks() {
      const t = now();
      const live = retired.filter((r) => r.until > t);
      if (live.length !== retired.length) {
        retired = live;
        published = undefined;
      }
      published ??= { at: t, body: JSON.stringify({ keys: [...(current === undefined ? [] : [current.publicJwk]), ...retired.map((r) => r.key.publicJwk)] }) };
      return published.body;
    },
  };
}
