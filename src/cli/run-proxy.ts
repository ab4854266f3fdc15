/**
 * `cnfguard run`: the proxy. Everything a run loads is imported statically here, in one module
 * (the command's usage, in run.ts, stays light for `--help`), the app too: a workers primary loads
 * its modules without starting one (~2 MB). Static on purpose (issue 32): each module imported
 * dynamically is an entry of the build, and esbuild splits what entries share into chunks; with
 * run's steps each an entry, `run` loaded ~40 files and resolved ~130 imports at start-up, enough
 * path work in Node's ESM loader to get its path normalising optimised by TurboFan, whose code
 * (~5 MB of the node binary) then stays paged in while idle. Now ~16 files.
 */
import cluster from 'node:cluster';
import { installFatalHandlers } from '../fatal.ts';
import { createApp } from '../app.ts';
import { announceWorker, configFromPrimary, runPrimary, watchLauncher, workerCount, type ConfigInForce, type RelayedReload } from '../cluster.ts';
import { ConfigError, loadConfigFile, warningsOf, type LoadedConfig } from '../config/load.ts';
import { reconcileReload } from '../config/reload-table.ts';
import { createLogger } from '../log.ts';
import { settleMemoryAfterStart } from '../serve/settle-memory.ts';
import { configPath } from './command.ts';
import { endOnceStopped, stopWithin } from '../serve/stopped.ts';

/**
 * A worker's config: the texts its primary read (never the file as it is now), the restart keys
 * from the text the cluster started with, the live ones from the last reload applied.
 */
function workerConfig(file: string, inForce: ConfigInForce): LoadedConfig {
  const started = loadConfigFile(file, process.env, inForce.started);
  if (inForce.current.text === inForce.started.text && inForce.current.files === undefined) return started;
  const next = loadConfigFile(file, process.env, inForce.current);
  return Object.freeze({ ...started, settings: reconcileReload(started.settings, next.settings).effective, assertionKey: next.assertionKey, sha256: next.sha256, text: next.text });
}

/** `reloadAsked`: a SIGHUP came while the command loaded (run.ts held it). */
export async function runProxy(args: string[], reloadAsked = false): Promise<number> {
  const file = configPath('run', args);
  // A SIGHUP's default action ends the process: one that comes while starting (a config watcher,
  // `systemctl reload` right after start) is held and applied once serving.
  let reloadOnceStarted: RelayedReload | 'file' | undefined = reloadAsked && !cluster.isWorker ? 'file' : undefined;
  let reloadNow: ((reload: RelayedReload | 'file') => void) | undefined;
  const reload = (from: RelayedReload | 'file') => (reloadNow === undefined ? (reloadOnceStarted = from) : reloadNow(from));
  // A worker acts on the reloads its primary relays, not on signals (the primary relays a SIGHUP).
  process.on('SIGHUP', () => {
    if (!cluster.isWorker) reload('file');
  });
  let config: Awaited<ReturnType<typeof loadConfigFile>>;
  try {
    config = cluster.isWorker ? workerConfig(file, await configFromPrimary(reload)) : loadConfigFile(file);
  } catch (err) {
    if (err instanceof ConfigError) {
      createLogger('info', undefined).fatal({ config: file, problems: err.problems }, err.message);
      process.stderr.write(`cnfguard: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
  const exit = (code: number) => process.exit(code);
  const warn = (logger: { warn(detail: object, message: string): void }) => {
    if (cluster.isWorker) return; // the primary said it once
    for (const w of warningsOf(config)) logger.warn({ config: file, path: w.path }, w.message);
  };
  if (cluster.isPrimary && workerCount(config.settings.workers) > 1) {
    const logger = createLogger(config.settings.logLevel, undefined, config.settings.limits.logBufferBytes);
    installFatalHandlers(logger, exit);
    warn(logger);
    settleMemoryAfterStart(logger);
    const onReload = (reload: () => void) => {
      reloadNow = reload;
      if (reloadOnceStarted !== undefined) reload();
    };
    return endOnceStopped(logger, await runPrimary(config, logger, onReload), exit);
  }
  // With workers, the first one probes the AS: one warning, not one per worker.
  const app = createApp(config, { admin: !cluster.isWorker, probeIntrospection: !cluster.isWorker || cluster.worker?.id === 1 });
  // In a cluster worker too: the primary starts another in its place.
  installFatalHandlers(app.logger, exit);
  warn(app.logger);
  try {
    const started = await app.start();
    if (cluster.isWorker) announceWorker(app.metrics, started.url);
    // A single process under the launcher (a primary does the same for its workers): its death is a
    // SIGTERM, not a server left holding the port.
    else
      watchLauncher(() => {
        app.logger.warn({ launcher: process.env.CNFGUARD_LAUNCHER_PID }, 'the launcher (bin/cnfguard.js) is gone; stopping');
        process.kill(process.pid, 'SIGTERM');
      });
    // Give back what start-up grew and no longer uses (~10 MB idle RSS; serve/settle-memory.ts).
    settleMemoryAfterStart(app.logger);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    app.logger.fatal({ code }, `cannot start: ${(err as Error).message}`);
    process.stderr.write(`cnfguard: cannot start: ${(err as Error).message}\n`);
    return 2;
  }
  const code = await new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: NodeJS.Signals) => {
      if (stopping) return;
      stopping = true;
      // A second SIGTERM or SIGINT, now unhandled, ends the process at once (an operator's way out).
      process.off('SIGTERM', stop);
      process.off('SIGINT', stop);
      app.logger.info({ signal }, 'shutting down');
      void stopWithin(() => app.stop(), app.shutdownGraceMs(), app.logger).then(resolve);
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
    // SIGHUP (or the primary's relay): certificates and config again; a bad file keeps what runs.
    reloadNow = (reload) => {
      app.reload(reload === 'file' ? undefined : reload).then(
        (report) => app.logger.info(report, 'reload done'),
        (err: unknown) => app.logger.error({ err }, 'reload failed'),
      );
    };
    if (reloadOnceStarted !== undefined) reloadNow(reloadOnceStarted);
  });
  return endOnceStopped(app.logger, code, exit);
}
