/**
 * Composition root: the only place that builds things. Everything stateful (logger, metrics
 * registry, token cache, introspection pool, clock, certificate reloader) is made here and passed
 * down. What a config reload may change lives in one `Runtime` object, swapped atomically.
 */
import cluster from 'node:cluster';
import type { AddressInfo } from 'node:net';
import { usableCpus, workerCount } from './cluster.ts';
import { createMetrics, type Metrics } from './admin/metrics.ts';
import { type LoadedConfig } from './config/load.ts';
import { mapsClaims } from './config/reload-table.ts';
import { withCircuitBreaker } from './introspection/breaker.ts';
import { explainIntrospectionFailure } from './introspection/explain.ts';
import { createIntrospectionBudget } from './introspection/budget.ts';
import { createIntrospectionClient, type Introspect } from './introspection/client.ts';
import { createLogger, type Logger } from './log.ts';
import { createCachedIntrospector, type TokenIntrospector } from './introspection/cache.ts';
import { buildRuntime } from './runtime.ts';
import { createHttpJwksFetch, createJwksCache, createJwtVerifier, type FetchJwks } from './validation/jwt.ts';
import { createTokenValidator, type TokenValidator } from './validation/validator.ts';
import { createAnswerCache } from './state/answer-cache.ts';
import { RedisKv } from './state/redis-kv.ts';
import { sealKv, sharedNonceKey } from './state/sealed-kv.ts';
import { createSharedTokenTier, withSharedTier } from './state/token-tier.ts';
import { createDpopCaches, signatureThreadFor, type SignatureThread } from './proof/dpop.ts';
import { createNonceSource } from './proof/nonce.ts';
import { createMemoryReplayStore, createSharedReplayStore } from './state/replay-store.ts';
import { primaryStateOfWorker } from './state/cluster-state.ts';
import { createLifecycle, type Lifecycle } from './serve/lifecycle.ts';
import { createListeners, type ServingState } from './serve/listeners.ts';

export interface AppDependencies {
  logger?: Logger;
  /** Milliseconds since the epoch. */
  now?: () => number;
  /** Replaces the HTTP introspection client (tests of the edges use the real one). */
  introspect?: Introspect;
  /** Replaces the HTTP JWKS fetch (jwt: configured). */
  fetchJwks?: FetchJwks;
  /** Process-level metrics (event loop, memory); off in tests that run many apps. */
  defaultMetrics?: boolean;
  /** Start the admin listener (cluster workers leave it to the primary). Default true. */
  admin?: boolean;
  /** Watch the TLS files for changes. Default true. */
  watchCertificates?: boolean;
  /**
   * Probe the AS once started, as `introspection.probeAtStartup` says (default true); false turns
   * it off whatever the config says (cluster workers but the first: one warning, not N).
   */
  probeIntrospection?: boolean;
  /** Where DPoP signatures are checked; default by {@link signatureThreadFor} over the usable CPUs and workers. */
  signatureThread?: SignatureThread;
}

export type { ReloadReport, StartedApp } from './serve/lifecycle.ts';

export interface App extends Lifecycle {
  readonly metrics: Metrics;
  readonly tokens: TokenIntrospector;
  readonly validator: TokenValidator;
  readonly logger: Logger;
}

/** Whether any route validates tokens by introspection (not `validation: jwt` everywhere). */
function usesIntrospection(settings: LoadedConfig['settings']): boolean {
  return settings.validation !== 'jwt' || settings.routes.some((route) => (route.validation ?? settings.validation) !== 'jwt');
}

export function createApp(config: LoadedConfig, deps: AppDependencies = {}): App {
  const { settings } = config;
  const logger = deps.logger ?? createLogger(settings.logLevel);
  const now = deps.now ?? Date.now;
  const metrics = createMetrics({ defaultMetrics: deps.defaultMetrics ?? true });

  const client =
    deps.introspect === undefined
      ? createIntrospectionClient({
          url: settings.introspection.url,
          clientId: settings.introspection.clientId,
          clientSecret: config.introspection.clientSecret,
          authMethod: settings.introspection.authMethod,
          ca: config.introspection.ca,
          cert: config.introspection.cert,
          key: config.introspection.key,
          timeoutMs: settings.introspection.timeoutMs,
          maxAnswerBytes: settings.introspection.maxAnswerBytes,
          // Claims are kept per cached token only when a route maps some to headers (memory).
          keepClaims: mapsClaims(settings),
          onOutcome: (outcome, seconds) => metrics.observeIntrospection(outcome, seconds),
          onMisconfigured: (warning) => logger.warn(warning, "the authorization server refuses cnfguard's introspection calls: check introspection.url and the client credentials"),
        })
      : undefined;
  const breaker = settings.introspection.circuitBreaker;
  const introspect = withCircuitBreaker(deps.introspect ?? (client as NonNullable<typeof client>).introspect, {
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
      logger.warn(
        { state, url: client.shownUrl, cause, check, openSeconds: breaker.openSeconds },
        `introspection circuit open: ${client.shownUrl} is failing (last: ${cause}); ${check}`,
      );
    },
  });
  const budget = createIntrospectionBudget({
    ...settings.introspection.budget,
    now,
    onRefused: (scope) => metrics.introspectionRequests.inc({ outcome: scope === 'peer' ? 'over_peer_budget' : 'over_total_budget' }),
  });
  // Shared state (issue 14): the store is the token cache's second tier, consulted only on a
  // local miss, by wrapping what the cache calls then; the cache's hit path is unchanged.
  const sharedSettings = settings.sharedState;
  let warnedAt = -Infinity;
  // One Redis KV under the sealed envelope: the token tier and the replay store sit on it.
  const store =
    sharedSettings === undefined || config.sharedState === undefined
      ? undefined
      : sealKv(
          new RedisKv({
            url: sharedSettings.url,
            ca: config.sharedState.ca,
            timeoutMs: Math.min(sharedSettings.timeoutMs, settings.introspection.timeoutMs),
            onUp: (up) => metrics.sharedStateUp.set(up ? 1 : 0),
            onError: (kind) => metrics.sharedStateErrors.inc({ kind }),
            warn: (message, detail) => {
              if (now() - warnedAt < 30_000) return;
              warnedAt = now();
              logger.warn(detail, message);
            },
          }),
          { secret: config.sharedState.secret, keyPrefix: sharedSettings.keyPrefix, onForged: () => metrics.sharedStateErrors.inc({ kind: 'forged' }) },
        );
  const firstTier =
    store === undefined
      ? introspect
      : withSharedTier(introspect, createSharedTokenTier(store, { keepClaims: mapsClaims(settings), now, onHit: () => metrics.cacheHits.inc({ tier: 'shared' }) }), {
          ...settings.introspection.cache,
          now,
        });
  // The validated-answer caches (state/answer-cache.ts), one per source; the JWT one only with `jwt:`.
  const introspectionAnswers = createAnswerCache({ ...settings.introspection.cache, now });
  const jwtAnswers = settings.jwt === undefined ? undefined : createAnswerCache({ maxEntries: settings.introspection.cache.maxEntries, maxTtlSeconds: settings.introspection.cache.maxTtlSeconds, negativeTtlSeconds: 0, now });
  const tokens = createCachedIntrospector(firstTier, {
    ...settings.introspection.cache,
    answers: introspectionAnswers,
    budget,
    staleIfErrorSeconds: settings.introspection.staleIfErrorSeconds,
    now,
    onHit: () => metrics.cacheHits.inc({ tier: 'local' }),
    onMiss: () => metrics.cacheMisses.inc(),
    onStale: () => metrics.cacheStale.inc(),
  });

  // Local JWT access tokens (RFC 9068): the JWKS through the AS's trust, fetched at start.
  const jwksHttp =
    settings.jwt === undefined || deps.fetchJwks !== undefined
      ? undefined
      : createHttpJwksFetch({ url: settings.jwt.jwksUri, ca: config.introspection.ca, timeoutMs: settings.jwt.timeoutMs ?? settings.introspection.timeoutMs, maxBytes: settings.jwt.maxJwksBytes });
  const jwks =
    settings.jwt === undefined
      ? undefined
      : createJwksCache({
          fetch: deps.fetchJwks ?? (jwksHttp as NonNullable<typeof jwksHttp>).fetch,
          now,
          cooldownMs: settings.jwt.refetchCooldownSeconds * 1000,
          onFetch: (ok, detail) => {
            metrics.jwksFetches.inc({ result: ok ? 'success' : 'failure' });
            if (!ok) logger.warn({ jwksUri: settings.jwt?.jwksUri, detail }, 'JWKS fetch failed; keeping the keys already held');
          },
        });
  const validator = createTokenValidator({
    introspector: tokens,
    jwt:
      settings.jwt === undefined || jwks === undefined
        ? undefined
        : { issuer: settings.jwt.issuer, verify: createJwtVerifier({ issuer: settings.jwt.issuer, algorithms: settings.jwt.algorithms, jwks, now, clockSkewSeconds: settings.jwt.clockSkewSeconds, keepClaims: mapsClaims(settings) }) },
    answers: jwtAnswers,
    cache: { maxEntries: settings.introspection.cache.maxEntries, maxTtlSeconds: settings.introspection.cache.maxTtlSeconds },
    now,
    onResult: (source, result) => metrics.tokenValidations.inc({ source, result }),
  });

  // DPoP (RFC 9449): one replay store and one nonce source for the process, kept across reloads.
  // With shared state both are the replicas' own: jtis in the store, nonces from the shared secret.
  // Cluster workers without it: the primary's store and nonce key (state/cluster-state.ts), so N workers act as one process.
  const viaPrimary = store === undefined ? primaryStateOfWorker(cluster.isWorker, { rotationSeconds: settings.dpop.nonceRotationSeconds, now: () => now() / 1000 }) : undefined;
  const localReplayStore = createMemoryReplayStore({ maxEntries: settings.dpop.replayStoreMaxEntries, now: () => now() / 1000 });
  const replayStore =
    store === undefined || sharedSettings === undefined
      ? (viaPrimary?.replayStore ?? localReplayStore)
      : createSharedReplayStore(store, { onUnavailable: sharedSettings.onUnavailable, fallback: localReplayStore, now, onFallback: () => metrics.sharedStateErrors.inc({ kind: 'local_fallback' }) });
  const nonces = viaPrimary?.nonces ?? createNonceSource({
    rotationSeconds: settings.dpop.nonceRotationSeconds,
    now: () => now() / 1000,
    ...(config.sharedState !== undefined && store !== undefined && { key: sharedNonceKey(config.sharedState.secret) }),
  });
  // Signature checks go to the threadpool only when there is a CPU no event loop (worker) uses.
  const signatureThread = deps.signatureThread ?? signatureThreadFor(usableCpus(), workerCount(settings.workers));
  // Without publicOrigin, a DPoP htu may name only what the server certificate names, on this port (proof/origins.ts).
  let serverCertificate = config.tls.cert;
  const served = { certificate: () => serverCertificate, port: () => (listeners.listener.server.address() as AddressInfo | null)?.port };
  // What DPoP checks remember between proofs, kept across reloads.
  const runtimeDeps = { validator, replayStore, nonces, now, signatureThread, served, dpopCaches: createDpopCaches() };
  const state: ServingState = { runtime: buildRuntime(settings, runtimeDeps), current: settings, ready: false, draining: false };
  const listeners = createListeners({
    config,
    state,
    logger,
    metrics,
    now,
    admin: deps.admin !== false,
    details: (): Record<string, string> => (store === undefined ? {} : { shared_state: store.up ? 'up' : 'down' }),
  });
  metrics.trackSizes({
    connections: () => listeners.connections.size,
    cacheEntries: () => ({ active: tokens.size, negative: tokens.negativeSize, jwt: validator.size ?? 0 }),
  });
  const lifecycle = createLifecycle({
    config,
    state,
    listeners,
    logger,
    metrics,
    runtimeDeps,
    probe: client !== undefined && settings.introspection.probeAtStartup && deps.probeIntrospection !== false && usesIntrospection(settings) ? client : undefined,
    beforeListen: async () => {
      // Not awaited past failure: an AS that is down at start only delays JWT validation (logged).
      await jwks?.refresh(true);
      await viaPrimary?.ready; // the nonce key, before the first request
    },
    afterListen: () => store?.connect(),
    teardown: async () => {
      await listeners.forwarder.close();
      await client?.close();
      await jwksHttp?.close();
      store?.close();
    },
    onServerCertificate: (pem) => (serverCertificate = pem),
    watchCertificates: deps.watchCertificates ?? true,
    startedFields: { dpopSignatures: signatureThread },
  });
  return { ...lifecycle, metrics, tokens, validator, logger };
}
