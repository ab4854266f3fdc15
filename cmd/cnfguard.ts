#!/usr/bin/env node
/**
 * cnfguard's command line: argv -> subcommand, signals, exit codes. Nothing else lives here.
 *   run --config FILE | check --config FILE | thumbprint FILE.pem | dev-certs DIR | version
 * Exit codes: 0 ok, 2 bad usage, bad config or unreadable file, 1 anything unexpected.
 *
 * Start-up time: only Node built-ins load statically. Each command imports what it needs
 * (the config loader for check, the app for run, node-forge for dev-certs), so `--help`,
 * `version` and `check` do not pay for the proxy; keep new imports inside the commands.
 */
import cluster from 'node:cluster';
import { readFileSync } from 'node:fs';
import module from 'node:module';
import { parseArgs } from 'node:util';

interface Command {
  /** One line in the overview. */
  summary: string;
  /** The command's own `--help`. */
  usage: string;
  run(args: string[]): Promise<number> | number;
}

class UsageError extends Error {
  readonly command: string | undefined;
  constructor(message: string, command?: string) {
    super(message);
    this.command = command;
  }
}

const CONFIG_USAGE = `  -c, --config FILE   the config file (YAML); default: the CNFGUARD_CONFIG environment variable.
                      Relative file paths in it are read from the config file's folder.`;

/** `help`, `--help` or `-h` anywhere in a command's arguments asks for its usage. */
function wantsHelp(args: string[]): boolean {
  return args.some((arg) => arg === '--help' || arg === '-h') || args[0] === 'help';
}

function configPath(command: string, args: string[]): string {
  const { values } = parseArgs({ args, options: { config: { type: 'string', short: 'c' } }, strict: true });
  const file = values.config ?? process.env.CNFGUARD_CONFIG;
  if (file === undefined || file === '') throw new UsageError('--config FILE (or CNFGUARD_CONFIG) is required', command);
  return file;
}

function onePositional(command: string, args: string[], what: string): string {
  const { positionals } = parseArgs({ args, allowPositionals: true, strict: true });
  if (positionals.length !== 1 || positionals[0] === undefined) throw new UsageError(`expected ${what}`, command);
  return positionals[0];
}

async function version(): Promise<string> {
  // src/version.ts reads package.json, as the start-up line and build info do; it loads only node:fs.
  const { NODE_VERSION, VERSION } = await import('../src/version.ts');
  return `cnfguard ${VERSION} (Node.js ${NODE_VERSION})\n`;
}

async function run(args: string[]): Promise<number> {
  const file = configPath('run', args);
  const [{ ConfigError, loadConfigFile, warningsOf }, { createLogger }] = await Promise.all([import('../src/config/load.ts'), import('../src/log.ts')]);
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
  const { installFatalHandlers } = await import('../src/fatal.ts');
  const { announceWorker, runPrimary, workerCount } = await import('../src/cluster.ts');
  if (cluster.isPrimary && workerCount(config.settings.workers) > 1) {
    const logger = createLogger(config.settings.logLevel);
    installFatalHandlers(logger, exit);
    warn(logger);
    return runPrimary(config, logger);
  }
  const { createApp } = await import('../src/app.ts');
  // With workers, the first one probes the AS: one warning, not one per worker.
  const app = createApp(config, { admin: !cluster.isWorker, probeIntrospection: !cluster.isWorker || cluster.worker?.id === 1 });
  // In a cluster worker too: the primary starts another in its place.
  installFatalHandlers(app.logger, exit);
  warn(app.logger);
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

async function check(args: string[]): Promise<number> {
  const file = configPath('check', args);
  const { ConfigError, effectiveConfigYaml, loadConfigFile, warningsOf } = await import('../src/config/load.ts');
  try {
    const config = loadConfigFile(file);
    process.stdout.write(effectiveConfigYaml(config));
    for (const w of warningsOf(config)) process.stderr.write(`cnfguard: warning: ${w.path ? `${w.path}: ` : ''}${w.message}\n`);
    return 0;
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`cnfguard: ${err.message}\n`);
    return 2;
  }
}

async function thumbprint(args: string[]): Promise<number> {
  const file = onePositional('thumbprint', args, 'one certificate file (PEM)');
  let pem: string;
  try {
    pem = readFileSync(file, 'utf8');
  } catch (err) {
    process.stderr.write(`cnfguard: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}\n`);
    return 2;
  }
  const [{ X509Certificate }, { splitPemCertificates, thumbprintS256 }] = await Promise.all([import('node:crypto'), import('../src/tls/certificates.ts')]);
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
  if (positionals.length !== 1 || positionals[0] === undefined) throw new UsageError('expected a directory', 'dev-certs');
  // node-forge is big: only this command loads it.
  const { parseKeyMode, writeDevCertificates } = await import('../src/tls/dev-certs.ts');
  let keyMode: number | undefined;
  try {
    keyMode = values['key-mode'] === undefined ? undefined : parseKeyMode(values['key-mode']);
  } catch (err) {
    throw new UsageError(`--key-mode: ${(err as Error).message}`, 'dev-certs');
  }
  const written = await writeDevCertificates(positionals[0], { keyMode });
  for (const [name, path] of Object.entries(written)) process.stdout.write(`${name.padEnd(12)} ${path}\n`);
  return 0;
}

const COMMANDS: Record<string, Command> = {
  run: {
    summary: 'run the proxy',
    usage: `usage: cnfguard run [--config FILE]

Runs the proxy until SIGTERM or SIGINT (a drain; a second signal ends it at once). SIGHUP
reloads the certificates and the config. Logs are JSON lines on stdout.

${CONFIG_USAGE}
  -h, --help          this text
`,
    run,
  },
  check: {
    summary: 'validate the config and print it, secrets masked',
    usage: `usage: cnfguard check [--config FILE]

Validates the config and the files it names as \`run\` would, prints the effective config with
secrets masked and exits 0; warnings (an http:// introspection URL, binding off everywhere) go
to stderr. On error, prints every problem with its YAML path and exits 2.

${CONFIG_USAGE}
  -h, --help          this text
`,
    run: check,
  },
  thumbprint: {
    summary: "print a certificate's x5t#S256",
    usage: `usage: cnfguard thumbprint FILE.pem

Prints the x5t#S256 (RFC 8705: base64url SHA-256 of the DER, no padding) of the first
certificate in FILE.pem. A file named help: cnfguard thumbprint ./help
`,
    run: thumbprint,
  },
  'dev-certs': {
    summary: 'write a dev CA, a localhost server pair (tls.crt, tls.key) and two client pairs',
    usage: `usage: cnfguard dev-certs DIR [--key-mode MODE]

Writes into DIR (created if missing) a development CA (ca.crt, ca.key), a server pair for
localhost and 127.0.0.1 (tls.crt, tls.key) and two client pairs (client1, client2), PEM, and
prints the files it wrote. For development only. A directory named help: ./help

  --key-mode MODE     the private keys' file mode (default 0600); 0644 lets a container running
                      as another uid (the image's 10001) read a bind-mounted directory
  -h, --help          this text
`,
    run: devCerts,
  },
  explain: {
    summary: 'run the pipeline once on a token (live AS) and say why it is allowed or refused',
    usage: `usage: cnfguard explain -c FILE (--token T | --token-file F) [--cert PEM] [--method M] [--url URL] [--dpop PROOF] [--header 'N: V']... [--json]
Exit 0 allowed, 1 refused, 2 could not evaluate. Options: docs/explain.md (or any usage error).
`,
    run: async (args) => (await import('../src/cli/explain.ts')).explainCommand(args),
  },
  version: {
    summary: 'print the version and the Node.js version (also --version)',
    usage: `usage: cnfguard version    (or cnfguard --version)

Prints cnfguard's version and the Node.js version it runs on.
`,
    run: async (args) => {
      if (args.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(args[0])}`, 'version');
      process.stdout.write(await version());
      return 0;
    },
  },
};

const USAGE = `usage: cnfguard COMMAND [options]

${Object.entries(COMMANDS)
  .map(([name, c]) => `  ${name.padEnd(12)}${c.summary}`)
  .join('\n')}
  help [COMMAND]  this text, or a command's (also COMMAND --help)

  cnfguard run --config FILE        (or -c FILE, or CNFGUARD_CONFIG=FILE cnfguard run)
  cnfguard check --config FILE
  cnfguard thumbprint FILE.pem
  cnfguard dev-certs DIR [--key-mode 0644]
`;

async function main(argv: string[]): Promise<number> {
  const [name, ...args] = argv;
  try {
    switch (name) {
      case undefined:
        process.stdout.write(USAGE);
        return 2;
      case 'help':
      case '--help':
      case '-h': {
        const topic = args[0];
        if (topic === undefined) {
          process.stdout.write(USAGE);
          return 0;
        }
        const command = COMMANDS[topic];
        if (command === undefined) throw new UsageError(`unknown command ${JSON.stringify(topic)}`);
        process.stdout.write(command.usage);
        return 0;
      }
      case '--version':
      case '-V':
        process.stdout.write(await version());
        return 0;
    }
    const command = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
    if (command === undefined) throw new UsageError(`unknown command ${JSON.stringify(name)}`);
    if (wantsHelp(args)) {
      process.stdout.write(command.usage);
      return 0;
    }
    return await command.run(args);
  } catch (err) {
    const parseError = (err as NodeJS.ErrnoException).code?.startsWith('ERR_PARSE_ARGS') === true;
    if (err instanceof UsageError || parseError) {
      const topic = err instanceof UsageError ? err.command : name;
      const usage = topic !== undefined && Object.hasOwn(COMMANDS, topic) ? (COMMANDS[topic] as Command).usage : USAGE;
      process.stderr.write(`cnfguard: ${(err as Error).message}\n${usage}`);
      return 2;
    }
    process.stderr.write(`cnfguard: ${(err as Error).stack ?? String(err)}\n`);
    return 1;
  }
}

// The lazily imported modules too when started without bin/cnfguard.js (npm run cnfguard, the
// bench, the launcher's relay on an older Node); a second call only reports ALREADY_ENABLED.
module.enableCompileCache();
process.exitCode = await main(process.argv.slice(2));
// A cluster worker's IPC channel keeps its event loop alive after the app stopped; letting go of
// it lets the worker exit now instead of when the primary's kill deadline comes.
if (cluster.isWorker) cluster.worker?.disconnect();
