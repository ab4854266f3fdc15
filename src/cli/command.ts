/**
 * What every command module (src/cli/*.ts) exports, and the small helpers they share. A command
 * module loads only Node built-ins and this file statically; whatever else it needs it imports
 * inside `run`, so `--help`, `version` and `check` stay fast.
 */
import { parseArgs } from 'node:util';

export interface Command {
  /** One line in the overview. */
  summary: string;
  /** The command's own `--help`; its `--option` names are also what "did you mean" offers. */
  usage: string;
  run(args: string[]): Promise<number> | number;
}

/** Bad usage: exit 2 with the message and the command's usage. */
export class UsageError extends Error {
  readonly command: string | undefined;
  constructor(message: string, command?: string) {
    super(message);
    this.command = command;
  }
}

export const CONFIG_USAGE = `  -c, --config FILE   the config file (YAML); default: the CNFGUARD_CONFIG environment variable.
                      Relative file paths in it are read from the config file's folder.`;

export function configPath(command: string, args: string[]): string {
  const { values } = parseArgs({ args, options: { config: { type: 'string', short: 'c' } }, strict: true });
  const file = values.config ?? process.env.CNFGUARD_CONFIG;
  if (file === undefined || file === '') throw new UsageError('--config FILE (or CNFGUARD_CONFIG) is required', command);
  return file;
}

export function onePositional(command: string, args: string[], what: string): string {
  const { positionals } = parseArgs({ args, allowPositionals: true, strict: true });
  if (positionals.length !== 1 || positionals[0] === undefined) throw new UsageError(`expected ${what}`, command);
  return positionals[0];
}

/** The `--long` options a usage text names. */
export function optionsOf(usage: string): string[] {
  return [...new Set(usage.match(/--[a-z][a-z-]*/g) ?? [])];
}
