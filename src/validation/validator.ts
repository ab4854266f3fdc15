/**
 * Step 6, validation: per route, the AS's word by introspection, a local JWT check (RFC 9068), or
 * a JWT check for JWTs of the configured issuer and introspection for everything else. Verified
 * JWTs are kept in a validated-answer cache (introspection/answer-cache.ts, the one introspection answers
 * use: by the hash of the token, until exp, capped by introspection.cache.maxTtlSeconds), so a
 * repeat costs no signature check. Composition clears that cache when a JWKS fetch drops a key
 * (compose/jwt.ts), so a token verified with a withdrawn key stops passing at once.
 */
import type { TokenInfo } from '../introspection/token-info.ts';
import { GuardError } from '../oauth/reasons.ts';
import type { LookupContext, TokenIntrospector } from '../introspection/cache.ts';
import { createAnswerCache, tokenCacheKey, type AnswerCache } from '../introspection/answer-cache.ts';
import type { JwtVerify } from './jwt.ts';
import { looksLikeJws } from './jwt.ts';

import type { ValidationMode } from './names.ts';
export { VALIDATION_MODES, type ValidationMode } from './names.ts';
export type ValidationSource = 'introspection' | 'jwt';

export interface ValidatedToken {
  info: TokenInfo;
  source: ValidationSource;
}

export interface TokenValidator {
  validate(token: string, route: { readonly validation: ValidationMode; readonly audience: string | undefined }, context?: LookupContext): Promise<ValidatedToken>;
  /** Validated JWTs cached (introspected tokens are the introspector's to count). */
  readonly size?: number;
}

export interface TokenValidatorOptions {
  introspector: TokenIntrospector;
  /**
   * Absent when no `jwt:` is configured; routes then must use introspection. `keysInUse`, called
   * when a cached verified JWT answers, lets the JWKS cache see its keys used (a fetch in the
   * background once they are older than `jwt.refreshSeconds`), since no signature is checked then.
   */
  jwt?: { verify: JwtVerify; issuer: string; keysInUse?: () => void } | undefined;
  /** Verified JWTs: the answer cache built in composition, else one made from `cache`. */
  answers?: AnswerCache | undefined;
  cache: { maxEntries: number; maxTtlSeconds: number };
  /** Milliseconds since the epoch. */
  now: () => number;
  /** One per validation: which source decided and how (`ok`, or the reason id). */
  onResult?: (source: ValidationSource, result: string) => void;
}

/** The unverified `iss` of a JWS-shaped token, or undefined: only to choose the validation path. */
function unverifiedIssuer(token: string): string | undefined {
  const payload = token.split('.')[1] ?? '';
  try {
    const value = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as unknown;
    const iss = value !== null && typeof value === 'object' ? (value as { iss?: unknown }).iss : undefined;
    return typeof iss === 'string' ? iss : undefined;
  } catch {
    return undefined;
  }
}

export function createTokenValidator(options: TokenValidatorOptions): TokenValidator {
  const { introspector, jwt, now } = options;
  // Only verified JWTs live here: without `jwt:` the cache would be 100 000 empty slots (lru-cache
  // allocates them up front: start-up time and idle memory for nothing).
  const cache = options.answers ?? (jwt !== undefined ? createAnswerCache({ ...options.cache, negativeTtlSeconds: 0, now }) : undefined);
  const report = options.onResult ?? (() => undefined);

  async function viaIntrospection(token: string, context: LookupContext | undefined): Promise<ValidatedToken> {
    try {
      const info = await introspector.lookup(token, context);
      report('introspection', info.active ? 'ok' : 'token_inactive');
      return { info, source: 'introspection' };
    } catch (err) {
      report('introspection', err instanceof GuardError ? err.reason : 'internal_error');
      throw err;
    }
  }

  async function viaJwt(token: string, audience: string | undefined, key = tokenCacheKey(token), cached = cache?.get(key)): Promise<ValidatedToken> {
    if (jwt === undefined) throw new GuardError('jwt_malformed', { detail: 'no jwt: configured' });
    try {
      let info = cached;
      if (info === undefined) {
        info = await jwt.verify(token);
        cache?.put(key, info);
      } else {
        jwt.keysInUse?.();
      }
      if (audience !== undefined && !info.aud.includes(audience)) throw new GuardError('jwt_audience_mismatch', { detail: 'aud lacks the route audience' });
      report('jwt', 'ok');
      return { info, source: 'jwt' };
    } catch (err) {
      report('jwt', err instanceof GuardError ? err.reason : 'internal_error');
      throw err;
    }
  }

  return {
    validate(token, route, context) {
      if (route.validation === 'introspection') return viaIntrospection(token, context);
      if (route.validation === 'jwt') return viaJwt(token, route.audience);
      // jwt-then-introspection: only a JWS claiming this issuer is checked locally, and then
      // refused when it fails; anything else is the AS's to judge. A JWT verified before is in
      // the cache, which answers before the token is parsed again.
      // A token without a dot is no JWS, so never in the JWT cache: it is not hashed for it (the
      // introspector hashes it for its own cache).
      if (jwt === undefined || !token.includes('.')) return viaIntrospection(token, context);
      const key = tokenCacheKey(token);
      const cached = cache?.get(key);
      if (cached !== undefined || (looksLikeJws(token) && unverifiedIssuer(token) === jwt.issuer)) return viaJwt(token, route.audience, key, cached);
      return viaIntrospection(token, context);
    },
    get size() {
      return cache?.size ?? 0;
    },
  };
}
