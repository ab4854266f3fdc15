/**
 * Composition root: the only place that builds things. Everything stateful (logger, metrics
 * registry, token cache, introspection pool, clock, certificate reloader) is made here and passed
 * down. What a config reload may change lives in one `Policy` object, swapped atomically.
 */
import { once } from 'node:events';
import type { Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { createAdminServer } from './admin/server.ts';
import { listen } from './listen.ts';
import { createMetrics, type Metrics } from './admin/metrics.ts';
import { ConfigError, loadConfigFile, type LoadedConfig } from './config/load.ts';
import { mapsClaims, reconcileReload } from './config/reload-table.ts';
import type { Settings } from './config/schema.ts';
import { buildMetadataDirectory } from './discovery/resource-metadata.ts';
import { withCircuitBreaker } from './introspection/breaker.ts';
import { createIntrospectionClient, type Introspect } from './introspection/client.ts';
import { createLogger, type Logger } from './log.ts';
import { createCertificateSource } from './pipeline/client-cert.ts';
import { createGuard } from './pipeline/guard.ts';
import { createCachedIntrospector, type TokenIntrospector } from './pipeline/introspect.ts';
import { compileRoutes } from './pipeline/route.ts';
import { createForwarder } from './proxy/forward.ts';
import { createHandlers, type Policy } from './proxy/handler.ts';
import { createCertificateReloader, notAfterSeconds, type ReloadResult } from './tls/reloader.ts';
import { applyLiveLimits, createTlsServer } from './tls/server.ts';

export interface AppDependencies {
  logger?: Logger;
  /** Milliseconds since the epoch. */
  now?: () => number;
  /** Replaces the HTTP introspection client (tests of the edges use the real one). */
  introspect?: Introspect;
  /** Process-level metrics (event loop, memory); off in tests that run many apps. */
  defaultMetrics?: boolean;
  /** Start the admin listener (cluster workers leave it to the primary). Default true. */
  admin?: boolean;
  /** Watch the TLS files for changes. Default true. */
  watchCertificates?: boolean;
}

export interface StartedApp {
  /** https://host:port of the proxy listener. */
  url: string;
  port: number;
  adminUrl: string | undefined;
  adminPort: number | undefined;
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
  readonly logger: Logger;
}

async function close(server: Server, graceMs: number): Promise<void> {
  if (!server.listening) return;
  const closed = once(server, 'close');
  server.close();
  server.closeIdleConnections();
  const timer = setTimeout(() => server.closeAllConnections(), graceMs);
  await closed;
  clearTimeout(timer);
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
      logger.warn({ state }, `introspection circuit ${state}`);
    },
  });
  const tokens = createCachedIntrospector(introspect, {
    ...settings.introspection.cache,
    staleIfErrorSeconds: settings.introspection.staleIfErrorSeconds,
    now,
    onHit: () => metrics.cacheHits.inc(),
    onMiss: () => metrics.cacheMisses.inc(),
    onStale: () => metrics.cacheStale.inc(),
  });

  const buildPolicy = (from: Settings): Policy => {
    const routes = compileRoutes(from);
    return {
      authorize: createGuard({ routes, introspector: tokens, now, limits: from.limits }),
      metadata: buildMetadataDirectory(from, routes),
      realm: from.errors.realm,
      managedHeaders: routes.managedHeaders,
      formBodyBytes: from.limits.formBodyBytes,
    };
  };
  let policy = buildPolicy(settings);
  /** The settings in force: those started with, then each reload's live keys. */
  let current = settings;
  let ready = false;
  let draining = false;
  const upgraded = new Set<Duplex>();

  const forwarder = createForwarder();
  const certificateSource = createCertificateSource({ trustedProxies: settings.trustedProxies, clientCa: config.tls.clientCa, now });
  const handlers = createHandlers({
    policy: () => policy,
    forwarder,
    metrics,
    logger,
    certificates: certificateSource,
    draining: () => draining,
    onUpgraded: (socket) => {
      upgraded.add(socket);
      socket.once('close', () => upgraded.delete(socket));
    },
  });

  const server = createTlsServer(config.tls, settings.limits, handlers.onRequest);
  server.on('upgrade', handlers.onUpgrade);
  server.on('clientError', handlers.onClientError);
  server.on('tlsClientError', (err: NodeJS.ErrnoException) => logger.debug({ code: err.code }, 'TLS handshake failed'));
  const admin = deps.admin === false ? undefined : createAdminServer(metrics.registry, { ready: () => ready });

  metrics.certificateNotAfter.set(notAfterSeconds(config.tls));
  let certificates: ReturnType<typeof createCertificateReloader> | undefined;

  async function teardown(): Promise<void> {
    certificates?.close();
    await forwarder.close();
    await client?.close();
  }

  return {
    metrics,
    tokens,
    logger,
    async start() {
      try {
        const main = await listen(server, settings.listen.host, settings.listen.port, (err) => logger.error({ err }, 'proxy listener error'));
        const adminAddress =
          admin === undefined ? undefined : await listen(admin, settings.admin.host, settings.admin.port, (err) => logger.error({ err }, 'admin listener error'));
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
            if (result === 'success') certificateSource.updateClientCa(material.clientCa);
          },
        });
        ready = true;
        const started: StartedApp = {
          url: `https://${urlHost(settings.listen.host)}:${main.port}`,
          port: main.port,
          adminUrl: adminAddress === undefined ? undefined : `http://${urlHost(settings.admin.host)}:${adminAddress.port}`,
          adminPort: adminAddress?.port,
        };
        logger.info({ listen: started.url, admin: started.adminUrl, config: config.source }, 'cnfguard started');
        return started;
      } catch (err) {
        // Nothing half-started: whatever did come up goes down again.
        await Promise.all([close(server, 0), admin === undefined ? undefined : close(admin, 0)]);
        await teardown();
        throw err;
      }
    },
    async stop(graceMs = current.shutdownGraceSeconds * 1000) {
      ready = false;
      draining = true;
      logger.info({ graceMs, upgraded: upgraded.size }, 'draining');
      const websocketDeadline = setTimeout(() => {
        for (const socket of upgraded) socket.destroy();
      }, graceMs);
      await close(server, graceMs);
      clearTimeout(websocketDeadline);
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
      if (restartRequired.length > 0) logger.warn({ keys: restartRequired }, 'changed settings take effect after a restart');
      policy = buildPolicy(effective);
      certificateSource.updateTrustedProxies(effective.trustedProxies);
      applyLiveLimits(server, effective.limits);
      logger.level = effective.logLevel;
      current = effective;
      metrics.configReloads.inc({ result: 'applied' });
      logger.info({ config: config.source }, 'config reloaded');
      return { config: 'applied', restartRequired, certificates: certificatesResult };
    },
  };
}
