#!/usr/bin/env node
/**
 * cnfguard's command line: argv -> command, exit codes. Each command is a module under src/cli/
 * (summary, usage, run); this file only finds it.
 * Exit codes: 0 ok, 2 bad usage, bad config or unreadable file, 1 anything unexpected.
 *
 * Start-up time: a command module loads only Node built-ins statically and imports what it needs
 * inside run (the config loader for check, the app for run, node-forge for dev-certs), so `--help`,
 * `version` and `check` do not pay for the proxy; keep new imports inside the commands.
 */
import cluster from 'node:cluster';
import module from 'node:module';
// Static: every command needs them, and each dynamic import is one more chunk of the build to load.
import { UsageError, optionsOf, type Command } from '../src/cli/command.ts';
import { suggestion } from '../src/config/did-you-mean.ts';

/** The commands, in the overview's order; each module is loaded only when needed. */
const COMMANDS: Record<string, () => Promise<Command>> = {
  run: async () => (await import('../src/cli/run.ts')).run,
  check: async () => (await import('../src/cli/check.ts')).check,
  init: async () => (await import('../src/cli/init.ts')).init,
  thumbprint: async () => (await import('../src/cli/thumbprint.ts')).thumbprint,
  'dev-certs': async () => (await import('../src/cli/dev-certs.ts')).devCerts,
  explain: async () => (await import('../src/cli/explain.ts')).explain,
  schema: async () => (await import('../src/cli/schema.ts')).schema,
  version: async () => (await import('../src/cli/version.ts')).version,
};

async function usage(): Promise<string> {
  const lines = await Promise.all(Object.entries(COMMANDS).map(async ([name, load]) => `  ${name.padEnd(12)}${(await load()).summary}`));
  return `usage: cnfguard COMMAND [options]

${lines.join('\n')}
  help [COMMAND]  this text, or a command's (also COMMAND --help)

  cnfguard init DIR                 (a starter config and dev certificates)
  cnfguard run --config FILE        (or -c FILE, or CNFGUARD_CONFIG=FILE cnfguard run)
  cnfguard check --config FILE
  cnfguard thumbprint FILE.pem
  cnfguard dev-certs DIR [--key-mode 0644]
`;
}

function commandOf(name: string): (() => Promise<Command>) | undefined {
  return Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
}

async function main(argv: string[]): Promise<number> {
  const unknown = (name: string) => new UsageError(`unknown command ${JSON.stringify(name)}${suggestion(name, Object.keys(COMMANDS))}`);
  const [name, ...args] = argv;
  let command: Command | undefined;
  try {
    switch (name) {
      case undefined:
        process.stdout.write(await usage());
        return 2;
      case 'help':
      case '--help':
      case '-h': {
        const topic = args[0];
        if (topic === undefined) {
          process.stdout.write(await usage());
          return 0;
        }
        const load = commandOf(topic);
        if (load === undefined) throw unknown(topic);
        process.stdout.write((await load()).usage);
        return 0;
      }
      case '--version':
      case '-V':
        process.stdout.write(await (await import('../src/cli/version.ts')).versionLine());
        return 0;
    }
    const load = commandOf(name);
    if (load === undefined) throw unknown(name);
    command = await load();
    // `help`, `--help` or `-h` anywhere in a command's arguments asks for its usage.
    if (args.some((arg) => arg === '--help' || arg === '-h') || args[0] === 'help') {
      process.stdout.write(command.usage);
      return 0;
    }
    return await command.run(args);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (err instanceof UsageError || code?.startsWith('ERR_PARSE_ARGS') === true) {
      const topic = err instanceof UsageError ? err.command : name;
      const load = topic === undefined ? undefined : commandOf(topic);
      const text = load === undefined ? await usage() : (await load()).usage;
      let message = (err as Error).message;
      const option = code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' ? /'(--?[^']+)'/.exec(message)?.[1] : undefined;
      if (option !== undefined) message = `unknown option ${option}${suggestion(option, optionsOf(text))}`;
      process.stderr.write(`cnfguard: ${message}\n${text}`);
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
