/**
 * RFC 9701 signed introspection answers (`introspection.responseFormat: jwt`): the answer counts
 * only when it is served as `application/token-introspection+jwt` and is a JWS with `typ`
 * `token-introspection+jwt`, an allowed alg, a key from the AS's JWKS, `iss` =
 * `introspection.issuer`, `aud` containing `introspection.clientId`, and an `iat` at most 60 s old
 * and 5 s ahead (the injected clock). The decision then reads only its `token_introspection`
 * member. Anything else throws {@link UnverifiedAnswer}: the AS failed (503, fail closed).
 */
import type { createLocalJWKSet, JWTPayload } from 'jose';
import { jose, localKeySet, type JwksCache } from '../oauth/jose.ts';

export const SIGNED_ANSWER_TYPE = 'application/token-introspection+jwt';
/** How old a signed answer's `iat` may be, and how far ahead. */
export const MAX_AGE_SECONDS = 60;
export const MAX_AHEAD_SECONDS = 5;

/** A signed answer that does not verify; `message` names the cause (never the answer or the token). */
export class UnverifiedAnswer extends Error {
  constructor(cause: string) {
    super(cause);
    this.name = 'UnverifiedAnswer';
  }
}

export interface SignedAnswerOptions {
  issuer: string;
  /** `introspection.clientId`: the answer's `aud` must contain it. */
  clientId: string;
  algorithms: readonly string[];
  jwks: JwksCache;
  /** Milliseconds since the epoch. */
  now: () => number;
}

export type VerifySignedAnswer = (body: string, contentType: string | undefined) => Promise<Record<string, unknown>>;

/** `typ` per RFC 9701 §5, with or without the `application/` prefix (RFC 7515 §4.1.9), any case. */
function isAnswerType(typ: unknown): boolean {
  return typeof typ === 'string' && ['token-introspection+jwt', SIGNED_ANSWER_TYPE].includes(typ.toLowerCase());
}

function causeOf(err: unknown): string {
  const errors = jose().errors;
  if (err instanceof UnverifiedAnswer) return err.message;
  if (err instanceof errors.JWTClaimValidationFailed) return `claim ${err.claim} ${err.reason === 'missing' ? 'missing' : 'invalid'}${err.claim === 'iss' ? ' (not introspection.issuer)' : err.claim === 'aud' ? ' (does not contain introspection.clientId)' : ''}`;
  if (err instanceof errors.JOSEAlgNotAllowed) return 'alg not in introspection.signingAlgorithms';
  if (err instanceof errors.JWSSignatureVerificationFailed) return 'signature does not verify with the JWKS keys';
  if (err instanceof errors.JWKSNoMatchingKey || err instanceof errors.JWKSMultipleMatchingKeys) return 'no key of introspection.jwksUri matches kid and alg';
  if (err instanceof errors.JOSEError) return `not a valid signed answer (${err.code})`;
  return 'not a valid signed answer';
}

export function createSignedAnswerVerifier(options: SignedAnswerOptions): VerifySignedAnswer {
  const algorithms = [...options.algorithms];
  const getKeys = localKeySet(options.jwks);
  const attempt = async (jwt: string, get: ReturnType<typeof createLocalJWKSet>): Promise<JWTPayload> =>
    (await jose().jwtVerify(jwt, get, { issuer: options.issuer, audience: options.clientId, algorithms, currentDate: new Date(options.now()), requiredClaims: ['iat'] })).payload;

  async function verified(jwt: string): Promise<JWTPayload> {
    // Keys past their refresh age are fetched again in the background; this answer meets the keys held.
    void options.jwks.refreshIfStale();
    let get = getKeys();
    if (get === undefined) {
      await options.jwks.refresh();
      get = getKeys();
      if (get === undefined) throw new UnverifiedAnswer('the keys of introspection.jwksUri cannot be fetched');
    }
    try {
      return await attempt(jwt, get);
    } catch (err) {
      const errors = jose().errors;
      if (!(err instanceof errors.JWKSNoMatchingKey) && !(err instanceof errors.JWSSignatureVerificationFailed)) throw err;
      // An unknown kid (the AS may have rotated), or a key that does not verify (the AS may have
      // re-keyed under the same kid): refetch (within the cooldown) and, when the key set changed,
      // try once more.
      await options.jwks.refresh();
      const next = getKeys();
      if (next === undefined || next === get) throw err;
      return attempt(jwt, next);
    }
  }

  return async function verify(body, contentType) {
    try {
      const type = contentType?.split(';')[0]?.trim().toLowerCase();
      if (type !== SIGNED_ANSWER_TYPE) throw new UnverifiedAnswer(`content type ${type === undefined || type === '' ? '(none)' : type.slice(0, 60)}, not ${SIGNED_ANSWER_TYPE}`);
      const jwt = body.trim();
      if (jwt.split('.').length === 5) throw new UnverifiedAnswer('an encrypted answer (JWE) is not accepted');
      const header = jose().decodeProtectedHeader(jwt);
      if (!isAnswerType(header.typ)) throw new UnverifiedAnswer('typ is not token-introspection+jwt');
      if (typeof header.alg !== 'string' || !algorithms.includes(header.alg)) throw new UnverifiedAnswer('alg not in introspection.signingAlgorithms');
      if (header.crit !== undefined) throw new UnverifiedAnswer('crit header not supported');
      const payload = await verified(jwt);
      const iat = payload.iat as number;
      const nowSeconds = options.now() / 1000;
      if (nowSeconds - iat > MAX_AGE_SECONDS) throw new UnverifiedAnswer(`iat ${Math.floor(nowSeconds - iat)} s old (at most ${MAX_AGE_SECONDS})`);
      if (iat - nowSeconds > MAX_AHEAD_SECONDS) throw new UnverifiedAnswer(`iat ${Math.ceil(iat - nowSeconds)} s ahead (at most ${MAX_AHEAD_SECONDS})`);
      const answer = payload.token_introspection;
      if (answer === null || typeof answer !== 'object' || Array.isArray(answer)) throw new UnverifiedAnswer('no token_introspection object');
      return answer as Record<string, unknown>;
    } catch (err) {
      throw err instanceof UnverifiedAnswer ? err : new UnverifiedAnswer(causeOf(err));
    }
  };
}
