/**
 * `workers: N`: N processes share the listener through node:cluster, so throughput scales with
 * cores. The primary serves nothing itself: it owns the admin listener (readiness of all workers,
 * metrics summed across them), restarts a worker that dies, and relays signals. Each worker has
 * its own token cache, so a token is introspected once per worker. Without `sharedState` the
 * primary also holds DPoP's replay store and nonce key for all workers (src/cluster-state.ts).
 */
import cluster, { type Worker } from 'node:cluster';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { AggregatorRegistry } from 'prom-client';
import { createAdminServer } from './admin/server.ts';
import { createUpstreamCheck } from './admin/upstream-check.ts';
import { shownUrl, statusDocument } from './admin/status.ts';
import { effectiveConfigYaml } from './config/effective.ts';
import { listen, removeStaleSocket } from './listen.ts';
import type { Metrics } from './admin/metrics.ts';
import { ConfigError, loadConfigFile, type ConfigAsRead, type LoadedConfig } from './config/load.ts';
import { reconcileReload } from './config/reload-table.ts';
import { createAssertionKeyRing } from './assertion/keys.ts';
import type { Settings } from './config/schema.ts';
import { keepStdoutNonBlocking, type Logger } from './log.ts';
import { createPrimaryState } from './cluster-state.ts';
import { STOP_MARGIN_MS } from './serve/stopped.ts';
import { NODE_VERSION, VERSION } from './version.ts';

const READY_MESSAGE = 'cnfguard:ready';
/** A worker asks for the config in force; the primary answers with CONFIG_MESSAGE. */
const CONFIG_REQUEST = 'cnfguard:config?';
const CONFIG_MESSAGE = 'cnfguard:config';
/** The primary read the file on SIGHUP: its text when it passed, or `rejected` (the primary logged why). */
const RELOAD_MESSAGE = 'cnfguard:reload';

/**
 * The config a worker judges by, as its primary read it: `started`, the file as the cluster
 * started (restart keys keep its values), and `current`, the text of the last reload applied.
 * Workers never read the file themselves, so a worker started later (one that died and was
 * replaced) or a file rewritten during a reload cannot give two workers two policies.
 */
export interface ConfigInForce {
  started: ConfigAsRead;
  current: ConfigAsRead;
}

/** A reload as the primary relays it to each worker: the file and its files as it read them, or that it rejected them. */
export type RelayedReload = { read: ConfigAsRead } | { rejected: true };

function isConfigAsRead(value: unknown): value is ConfigAsRead {
  return typeof value === 'object' && value !== null && typeof (value as ConfigAsRead).text === 'string';
}

/**
 * In a worker: asks the primary for the config in force, and hands on each reload the primary
 * relays (the worker does not act on SIGHUP itself: the primary relays one).
 */
export function configFromPrimary(onReload: (reload: RelayedReload) => void): Promise<ConfigInForce> {
  return new Promise((resolve) => {
    process.on('message', (message: { type?: string; started?: unknown; current?: unknown; read?: unknown }) => {
      if (message?.type === CONFIG_MESSAGE && isConfigAsRead(message.started) && isConfigAsRead(message.current)) resolve({ started: message.started, current: message.current });
      else if (message?.type === RELOAD_MESSAGE) onReload(isConfigAsRead(message.read) ? { read: message.read } : { rejected: true });
    });
    process.send?.({ type: CONFIG_REQUEST });
  });
}

/**
 * The CPUs a cgroup CPU limit allows, rounded up: cgroup v2 `cpu.max` ("<quota> <period>", or
 * "max <period>" when unlimited). undefined when there is no limit or the text is not that shape.
 */
export function cpusFromCpuMax(text: string): number | undefined {
  const match = /^\s*(max|\d+)(?:\s+(\d+))?\s*$/.exec(text);
  if (match === null || match[1] === 'max') return undefined;
  return cpusFromQuota(Number(match[1]), Number(match[2] ?? 100_000));
}

/** cgroup v1: `cpu.cfs_quota_us` (-1 when unlimited) over `cpu.cfs_period_us`. */
export function cpusFromCfs(quotaText: string, periodText: string): number | undefined {
  const quota = Number(quotaText.trim());
  const period = Number(periodText.trim());
  if (!Number.isInteger(quota) || quota <= 0) return undefined;
  return cpusFromQuota(quota, period);
}

function cpusFromQuota(quota: number, period: number): number | undefined {
  if (!Number.isSafeInteger(quota) || !Number.isSafeInteger(period) || quota <= 0 || period <= 0) return undefined;
  return Math.max(1, Math.ceil(quota / period));
}

/** Reads a file's text, or undefined when it cannot (no cgroup file, another OS). */
export type ReadText = (path: string) => string | undefined;

const readText: ReadText = (path) => {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
};

/**
 * The process's cgroup CPU limit in whole CPUs (rounded up), from cgroup v2
 * `/sys/fs/cgroup/cpu.max`, else cgroup v1 `/sys/fs/cgroup/cpu/cpu.cfs_{quota,period}_us`;
 * undefined when neither sets one. In a container this is the pod's `limits.cpu`.
 */
export function cgroupCpuLimit(read: ReadText = readText): number | undefined {
  const v2 = read('/sys/fs/cgroup/cpu.max');
  if (v2 !== undefined) return cpusFromCpuMax(v2);
  for (const dir of ['/sys/fs/cgroup/cpu', '/sys/fs/cgroup/cpu,cpuacct']) {
    const quota = read(`${dir}/cpu.cfs_quota_us`);
    const period = read(`${dir}/cpu.cfs_period_us`);
    if (quota !== undefined && period !== undefined) return cpusFromCfs(quota, period);
  }
  return undefined;
}

/**
 * `workers: auto` is the cgroup CPU limit (a pod's `limits.cpu`, rounded up) when one is set and
 * below the CPUs the process may run on, else `os.availableParallelism()`: a 1-CPU pod on a
 * 64-core node gets one worker, not 64.
 */
export function workerCount(workers: Settings['workers'], read: ReadText = readText, cpus: number = availableParallelism()): number {
  return workers === 'auto' ? usableCpus(read, cpus) : workers;
}

/** The CPUs this process may use: the cgroup CPU limit when one is set and lower, else `os.availableParallelism()` (the affinity mask). */
export function usableCpus(read: ReadText = readText, cpus: number = availableParallelism()): number {
  const limit = cgroupCpuLimit(read);
  return limit === undefined ? cpus : Math.min(limit, cpus);
}

/** In a worker: let the primary collect this app's metrics, and tell it when serving. */
export function announceWorker(metrics: Metrics, listen: string): void {
  // prom-client answers the primary's metric requests only once an AggregatorRegistry exists here.
  new AggregatorRegistry();
  AggregatorRegistry.setRegistries([metrics.registry]);
  process.send?.({ type: READY_MESSAGE, listen });
}

/**
 * bin/cnfguard.js on a Node older than 24 runs the server as its child and puts its own pid in
 * CNFGUARD_LAUNCHER_PID. A launcher killed by SIGKILL cannot relay anything: the supervisor
 * sees the service gone and starts another, while the orphaned primary kept the port and
 * restarted every worker sent SIGTERM (issue 26, finding 11). Node has no parent-death signal,
 * so the parent pid is polled: `onGone` runs once it is no longer the launcher. Returns a stop.
 */
export function watchLauncher(onGone: () => void, launcher: string | undefined = process.env.CNFGUARD_LAUNCHER_PID, parent: () => number = () => process.ppid, intervalMs = 500): () => void {
  const pid = Number(launcher);
  if (launcher === undefined || !Number.isSafeInteger(pid) || pid <= 0) return () => {};
  const timer = setInterval(() => {
    if (parent() === pid) return;
    clearInterval(timer);
    onGone();
  }, intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}

/**
 * Runs the primary until SIGTERM/SIGINT; resolves with the exit code. `onReload` registers what
 * a SIGHUP does once the workers serve (run-proxy.ts holds one that came earlier until then).
 */
export async function runPrimary(config: LoadedConfig, logger: Logger, onReload: (reload: () => void) => void = (reload) => process.on('SIGHUP', reload)): Promise<number> {
  const { settings } = config;
  const count = workerCount(settings.workers);
  const aggregator = new AggregatorRegistry();
  const readyWorkers = new Set<number>();
  let stopping = false;
  let listenUrl: string | undefined;
  // The settings in force here: the primary applies the live keys it uses itself (the shutdown
  // deadline, the log level, the default upstream it checks); each worker reloads, validates and reports on its own.
  let current = settings;
  let sha256 = config.sha256;
  // What every worker judges by (ConfigInForce): a worker started later gets it too.
  const started: ConfigAsRead = { text: config.text ?? '', files: config.files };
  let inForce = started;
  const startedAt = Date.now();

  // The assertion keys the workers sign with (each reads the same key file, so the kids agree), published here too.
  const assertionKeys = createAssertionKeyRing(Date.now);
  assertionKeys.use(config.assertionKey, settings.assertion?.lifetimeSeconds ?? 0);
  const admin = createAdminServer(
    { metrics: () => aggregator.clusterMetrics(), contentType: aggregator.contentType },
    {
      ready: () => !stopping && readyWorkers.size === count,
      // Each worker's own store connection: /metrics has cnfguard_shared_state_up, the lowest of them.
      ...(settings.sharedState !== undefined && { details: () => ({ shared_state: 'per worker (cnfguard_shared_state_up in /metrics: the lowest)' }) }),
      jwks: () => (current.assertion === undefined ? undefined : assertionKeys.jwks()),
      upstream: createUpstreamCheck({ upstream: () => current.upstream, ...settings.admin.upstreamCheck }),
      // Caches, breaker and dependencies as last seen live in each worker: /status says so.
      status: () =>
        statusDocument({
          now: Date.now,
          startedAt,
          config: () => ({ file: config.file, sha256, settings: current }),
          ready: () => !stopping && readyWorkers.size === count,
          introspectionUrl: shownUrl(settings.introspection.url),
          workers: () => ({ count, ready: readyWorkers.size }),
          // Each worker has its own connection to the store (null would read as "not configured").
          ...(settings.sharedState !== undefined && { sharedState: () => 'per-worker' as const }),
        }),
      config: () => effectiveConfigYaml({ settings: current }),
    },
  );

  // DPoP without shared state (or its `local` fallback): the one replay store and nonce key all workers use (src/cluster-state.ts).
  const dpopState = settings.sharedState === undefined || settings.sharedState.onUnavailable === 'local' ? createPrimaryState({ maxEntries: settings.dpop.replayStoreMaxEntries }) : undefined;

  let announced: () => void = () => {};
  const allReady = new Promise<void>((resolve) => (announced = resolve));

  const fork = (): Worker => {
    const worker = cluster.fork();
    keepStdoutNonBlocking();
    const end = { send: (message: object, callback: (error: Error | null) => void) => worker.send(message, undefined, undefined, callback) };
    worker.on('message', (message: { type?: string; listen?: string }) => {
      if (message?.type === CONFIG_REQUEST) {
        worker.send({ type: CONFIG_MESSAGE, started, current: inForce } satisfies ConfigInForce & { type: string });
        return;
      }
      if (dpopState?.handle(end, message) === true || message?.type !== READY_MESSAGE) return;
      readyWorkers.add(worker.id);
      listenUrl = message.listen;
      if (readyWorkers.size === count) announced();
    });
    worker.on('exit', (code, signal) => {
      keepStdoutNonBlocking();
      readyWorkers.delete(worker.id);
      if (stopping) return;
      logger.error({ worker: worker.id, code, signal }, 'worker exited; starting another');
      setTimeout(() => {
        if (!stopping) fork();
      }, 1000).unref();
    });
    return worker;
  };

  let address: { port: number };
  try {
    address = await listen(admin, settings.admin.host, settings.admin.port, (err) => logger.error({ err }, 'admin listener error'), { name: 'the admin listener', path: 'admin' });
  } catch (err) {
    logger.fatal({ code: (err as NodeJS.ErrnoException).code }, `cannot start: ${(err as Error).message}`);
    return 2;
  }
  // The workers share one bound socket file (node:cluster binds it in this process): a crash's
  // stale one is replaced here, once, not by each worker at the same time.
  // If it cannot be removed, each worker's own attempt fails and says why.
  if (settings.decisionApi?.socket !== undefined) await removeStaleSocket(settings.decisionApi.socket).catch(() => false);
  for (let i = 0; i < count; i++) fork();
  // A worker that cannot start (port taken) exits with code 2 before it is ready.
  const failed = new Promise<number>((resolve) => cluster.on('exit', (_worker, code) => readyWorkers.size < count && code === 2 && resolve(2)));
  const outcome = await Promise.race([allReady.then(() => 0), failed]);
  if (outcome !== 0) {
    stopping = true;
    for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill('SIGTERM');
    admin.close();
    return outcome;
  }
  logger.info({ version: VERSION, node: NODE_VERSION, listen: listenUrl, admin: `http://${settings.admin.host}:${address.port}`, workers: count }, 'cnfguard cluster started');
  // Under the launcher: its death is a SIGTERM (drain the workers, exit), not an orphaned cluster.
  const unwatch = watchLauncher(() => {
    logger.warn({ launcher: process.env.CNFGUARD_LAUNCHER_PID }, 'the launcher (bin/cnfguard.js) is gone; stopping');
    process.kill(process.pid, 'SIGTERM');
  });

  // (`current`, the settings in force, is declared above: the admin listener's upstream check reads it.)
  // The primary reads the file, once, and relays what it read: every worker then applies the same text.
  const relay = (reload: RelayedReload) => {
    for (const worker of Object.values(cluster.workers ?? {})) if (worker?.isConnected() === true) worker.send({ type: RELOAD_MESSAGE, ...reload });
  };
  onReload(() => {
    if (config.file === undefined) return relay({ rejected: true });
    let next: LoadedConfig;
    try {
      next = loadConfigFile(config.file);
    } catch (err) {
      const problems = err instanceof ConfigError ? err.problems : [{ path: '', message: (err as Error).message }];
      logger.error({ config: config.source, problems }, 'config reload rejected; keeping the running config');
      return relay({ rejected: true });
    }
    assertionKeys.use(next.assertionKey, Math.max(current.assertion?.lifetimeSeconds ?? 0, ...current.routes.map((route) => (route.assertion === false ? 0 : (route.assertion?.lifetimeSeconds ?? 0)))));
    current = reconcileReload(settings, next.settings).effective;
    sha256 = next.sha256;
    inForce = { text: next.text ?? inForce.text, files: next.files };
    logger.level = current.logLevel;
    relay({ read: inForce });
  });
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    const stop = (received: NodeJS.Signals) => {
      // A second SIGTERM or SIGINT, now unhandled, ends the primary at once.
      process.off('SIGTERM', stop);
      process.off('SIGINT', stop);
      resolve(received);
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  });
  stopping = true;
  unwatch();
  logger.info({ signal }, 'shutting down workers');
  const workers = Object.values(cluster.workers ?? {}).filter((w): w is Worker => w !== undefined);
  const exits = workers.map((worker) => (worker.isDead() ? Promise.resolve() : once(worker, 'exit').then(() => undefined)));
  for (const worker of workers) worker.process.kill('SIGTERM');
  const deadline = setTimeout(() => workers.forEach((w) => w.process.kill('SIGKILL')), current.shutdownGraceSeconds * 1000 + STOP_MARGIN_MS);
  await Promise.all(exits);
  clearTimeout(deadline);
  await new Promise((resolve) => admin.close(resolve));
  logger.info('cnfguard stopped');
  logger.flush();
  return 0;
}
