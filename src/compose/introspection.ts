/**
 * Token validation by introspection, composed: the RFC 7662 client, the circuit breaker, the
 * per-peer budget, the shared tier (with `sharedState`) and the local answer cache.
 */
import type { Metrics } from '../admin/metrics.ts';
import type { LoadedConfig } from '../config/load.ts';
import { mapsClaims } from '../config/reload-table.ts';
import { withCircuitBreaker } from '../introspection/breaker.ts';
import { createIntrospectionBudget } from '../introspection/budget.ts';
import { createCachedIntrospector, type TokenIntrospector } from '../introspection/cache.ts';
import { createIntrospectionClient, type Introspect, type IntrospectionClient } from '../introspection/client.ts';
import { explainIntrospectionFailure } from '../introspection/explain.ts';
import type { Logger } from '../log.ts';
import { createAnswerCache } from '../introspection/answer-cache.ts';
import type { KeyValueStore } from '../state/kv.ts';
import { createSharedTokenTier, withSharedTier } from '../introspection/shared-tier.ts';
import { traced, type TracingSlot } from '../observe/tracing.ts';
import { createSignedAnswerVerifier, type VerifySignedAnswer } from '../introspection/signed-answer.ts';
import type { JwksDirectory } from './jwks.ts';

/** `responseFormat: jwt` (RFC 9701): the verifier of signed answers, over the JWKS cache of its URI. */
function signedAnswersOf(config: LoadedConfig, jwks: JwksDirectory, now: () => number): VerifySignedAnswer | undefined {
  const { introspection, jwt } = config.settings;
  if (introspection.responseFormat !== 'jwt') return undefined;
  const uri = introspection.jwksUri ?? jwt?.jwksUri;
  if (uri === undefined || introspection.issuer === undefined) throw new Error('responseFormat jwt needs introspection.issuer and jwksUri (the schema checks both)');
  return createSignedAnswerVerifier({ issuer: introspection.issuer, clientId: introspection.clientId, algorithms: introspection.signingAlgorithms, jwks: jwks.cacheFor(uri), now });
}

export interface IntrospectionParts {
  /** The HTTP client; undefined when the tests replace it. */
  client: IntrospectionClient | undefined;
  tokens: TokenIntrospector;
}

/** Where and how the AS is called, as the config says: the client's settings shared by `run` and `check --probe`. */
export function asClientSettings(config: LoadedConfig) {
  const { introspection } = config.settings;
  return {
    url: introspection.url,
    clientId: introspection.clientId,
    clientSecret: config.introspection.clientSecret,
    authMethod: introspection.authMethod,
    ca: config.introspection.ca,
    cert: config.introspection.cert,
    key: config.introspection.key,
    timeoutMs: introspection.timeoutMs,
    maxAnswerBytes: introspection.maxAnswerBytes,
  };
}

export function buildIntrospection(config: LoadedConfig, io: { metrics: Metrics; logger: Logger; now: () => number; introspect: Introspect | undefined; store: KeyValueStore | undefined; jwks: JwksDirectory; tracing?: TracingSlot | undefined }): IntrospectionParts {
  const { settings } = config;
  const { metrics, logger, now, store } = io;
  const client =
    io.introspect === undefined
      ? createIntrospectionClient({
          ...asClientSettings(config),
          // Claims are kept per cached token only when a route maps some to headers (memory).
          keepClaims: mapsClaims(settings),
          onOutcome: (outcome, seconds) => metrics.observeIntrospection(outcome, seconds),
          onMisconfigured: (warning) => logger.warn(warning, "the authorization server refuses cnfguard's introspection calls: check introspection.url and the client credentials"),
          signedAnswers: signedAnswersOf(config, io.jwks, now),
          onUnverified: (warning) => logger.warn(warning, `introspection answer refused (responseFormat: jwt): ${warning.cause}`),
        })
      : undefined;
  const breaker = settings.introspection.circuitBreaker;
  const call = io.introspect ?? (client as IntrospectionClient).introspect;
  // With tracing: each call that reaches the AS is a child span of the request that caused it.
  const introspect = withCircuitBreaker(io.tracing === undefined ? call : traced(io.tracing, 'cnfguard.introspection', call), {
    failureThreshold: breaker.failureThreshold,
    openMs: breaker.openSeconds * 1000,
    now,
    onShortCircuit: () => metrics.introspectionRequests.inc({ outcome: 'circuit_open' }),
    onStateChange: (state) => {
      metrics.circuitOpen.set(state === 'closed' ? 0 : 1);
      const failure = state === 'open' ? client?.lastFailure() : undefined;
      if (failure === undefined || client === undefined) {
        logger.warn({ state }, `introspection circuit ${state}`);
        return;
      }
      const { cause, check } = explainIntrospectionFailure(failure);
      logger.warn({ state, url: client.shownUrl, cause, check, openSeconds: breaker.openSeconds }, `introspection circuit open: ${client.shownUrl} is failing (last: ${cause}); ${check}`);
    },
  });
  const budget = createIntrospectionBudget({
    ...settings.introspection.budget,
    now,
    onRefused: (scope) => metrics.introspectionRequests.inc({ outcome: scope === 'peer' ? 'over_peer_budget' : 'over_total_budget' }),
  });
  // Shared state (issue 14): the store is the token cache's second tier, consulted only on a
  // local miss, by wrapping what the cache calls then; the cache's hit path is unchanged.
  const firstTier =
    store === undefined
      ? introspect
      : withSharedTier(introspect, createSharedTokenTier(store, { keepClaims: mapsClaims(settings), now, onHit: () => metrics.cacheHits.inc({ tier: 'shared' }) }), { ...settings.introspection.cache, now });
  const tokens = createCachedIntrospector(firstTier, {
    ...settings.introspection.cache,
    answers: createAnswerCache({ ...settings.introspection.cache, now }),
    budget,
    staleIfErrorSeconds: settings.introspection.staleIfErrorSeconds,
    now,
    onHit: () => metrics.cacheHitTally.inc('local'), // per request at a hit: tallied (admin/counter-tally.ts)
    onMiss: () => metrics.cacheMisses.inc(),
    onStale: () => metrics.cacheStale.inc(),
  });
  return { client, tokens };
}
