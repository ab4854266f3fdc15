#!/usr/bin/env node
// Launcher: cnfguard's sources are TypeScript run by Node 24's built-in type stripping.
// On an older Node (a machine's system Node), re-run under the Node 24 the project pins.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const entry = join(root, 'cmd', 'cnfguard.ts');
const major = Number(process.versions.node.split('.')[0]);

if (major >= 24) {
  await import(entry);
} else {
  const pinned = join(root, 'node_modules', 'node', 'bin', 'node');
  if (!existsSync(pinned)) {
    console.error(`cnfguard needs Node.js 24 or newer (this is ${process.version}); run "npm install" in ${root}`);
    process.exit(2);
  }
  const child = spawn(pinned, [entry, ...process.argv.slice(2)], { stdio: 'inherit' });
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(signal, () => child.kill(signal));
  child.on('exit', (code, signal) => (signal ? process.kill(process.pid, signal) : process.exit(code ?? 1)));
}
