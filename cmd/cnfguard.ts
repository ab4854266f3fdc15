#!/usr/bin/env node
/**
 * cnfguard's command line: argv -> subcommand, signals, exit codes. Nothing else lives here.
 *   run --config FILE | check --config FILE | thumbprint FILE.pem | dev-certs DIR
 * Exit codes: 0 ok, 2 bad usage, bad config or unreadable file, 1 anything unexpected.
 */
import cluster from 'node:cluster';
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { createApp } from '../src/app.ts';
import { announceWorker, runPrimary, workerCount } from '../src/cluster.ts';
import { ConfigError, effectiveConfigYaml, loadConfigFile, type LoadedConfig } from '../src/config/load.ts';
import { installFatalHandlers } from '../src/fatal.ts';
import { createLogger } from '../src/log.ts';
import { splitPemCertificates, thumbprintS256 } from '../src/tls/certificates.ts';
import { parseKeyMode, writeDevCertificates } from '../src/tls/dev-certs.ts';

const USAGE = `usage:
  cnfguard run --config FILE        run the proxy (or CNFGUARD_CONFIG=FILE cnfguard run)
  cnfguard check --config FILE      validate the config and print it, secrets masked
  cnfguard thumbprint FILE.pem      print the certificate's x5t#S256
  cnfguard dev-certs DIR [--key-mode 0644]
                                    write a dev CA (ca.*), a localhost server pair (tls.crt, tls.key)
                                    and two client pairs; keys 0600 unless --key-mode
`;

class UsageError extends Error {}

function configPath(args: string[]): string {
  const { values } = parseArgs({ args, options: { config: { type: 'string', short: 'c' } }, strict: true });
  const file = values.config ?? process.env.CNFGUARD_CONFIG;
  if (file === undefined || file === '') throw new UsageError('--config FILE (or CNFGUARD_CONFIG) is required');
  return file;
}

function onePositional(args: string[], what: string): string {
  const { positionals } = parseArgs({ args, allowPositionals: true, strict: true });
  if (positionals.length !== 1 || positionals[0] === undefined) throw new UsageError(`expected ${what}`);
  return positionals[0];
}

async function run(args: string[]): Promise<number> {
  const file = configPath(args);
  let config: LoadedConfig;
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
  if (cluster.isPrimary && workerCount(config.settings.workers) > 1) {
    const logger = createLogger(config.settings.logLevel);
    installFatalHandlers(logger, exit);
    return runPrimary(config, logger);
  }
  const app = createApp(config, { admin: !cluster.isWorker });
  // In a cluster worker too: the primary starts another in its place.
  installFatalHandlers(app.logger, exit);
  try {
    const started = await app.start();
    if (cluster.isWorker) announceWorker(app.metrics, started.url);
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

function check(args: string[]): number {
  const file = configPath(args);
  try {
    process.stdout.write(effectiveConfigYaml(loadConfigFile(file)));
    return 0;
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`cnfguard: ${err.message}\n`);
    return 2;
  }
}

function thumbprint(args: string[]): number {
  const file = onePositional(args, 'one certificate file (PEM)');
  let pem: string;
  try {
    pem = readFileSync(file, 'utf8');
  } catch (err) {
    process.stderr.write(`cnfguard: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}\n`);
    return 2;
  }
  const first = splitPemCertificates(pem)[0];
  if (first === undefined) {
    process.stderr.write(`cnfguard: no PEM certificate in ${file}\n`);
    return 2;
  }
  try {
    process.stdout.write(`${thumbprintS256(new X509Certificate(first).raw)}\n`);
    return 0;
  } catch (err) {
    process.stderr.write(`cnfguard: unparseable certificate in ${file}: ${(err as Error).message}\n`);
    return 2;
  }
}

async function devCerts(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, strict: true, options: { 'key-mode': { type: 'string' } } });
  if (positionals.length !== 1 || positionals[0] === undefined) throw new UsageError('expected a directory');
  let keyMode: number | undefined;
  try {
    keyMode = values['key-mode'] === undefined ? undefined : parseKeyMode(values['key-mode']);
  } catch (err) {
    throw new UsageError(`--key-mode: ${(err as Error).message}`);
  }
  const written = await writeDevCertificates(positionals[0], { keyMode });
  for (const [name, path] of Object.entries(written)) process.stdout.write(`${name.padEnd(12)} ${path}\n`);
  return 0;
}

async function main(argv: string[]): Promise<number> {
  const [command, ...args] = argv;
  try {
    switch (command) {
      case 'run':
        return await run(args);
      case 'check':
        return check(args);
      case 'thumbprint':
        return thumbprint(args);
      case 'dev-certs':
        return await devCerts(args);
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        process.stdout.write(USAGE);
        return command === undefined ? 2 : 0;
      default:
        throw new UsageError(`unknown command ${JSON.stringify(command)}`);
    }
  } catch (err) {
    if (err instanceof UsageError || (err as NodeJS.ErrnoException).code?.startsWith('ERR_PARSE_ARGS') === true) {
      process.stderr.write(`cnfguard: ${(err as Error).message}\n${USAGE}`);
      return 2;
    }
    process.stderr.write(`cnfguard: ${(err as Error).stack ?? String(err)}\n`);
    return 1;
  }
}

process.exitCode = await main(process.argv.slice(2));
// A cluster worker's IPC channel keeps its event loop alive after the app stopped; letting go of
// it lets the worker exit now instead of when the primary's kill deadline comes.
if (cluster.isWorker) cluster.worker?.disconnect();
