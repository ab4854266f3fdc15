/**
 * The app's named stages, apart from its composition (app.ts): start (listen on every listener,
 * or none), stop (drain: readyz 503, no new connections, in-flight requests get the grace
 * period), and reload (the config file's live keys and the certificates; a bad file keeps what
 * runs).
 */
import { once } from 'node:events';
import type { Server } from 'node:http';
import type { Metrics } from '../admin/metrics.ts';
import { initialiseSeries } from '../admin/series.ts';
import { ConfigError, loadConfigFile, type ConfigAsRead, type LoadedConfig } from '../config/load.ts';
import { reconcileReload } from '../config/reload-table.ts';
import type { IntrospectionClient } from '../introspection/client.ts';
import { listen, listenOnSocket } from '../listen.ts';
import type { Logger } from '../log.ts';
import type { ConnectionTracker } from '../edge/connection-errors.ts';
import { buildRuntime, type RuntimeDependencies } from '../runtime.ts';
import { createCertificateReloader, notAfterSeconds, type ReloadResult } from './certificate-reloader.ts';
import { applyLiveLimits } from './tls-server.ts';
import { NODE_VERSION, VERSION } from '../version.ts';
import type { Listeners, ServingState } from './listeners.ts';

export interface StartedApp {
  /** https://host:port of the proxy listener. */
  url: string;
  port: number;
  adminUrl: string | undefined;
  adminPort: number | undefined;
  /** http://host:port of the decision API, when `decisionApi` is set. */
  decisionUrl?: string | undefined;
  decisionPort?: number | undefined;
  /** The decision API's Unix socket path, when `decisionApi.socket` is set. */
  decisionSocket?: string | undefined;
}

export interface ReloadReport {
  config: 'applied' | 'rejected' | 'not-a-file';
  /** Keys (dotted paths) that changed but only take effect after a restart: see config/reload-table.ts. */
  restartRequired: string[];
  certificates: ReloadResult;
}

export interface Lifecycle {
  start(): Promise<StartedApp>;
  /** Drains: readyz 503 at once, no new connections, in-flight requests get `graceMs`, then the rest is closed. */
  stop(graceMs?: number): Promise<void>;
  /** The grace period a stop gives in-flight requests now (`shutdownGraceSeconds`, a live key). */
  shutdownGraceMs(): number;
  /**
   * Re-reads the config file and the certificates; a bad file keeps what runs. A cluster worker
   * is given what its primary read (`read`), or told the primary rejected the file (`rejected`).
   */
  reload(from?: ReloadSource): Promise<ReloadReport>;
}

/** Where a reload's config comes from: the file (the default), a text already read, or nowhere (rejected, already logged). */
export type ReloadSource = { read: ConfigAsRead } | { rejected: true } | undefined;

export interface LifecycleParts {
  config: LoadedConfig;
  state: ServingState;
  listeners: Listeners;
  logger: Logger;
  metrics: Metrics;
  /** What a reload rebuilds the runtime with. */
  runtimeDeps: RuntimeDependencies;
  /** The introspection client, for the start-up probe (absent when introspection is replaced or unused). */
  probe: IntrospectionClient | undefined;
  /** Work before listening (the JWKS, the primary's nonce key), after it (the shared store), and on the way down. */
  beforeListen: () => Promise<void>;
  afterListen: () => void;
  teardown: () => Promise<void>;
  /** The server certificate changed (DPoP origins follow it). */
  onServerCertificate: (pem: string) => void;
  watchCertificates: boolean;
  /** Extra fields of the `cnfguard started` line. */
  startedFields: Record<string, unknown>;
  /** A reloaded config was accepted: what follows its files (the assertion key), before the runtime is rebuilt. */
  onConfig?: (next: LoadedConfig) => void;
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

function urlHost(host: string): string {
  const shown = host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '::1' : host;
  return shown.includes(':') ? `[${shown}]` : shown;
}

export function createLifecycle(parts: LifecycleParts): Lifecycle {
  const { config, state, listeners, logger, metrics } = parts;
  const { settings } = config;
  const { listener, decision, decisionSocket, admin, connections, upgraded, certificateSource } = listeners;
  const server = listener.server;
  let certificates: ReturnType<typeof createCertificateReloader> | undefined;
  metrics.certificateNotAfter.set(notAfterSeconds(config.tls));

  async function start(): Promise<StartedApp> {
    try {
      await parts.beforeListen();
      const main = await listen(server, settings.listen.host, settings.listen.port, (err) => logger.error({ err }, 'proxy listener error'), { name: 'the proxy listener', path: 'listen' });
      const decisionApi = settings.decisionApi;
      const decisionError = (err: Error) => logger.error({ err }, 'decision API listener error');
      const decisionAddress =
        decision === undefined || decisionApi?.port === undefined ? undefined : await listen(decision, decisionApi.host, decisionApi.port, decisionError, { name: 'the decision API', path: 'decisionApi' });
      if (decisionSocket !== undefined && decisionApi?.socket !== undefined) {
        await listenOnSocket(decisionSocket, decisionApi.socket, Number.parseInt(decisionApi.socketMode, 8), decisionError, { name: "the decision API's socket", path: 'decisionApi.socket' });
      }
      const adminAddress = admin === undefined ? undefined : await listen(admin, settings.admin.host, settings.admin.port, (err) => logger.error({ err }, 'admin listener error'), { name: 'the admin listener', path: 'admin' });
      certificates = createCertificateReloader({
        server,
        files: settings.tls,
        source: config.source,
        initial: config.tls,
        logger,
        watch: parts.watchCertificates,
        onResult: (result, material) => {
          metrics.certificateReloads.inc({ result });
          metrics.certificateNotAfter.set(notAfterSeconds(material));
          if (result === 'success') {
            certificateSource.updateClientCa(material.clientCa);
            parts.onServerCertificate(material.cert);
          }
        },
      });
      parts.afterListen();
      state.ready = true;
      const started: StartedApp = {
        url: `https://${urlHost(settings.listen.host)}:${main.port}`,
        port: main.port,
        adminUrl: adminAddress === undefined ? undefined : `http://${urlHost(settings.admin.host)}:${adminAddress.port}`,
        adminPort: adminAddress?.port,
        decisionUrl: decisionAddress === undefined || decisionApi === undefined ? undefined : `http://${urlHost(decisionApi.host)}:${decisionAddress.port}`,
        decisionPort: decisionAddress?.port,
        decisionSocket: decisionSocket === undefined ? undefined : decisionApi?.socket,
      };
      // Where each listener is, the decision API's among them (its URL, its socket path).
      const decisionFields = { decisionApi: started.decisionUrl, decisionSocket: started.decisionSocket };
      logger.info({ version: VERSION, node: NODE_VERSION, listen: started.url, admin: started.adminUrl, ...decisionFields, config: config.source, ...parts.startedFields }, 'cnfguard started');
      logger.flush(); // what supervisors and people wait for: not held in the log batch
      const client = parts.probe;
      if (client !== undefined) {
        // Not awaited: serving does not wait for the AS; the warning comes when the answer does.
        void client.probe().then((result) => {
          if (!state.ready) return; // stopped meanwhile: the answer no longer matters
          metrics.lastSeen.record('as', result.ok, result.ok ? 'start-up probe answered' : `start-up probe: ${result.cause}`);
          if (result.ok) logger.info({ url: client.shownUrl, ms: Math.round(result.ms) }, 'introspection endpoint answers');
          else logger.warn({ url: result.url, cause: result.cause, check: result.check }, `introspection probe failed: ${result.url}: ${result.cause}; ${result.check}`);
        });
      }
      return started;
    } catch (err) {
      // Nothing half-started: whatever did come up goes down again.
      await Promise.all([server, admin, decision, decisionSocket].map((started) => (started === undefined ? undefined : close(started, 0))));
      certificates?.close();
      await parts.teardown();
      throw err;
    }
  }

  const shutdownGraceMs = (): number => state.current.shutdownGraceSeconds * 1000;

  async function stop(graceMs = shutdownGraceMs()): Promise<void> {
    state.ready = false;
    state.draining = true;
    logger.info({ graceMs, upgraded: upgraded.size }, 'draining');
    logger.flush();
    const websocketDeadline = setTimeout(() => {
      for (const socket of upgraded) socket.destroy();
    }, graceMs);
    listener.closeHttp2Sessions();
    await close(server, graceMs, connections);
    clearTimeout(websocketDeadline);
    await Promise.all([decision, decisionSocket].map((api) => (api === undefined ? undefined : close(api, graceMs))));
    if (admin !== undefined) await close(admin, 0);
    certificates?.close();
    await parts.teardown();
    logger.info('cnfguard stopped');
    logger.flush();
  }

  async function reload(from?: ReloadSource): Promise<ReloadReport> {
    const certificatesResult = certificates?.reload() ?? 'unchanged';
    if (config.file === undefined) return { config: 'not-a-file', restartRequired: [], certificates: certificatesResult };
    if (from !== undefined && 'rejected' in from) {
      // The cluster primary read the file, logged its problems and kept the config: counted here, where the metrics are.
      metrics.configReloads.inc({ result: 'rejected' });
      return { config: 'rejected', restartRequired: [], certificates: certificatesResult };
    }
    let next: LoadedConfig;
    try {
      next = loadConfigFile(config.file, process.env, from?.read);
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
    parts.onConfig?.(next);
    state.runtime = buildRuntime(effective, { ...parts.runtimeDeps, previous: state.runtime });
    certificateSource.updateTrustedProxies(effective.trustedProxies);
    applyLiveLimits(server, effective.limits);
    logger.level = effective.logLevel;
    state.current = effective;
    state.configSha256 = next.sha256;
    metrics.configReloads.inc({ result: 'applied' });
    initialiseSeries(metrics, effective); // routes added by the reload
    logger.info({ config: config.source }, 'config reloaded');
    logger.flush();
    return { config: 'applied', restartRequired, certificates: certificatesResult };
  }

  return { start, stop, shutdownGraceMs, reload };
}
