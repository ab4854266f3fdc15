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
import { announceWorker, runPrimary, workerCount } from '../cluster.ts';
import { ConfigError, loadConfigFile, warningsOf } from '../config/load.ts';
import { createLogger } from '../log.ts';
import { settleMemoryAfterStart } from '../serve/settle-memory.ts';
import { configPath } from './command.ts';
import { endOnceStopped, stopWithin } from '../serve/stopped.ts';

export async function runProxy(args: string[]): Promise<number> {
  const file = configPath('run', args);
  let config: Awaited<ReturnType<typeof loadConfigFile>>;
  try {
    config = loadConfigFile(file);
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
    return endOnceStopped(logger, await runPrimary(config, logger), exit);
  }
  // With workers, the first one probes the AS: one warning, not one per worker.
  const app = createApp(config, { admin: !cluster.isWorker, probeIntrospection: !cluster.isWorker || cluster.worker?.id === 1 });
  // In a cluster worker too: the primary starts another in its place.
  installFatalHandlers(app.logger, exit);
  warn(app.logger);
  try {
    const started = await app.start();
    if (cluster.isWorker) announceWorker(app.metrics, started.url);
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
    // SIGHUP: certificates and config again; a bad file keeps what runs.
    process.on('SIGHUP', () => {
      app.reload().then(
        (report) => app.logger.info(report, 'reload done'),
        (err: unknown) => app.logger.error({ err }, 'reload failed'),
      );
    });
  });
  return endOnceStopped(app.logger, code, exit);
}
