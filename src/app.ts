/**
 * Composition root: the only place that builds things. Everything stateful (logger, metrics
 * registry, token cache, introspection pool, clock, certificate reloader) is made here and passed
 * down. What a config reload may change lives in one `Runtime` object, swapped atomically.
 */
import cluster from 'node:cluster';
import { once } from 'node:events';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { createAdminServer } from './admin/server.ts';
import { createUpstreamCheck } from './admin/upstream-check.ts';
import { usableCpus, workerCount } from './cluster.ts';
import { createDecisionApi } from './edge/decision-api.ts';
import { listen } from './listen.ts';
import { createMetrics, type Metrics } from './admin/metrics.ts';
import { ConfigError, loadConfigFile, type LoadedConfig } from './config/load.ts';
import { mapsClaims, reconcileReload } from './config/reload-table.ts';
import { withCircuitBreaker } from './introspection/breaker.ts';
import { explainIntrospectionFailure } from './introspection/explain.ts';
import { createIntrospectionBudget } from './introspection/budget.ts';
import { createIntrospectionClient, type Introspect } from './introspection/client.ts';
import { createLogger, type Logger } from './log.ts';
import { createCertificateSource } from './pipeline/client-cert.ts';
import { createCachedIntrospector, type TokenIntrospector } from './introspection/cache.ts';
import { createAccessLog } from './observe/access-log.ts';
import { createBodyBudget } from './proxy/body.ts';
import { guardConnections, type ConnectionTracker } from './proxy/connection-errors.ts';
import { createForwarder } from './proxy/forward.ts';
import { createProxyEdge } from './edge/proxy.ts';
import { createUpgradeEdge } from './edge/upgrade.ts';
import { buildRuntime } from './runtime.ts';
import { createHttpJwksFetch, createJwksCache, createJwtVerifier, type FetchJwks } from './validation/jwt.ts';
import { createTokenValidator, type TokenValidator } from './validation/validator.ts';
import { createCertificateReloader, notAfterSeconds, type ReloadResult } from './tls/reloader.ts';
import { applyLiveLimits, createTlsServer } from './tls/server.ts';
import { createAnswerCache } from './state/answer-cache.ts';
import { RedisKv } from './state/redis-kv.ts';
import { sealKv, sharedNonceKey } from './state/sealed-kv.ts';
import { createSharedTokenTier, withSharedTier } from './state/token-tier.ts';
import { signatureThreadFor, type SignatureThread } from './proof/dpop.ts';
import { createNonceSource } from './proof/nonce.ts';
import { createMemoryReplayStore, createSharedReplayStore } from './state/replay-store.ts';
import { primaryStateOfWorker } from './state/cluster-state.ts';
import { NODE_VERSION, VERSION } from './version.ts';

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

export interface StartedApp {
  /** https://host:port of the proxy listener. */
  url: string;
  port: number;
  adminUrl: string | undefined;
  adminPort: number | undefined;
  /** http://host:port of the decision API, when `decisionApi` is set. */
  decisionUrl?: string | undefined;
  decisionPort?: number | undefined;
}

export interface ReloadReport {
  config: 'applied' | 'rejected' | 'not-a-file';
  /** Keys (dotted paths) that changed but only take effect after a restart: see config/reload-table.ts. */
  restartRequired: string[];
  certificates: ReloadResult;
}

export interface App {
  start(): Promise<StartedApp>;
  /** Drains: readyz 503 at once, no new connections, in-flight requests get `graceMs`, then the rest is closed. */
  stop(graceMs?: number): Promise<void>;
  /** Re-reads the config file and the certificates; a bad file keeps what runs. */
  reload(): Promise<ReloadReport>;
  readonly metrics: Metrics;
  readonly tokens: TokenIntrospector;
  readonly validator: TokenValidator;
  readonly logger: Logger;
}

/**
 * Stops accepting, closes idle connections, gives in-flight requests `graceMs`, then ends every
 * connection left, including any still in its TLS handshake (Node's own tracking omits those).
 */
async function close(server: Server, graceMs: number, connections?: ConnectionTracker): Promise<void> {
  if (!server.listening) return;
  const closed = once(server, 'close');
  server.close();
  server.closeIdleConnections();
  connections?.destroyHandshaking();
  const timer = setTimeout(() => {
    server.closeAllConnections();
    connections?.destroyAll();
  }, graceMs);
  await closed;
  clearTimeout(timer);
}

/** Whether any route validates tokens by introspection (not `validation: jwt` everywhere). */
function usesIntrospection(settings: LoadedConfig['settings']): boolean {
  return settings.validation !== 'jwt' || settings.routes.some((route) => (route.validation ?? settings.validation) !== 'jwt');
}

function urlHost(host: string): string {
  const shown = host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '::1' : host;
  return shown.includes(':') ? `[${shown}]` : shown;
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
  const served = { certificate: () => serverCertificate, port: () => (listener.server.address() as AddressInfo | null)?.port };
  const runtimeDeps = { validator, replayStore, nonces, now, signatureThread, served };
  let runtime = buildRuntime(settings, runtimeDeps);
  /** The settings in force: those started with, then each reload's live keys. */
  let current = settings;
  let ready = false;
  let draining = false;
  const upgraded = new Set<Duplex>();

  const forwarder = createForwarder();
  const certificateSource = createCertificateSource({ trustedProxies: settings.trustedProxies, clientCa: config.tls.clientCa, now });
  const accessLog = createAccessLog(logger, metrics);
  const edge = { runtime: () => runtime, forwarder, logger, accessLog, certificates: certificateSource, draining: () => draining };
  const proxyEdge = createProxyEdge({ ...edge, metrics, bodyBudget: createBodyBudget(settings.limits.bufferedBodyBytes), requestTimeoutMs: () => current.limits.requestTimeoutMs });
  const listener = createTlsServer(config.tls, settings.limits, proxyEdge, settings.listen.http2 ? { onRequest: proxyEdge } : undefined);
  const { server } = listener;
  server.on(
    'upgrade',
    createUpgradeEdge({
      ...edge,
      onUpgraded: (socket) => {
        upgraded.add(socket);
        socket.once('close', () => upgraded.delete(socket));
      },
    }),
  );
  const connections = guardConnections(server, { logger, accessLog, realm: () => runtime.realm });
  metrics.trackSizes({
    connections: () => connections.size,
    cacheEntries: () => ({ active: tokens.size, negative: tokens.negativeSize, jwt: validator.size ?? 0 }),
  });
  // Decision API (issue 16): a second edge into the same runtime, certificates and access log.
  const decision = settings.decisionApi === undefined ? undefined : createDecisionApi({ runtime: () => runtime, certificates: certificateSource, accessLog, logger }, settings.limits);
  const admin =
    deps.admin === false
      ? undefined
      : createAdminServer(metrics.registry, {
          ready: () => ready,
          details: (): Record<string, string> => (store === undefined ? {} : { shared_state: store.up ? 'up' : 'down' }),
          upstream: createUpstreamCheck({ upstream: () => current.upstream, ...settings.admin.upstreamCheck }),
        });

  metrics.certificateNotAfter.set(notAfterSeconds(config.tls));
  let certificates: ReturnType<typeof createCertificateReloader> | undefined;

  async function teardown(): Promise<void> {
    certificates?.close();
    await forwarder.close();
    await client?.close();
    await jwksHttp?.close();
    store?.close();
  }

  return {
    metrics,
    tokens,
    validator,
    logger,
    async start() {
      try {
        // Not awaited past failure: an AS that is down at start only delays JWT validation (logged).
        await jwks?.refresh(true);
        await viaPrimary?.ready; // the nonce key, before the first request
        const main = await listen(server, settings.listen.host, settings.listen.port, (err) => logger.error({ err }, 'proxy listener error'), { name: 'the proxy listener', path: 'listen' });
        const decisionAddress =
          decision === undefined || settings.decisionApi === undefined
            ? undefined
            : await listen(decision, settings.decisionApi.host, settings.decisionApi.port, (err) => logger.error({ err }, 'decision API listener error'), { name: 'the decision API', path: 'decisionApi' });
        const adminAddress =
          admin === undefined ? undefined : await listen(admin, settings.admin.host, settings.admin.port, (err) => logger.error({ err }, 'admin listener error'), { name: 'the admin listener', path: 'admin' });
        certificates = createCertificateReloader({
          server,
          files: settings.tls,
          source: config.source,
          initial: config.tls,
          logger,
          watch: deps.watchCertificates ?? true,
          onResult: (result, material) => {
            metrics.certificateReloads.inc({ result });
            metrics.certificateNotAfter.set(notAfterSeconds(material));
            if (result === 'success') {
              certificateSource.updateClientCa(material.clientCa);
              serverCertificate = material.cert;
            }
          },
        });
        store?.connect();
        ready = true;
        const started: StartedApp = {
          url: `https://${urlHost(settings.listen.host)}:${main.port}`,
          port: main.port,
          adminUrl: adminAddress === undefined ? undefined : `http://${urlHost(settings.admin.host)}:${adminAddress.port}`,
          adminPort: adminAddress?.port,
          decisionUrl: decisionAddress === undefined || settings.decisionApi === undefined ? undefined : `http://${urlHost(settings.decisionApi.host)}:${decisionAddress.port}`,
          decisionPort: decisionAddress?.port,
        };
        logger.info({ version: VERSION, node: NODE_VERSION, listen: started.url, admin: started.adminUrl, config: config.source, dpopSignatures: signatureThread }, 'cnfguard started');
        logger.flush(); // what supervisors and people wait for: not held in the log batch
        if (client !== undefined && settings.introspection.probeAtStartup && deps.probeIntrospection !== false && usesIntrospection(settings)) {
          // Not awaited: serving does not wait for the AS; the warning comes when the answer does.
          void client.probe().then((result) => {
            if (!ready) return; // stopped meanwhile: the answer no longer matters
            if (result.ok) logger.info({ url: client.shownUrl, ms: Math.round(result.ms) }, 'introspection endpoint answers');
            else logger.warn({ url: result.url, cause: result.cause, check: result.check }, `introspection probe failed: ${result.url}: ${result.cause}; ${result.check}`);
          });
        }
        return started;
      } catch (err) {
        // Nothing half-started: whatever did come up goes down again.
        await Promise.all([close(server, 0), admin === undefined ? undefined : close(admin, 0), decision === undefined ? undefined : close(decision, 0)]);
        await teardown();
        throw err;
      }
    },
    async stop(graceMs = current.shutdownGraceSeconds * 1000) {
      ready = false;
      draining = true;
      logger.info({ graceMs, upgraded: upgraded.size }, 'draining');
      logger.flush();
      const websocketDeadline = setTimeout(() => {
        for (const socket of upgraded) socket.destroy();
      }, graceMs);
      listener.closeHttp2Sessions();
      await close(server, graceMs, connections);
      clearTimeout(websocketDeadline);
      if (decision !== undefined) await close(decision, graceMs);
      if (admin !== undefined) await close(admin, 0);
      await teardown();
      logger.info('cnfguard stopped');
      logger.flush();
    },
    async reload() {
      const certificatesResult = certificates?.reload() ?? 'unchanged';
      if (config.file === undefined) return { config: 'not-a-file', restartRequired: [], certificates: certificatesResult };
      let next: LoadedConfig;
      try {
        next = loadConfigFile(config.file);
      } catch (err) {
        const problems = err instanceof ConfigError ? err.problems : [{ path: '', message: (err as Error).message }];
        logger.error({ config: config.source, problems }, 'config reload rejected; keeping the running config');
        metrics.configReloads.inc({ result: 'rejected' });
        return { config: 'rejected', restartRequired: [], certificates: certificatesResult };
      }
      // Compared with what started: restart keys keep their started values until a restart.
      const { effective, restartRequired } = reconcileReload(settings, next.settings);
      // A rewritten secret file with unchanged settings also needs a restart (the connection is kept).
      if (config.sharedState !== undefined && next.sharedState !== undefined && !config.sharedState.secret.equals(next.sharedState.secret) && !restartRequired.includes('sharedState'))
        restartRequired.push('sharedState');
      if (restartRequired.length > 0) logger.warn({ keys: restartRequired }, 'changed settings take effect after a restart');
      runtime = buildRuntime(effective, { ...runtimeDeps, previous: runtime });
      certificateSource.updateTrustedProxies(effective.trustedProxies);
      applyLiveLimits(server, effective.limits);
      logger.level = effective.logLevel;
      current = effective;
      metrics.configReloads.inc({ result: 'applied' });
      logger.info({ config: config.source }, 'config reloaded');
      logger.flush();
      return { config: 'applied', restartRequired, certificates: certificatesResult };
    },
  };
}
