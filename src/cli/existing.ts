import { existsSync } from 'node:fs';

/**
 * The refusal of a command that would replace files (dev-certs, init): the files that exist, named,
 * unless --force. A re-run must never silently replace a CA and every key signed by it.
 */
export function refuseExisting(command: string, files: readonly string[], force: boolean): string | undefined {
  if (force) return undefined;
  const existing = files.filter((file) => existsSync(file));
  if (existing.length === 0) return undefined;
  const list = existing.join(', ');
  return `${command}: ${existing.length === 1 ? `${list} exists` : `these files exist: ${list}`}; nothing was written (--force replaces ${existing.length === 1 ? 'it' : 'them'})`;
}
