/**
 * The token validator per route, composed: introspection (given), and local JWT access tokens
 * (RFC 9068) with the JWKS fetched through the AS's trust, when `jwt:` is configured.
 */
import type { Metrics } from '../admin/metrics.ts';
import type { LoadedConfig } from '../config/load.ts';
import { mapsClaims } from '../config/reload-table.ts';
import type { TokenIntrospector } from '../introspection/cache.ts';
import type { Logger } from '../log.ts';
import { traced, type TracingSlot } from '../observe/tracing.ts';
import { createAnswerCache } from '../introspection/answer-cache.ts';
import { createHttpJwksFetch, createJwksCache, createJwtVerifier, type FetchJwks } from '../validation/jwt.ts';
import { createTokenValidator, type TokenValidator } from '../validation/validator.ts';

export interface ValidationParts {
  validator: TokenValidator;
  /** The JWKS cache, refreshed at start (with `jwt:`). */
  jwks: ReturnType<typeof createJwksCache> | undefined;
  /** The JWKS HTTP client, closed at stop. */
  jwksHttp: ReturnType<typeof createHttpJwksFetch> | undefined;
}

export function buildValidator(config: LoadedConfig, io: { tokens: TokenIntrospector; metrics: Metrics; logger: Logger; now: () => number; fetchJwks: FetchJwks | undefined; tracing?: TracingSlot | undefined }): ValidationParts {
  const { settings } = config;
  const { metrics, logger, now } = io;
  const jwt = settings.jwt;
  const jwksHttp =
    jwt === undefined || io.fetchJwks !== undefined
      ? undefined
      : createHttpJwksFetch({ url: jwt.jwksUri, ca: config.introspection.ca, timeoutMs: jwt.timeoutMs ?? settings.introspection.timeoutMs, maxBytes: jwt.maxJwksBytes });
  const fetch = io.fetchJwks ?? jwksHttp?.fetch;
  const jwks =
    jwt === undefined || fetch === undefined
      ? undefined
      : createJwksCache({
          fetch: io.tracing === undefined ? fetch : traced(io.tracing, 'cnfguard.jwks', fetch),
          now,
          cooldownMs: jwt.refetchCooldownSeconds * 1000,
          onFetch: (ok, detail) => {
            metrics.jwksFetches.inc({ result: ok ? 'success' : 'failure' });
            metrics.lastSeen.record('jwks', ok, ok ? 'fetched' : 'fetch failed');
            if (!ok) logger.warn({ jwksUri: jwt.jwksUri, detail }, 'JWKS fetch failed; keeping the keys already held');
          },
        });
  const { maxEntries, maxTtlSeconds } = settings.introspection.cache;
  const validator = createTokenValidator({
    introspector: io.tokens,
    jwt:
      jwt === undefined || jwks === undefined
        ? undefined
        : { issuer: jwt.issuer, verify: createJwtVerifier({ issuer: jwt.issuer, algorithms: jwt.algorithms, jwks, now, clockSkewSeconds: jwt.clockSkewSeconds, keepClaims: mapsClaims(settings) }) },
    // The validated-answer cache of JWTs (introspection/answer-cache.ts), only with `jwt:`.
    answers: jwt === undefined ? undefined : createAnswerCache({ maxEntries, maxTtlSeconds, negativeTtlSeconds: 0, now }),
    cache: { maxEntries, maxTtlSeconds },
    now,
    onResult: (source, result) => metrics.tokenValidations.inc({ source, result }),
  });
  return { validator, jwks, jwksHttp };
}
