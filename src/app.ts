/**
 * Composition root: the only place that builds things. Everything stateful (logger, metrics
 * registry, token cache, introspection pool, clock) is made here and passed down.
 */
import { once } from 'node:events';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createAdminServer } from './admin/server.ts';
import { buildMetadataDirectory } from './discovery/resource-metadata.ts';
import { createMetrics, type Metrics } from './admin/metrics.ts';
import type { LoadedConfig } from './config/load.ts';
import { createIntrospectionClient, type Introspect } from './introspection/client.ts';
import { createLogger, type Logger } from './log.ts';
import { createGuard } from './pipeline/guard.ts';
import { createCachedIntrospector, type TokenIntrospector } from './pipeline/introspect.ts';
import { compileRoutes } from './pipeline/route.ts';
import { createForwarder } from './proxy/forward.ts';
import { createHandlers } from './proxy/handler.ts';
import { createTlsServer } from './tls/server.ts';

export interface AppDependencies {
  logger?: Logger;
  /** Milliseconds since the epoch. */
  now?: () => number;
  /** Replaces the HTTP introspection client (tests of the edges use the real one). */
  introspect?: Introspect;
  /** Process-level metrics (event loop, memory); off in tests that run many apps. */
  defaultMetrics?: boolean;
}

export interface StartedApp {
  /** https://host:port of the proxy listener. */
  url: string;
  port: number;
  adminUrl: string;
  adminPort: number;
}

export interface App {
  start(): Promise<StartedApp>;
  /** Stops accepting, lets in-flight requests finish for up to `graceMs`, then closes what is left. */
  stop(graceMs?: number): Promise<void>;
  readonly metrics: Metrics;
  readonly tokens: TokenIntrospector;
  readonly logger: Logger;
}

async function listen(server: Server, host: string, port: number): Promise<AddressInfo> {
  server.listen(port, host);
  await Promise.race([once(server, 'listening'), once(server, 'error').then(([err]) => Promise.reject(err as Error))]);
  return server.address() as AddressInfo;
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
          onOutcome: (outcome, seconds) => metrics.observeIntrospection(outcome, seconds),
        })
      : undefined;
  const tokens = createCachedIntrospector(deps.introspect ?? (client as NonNullable<typeof client>).introspect, {
    ...settings.introspection.cache,
    now,
    onHit: () => metrics.cacheHits.inc(),
    onMiss: () => metrics.cacheMisses.inc(),
  });
  const forwarder = createForwarder();
  const routes = compileRoutes(settings);
  const handlers = createHandlers({
    authorize: createGuard({ routes, introspector: tokens, now }),
    metadata: buildMetadataDirectory(settings, routes),
    forwarder,
    metrics,
    logger,
    settings: {
      realm: settings.errors.realm,
      managedHeaders: routes.managedHeaders,
      verifyClientChain: config.tls.clientCa !== undefined,
      formBodyBytes: settings.limits.formBodyBytes,
    },
  });

  const server = createTlsServer(config.tls, handlers.onRequest);
  server.on('upgrade', handlers.onUpgrade);
  server.on('tlsClientError', (err: NodeJS.ErrnoException) => logger.debug({ code: err.code }, 'TLS handshake failed'));
  let ready = false;
  const admin = createAdminServer(metrics.registry, { ready: () => ready });

  return {
    metrics,
    tokens,
    logger,
    async start() {
      try {
        const main = await listen(server, settings.listen.host, settings.listen.port);
        const adminAddress = await listen(admin, settings.admin.host, settings.admin.port);
        ready = true;
        const started: StartedApp = {
          url: `https://${urlHost(settings.listen.host)}:${main.port}`,
          port: main.port,
          adminUrl: `http://${urlHost(settings.admin.host)}:${adminAddress.port}`,
          adminPort: adminAddress.port,
        };
        logger.info({ listen: started.url, admin: started.adminUrl, config: config.source }, 'cnfguard started');
        return started;
      } catch (err) {
        // Nothing half-started: whatever did come up goes down again.
        await Promise.all([close(server, 0), close(admin, 0)]);
        await client?.close();
        forwarder.close();
        throw err;
      }
    },
    async stop(graceMs = 10_000) {
      ready = false;
      await close(server, graceMs);
      await close(admin, 0);
      forwarder.close();
      await client?.close();
      logger.info('cnfguard stopped');
      logger.flush();
    },
  };
}
