import cluster from 'node:cluster';
import { CONFIG_USAGE, configPath, type Command } from './command.ts';

async function runProxy(args: string[]): Promise<number> {
  const file = configPath('run', args);
  const [{ ConfigError, loadConfigFile, warningsOf }, { createLogger }] = await Promise.all([import('../config/load.ts'), import('../log.ts')]);
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
  const { installFatalHandlers } = await import('../fatal.ts');
  const { announceWorker, runPrimary, workerCount } = await import('../cluster.ts');
  if (cluster.isPrimary && workerCount(config.settings.workers) > 1) {
    const logger = createLogger(config.settings.logLevel);
    installFatalHandlers(logger, exit);
    warn(logger);
    (await import('../serve/settle-memory.ts')).settleMemoryAfterStart(logger);
    return runPrimary(config, logger);
  }
  const { createApp } = await import('../app.ts');
  // With workers, the first one probes the AS: one warning, not one per worker.
  const app = createApp(config, { admin: !cluster.isWorker, probeIntrospection: !cluster.isWorker || cluster.worker?.id === 1 });
  // In a cluster worker too: the primary starts another in its place.
  installFatalHandlers(app.logger, exit);
  warn(app.logger);
  try {
    const started = await app.start();
    if (cluster.isWorker) announceWorker(app.metrics, started.url);
    // Give back what start-up grew and no longer uses (~10 MB idle RSS; serve/settle-memory.ts).
    (await import('../serve/settle-memory.ts')).settleMemoryAfterStart(app.logger);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    app.logger.fatal({ code }, `cannot start: ${(err as Error).message}`);
    process.stderr.write(`cnfguard: cannot start: ${(err as Error).message}\n`);
    return 2;
  }
  return new Promise((resolve) => {
    let stopping = false;
    const stop = (signal: NodeJS.Signals) => {
      if (stopping) return;
      stopping = true;
      // A second SIGTERM or SIGINT, now unhandled, ends the process at once (an operator's way out).
      process.off('SIGTERM', stop);
      process.off('SIGINT', stop);
      app.logger.info({ signal }, 'shutting down');
      app.stop().then(
        () => resolve(0),
        (err: unknown) => {
          app.logger.error({ err }, 'shutdown failed');
          resolve(1);
        },
      );
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
}

export const run: Command = {
  summary: 'run the proxy',
  usage: `usage: cnfguard run [--config FILE]

Runs the proxy until SIGTERM or SIGINT (a drain; a second signal ends it at once). SIGHUP
reloads the certificates and the config. Logs are JSON lines on stdout.

${CONFIG_USAGE}
  -h, --help          this text
`,
  run: runProxy,
};
