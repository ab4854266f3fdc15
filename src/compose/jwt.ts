/**
 * The token validator per route, composed: introspection (given), and local JWT access tokens
 * (RFC 9068) with the JWKS fetched through the AS's trust, when `jwt:` is configured.
 */
import type { Metrics } from '../admin/metrics.ts';
import type { LoadedConfig } from '../config/load.ts';
import { mapsClaims } from '../config/reload-table.ts';
import type { TokenIntrospector } from '../introspection/cache.ts';
import type { Logger } from '../log.ts';
import { createAnswerCache } from '../introspection/answer-cache.ts';
import { createJwtVerifier } from '../validation/jwt.ts';
import type { JwksDirectory } from './jwks.ts';
import { createTokenValidator, type TokenValidator } from '../validation/validator.ts';

export interface ValidationParts {
  validator: TokenValidator;
}

export function buildValidator(config: LoadedConfig, io: { tokens: TokenIntrospector; metrics: Metrics; logger: Logger; now: () => number; jwks: JwksDirectory }): ValidationParts {
  const { settings } = config;
  const { metrics, now } = io;
  const jwt = settings.jwt;
  // The JWKS cache of jwt.jwksUri: shared with signed introspection answers naming the same keys.
  const jwks = jwt === undefined ? undefined : io.jwks.cacheFor(jwt.jwksUri);
  const { maxEntries, maxTtlSeconds } = settings.introspection.cache;
  // The validated-answer cache of JWTs (introspection/answer-cache.ts), only with `jwt:`.
  const answers = jwt === undefined ? undefined : createAnswerCache({ maxEntries, maxTtlSeconds, negativeTtlSeconds: 0, now });
  // A key the AS withdrew (or re-keyed under its kid) vouches for nothing from the fetch that
  // dropped it: the JWTs it verified are verified again, against the keys now held.
  if (jwks !== undefined && answers !== undefined) jwks.onKeysDropped(() => answers.clear());
  const validator = createTokenValidator({
    introspector: io.tokens,
    jwt:
      jwt === undefined || jwks === undefined
        ? undefined
        : {
            issuer: jwt.issuer,
            verify: createJwtVerifier({ issuer: jwt.issuer, algorithms: jwt.algorithms, jwks, now, clockSkewSeconds: jwt.clockSkewSeconds, keepClaims: mapsClaims(settings) }),
            keysInUse: () => void jwks.refreshIfStale(),
          },
    answers,
    cache: { maxEntries, maxTtlSeconds },
    now,
    onResult: (source, result) => metrics.validationTally.inc(source, result), // per request: tallied (admin/counter-tally.ts)
  });
  return { validator };
}
