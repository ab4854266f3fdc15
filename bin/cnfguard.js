#!/usr/bin/env node
// Launcher. cnfguard's sources are TypeScript run by Node 24's built-in type stripping; a build
// (`npm run build`: scripts/build.ts bundles cmd/cnfguard.ts with its libraries into dist/) is run
// instead when it is there and no source is newer: the same code, in less memory and start-up work.
// CNFGUARD_FROM_SOURCE=1 runs the sources whatever dist/ holds (the tests do).
// On an older Node (a machine's system Node), re-run under the Node 24 the project pins.
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import module from 'node:module';
import { constants } from 'node:os';
import { clearInterval, setInterval } from 'node:timers';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const major = Number(process.versions.node.split('.')[0]);

/** The newest modification time under `path` (a file or a folder), in ms. */
function newest(path) {
  const stat = statSync(path, { throwIfNoEntry: false });
  if (stat === undefined) return 0;
  if (!stat.isDirectory()) return stat.mtimeMs;
  let latest = stat.mtimeMs;
  // Not path.join: its normalising loop, run for every file, is start-up's hottest code and gets
  // V8's optimising compiler (~5 MB of the node binary paged in for good, issue 32).
  for (const name of readdirSync(path)) latest = Math.max(latest, newest(`${path}/${name}`));
  return latest;
}

/** dist/cmd/cnfguard.js when the build is complete and newer than every source it came from. */
function builtEntry() {
  if (process.env.CNFGUARD_FROM_SOURCE === '1') return undefined;
  const built = join(root, 'dist', 'cmd', 'cnfguard.js');
  // `npm run build` writes dist/.built once everything else is written: its time is the build's.
  const stamp = statSync(join(root, 'dist', '.built'), { throwIfNoEntry: false });
  if (stamp === undefined || !existsSync(built)) return undefined;
  const sources = Math.max(newest(join(root, 'src')), newest(join(root, 'cmd', 'cnfguard.ts')), newest(join(root, 'package.json')));
  return sources <= stamp.mtimeMs ? built : undefined;
}

/**
 * Whether process `pid` has a handler for `signal` now, from Linux's /proc/PID/status (SigCgt);
 * undefined where that cannot be read (another OS, or the process is gone).
 */
function catches(pid, signal) {
  let status;
  try {
    status = readFileSync(`/proc/${pid}/status`, 'latin1');
  } catch {
    return undefined;
  }
  const mask = /^SigCgt:\s*([0-9a-f]+)$/m.exec(status)?.[1];
  if (mask === undefined) return undefined;
  return ((BigInt(`0x${mask}`) >> BigInt(constants.signals[signal] - 1)) & 1n) === 1n;
}

/** How long a stop signal waits for the server to take its own copy before it is relayed. */
const OWN_COPY_WINDOW_MS = 1000;

/**
 * The launcher's signal relay (a Node older than 24 runs the server as `child`). SIGHUP (reload)
 * is passed on at once. SIGINT and SIGTERM must reach the server once per signal sent: it drains
 * on the first and ends at once on a second. A signal sent to a process group (a terminal's
 * Ctrl-C, `kill -- -PGID`) or to every process one by one (systemd's default
 * KillMode=control-group, pkill) reaches the server directly as well as the launcher, and that
 * copy must not be relayed. The server drops its SIGINT/SIGTERM handlers once it starts draining,
 * which Linux shows in /proc/PID/status (SigCgt): a stop signal is relayed only when the server
 * still catches it OWN_COPY_WINDOW_MS later (it got no copy of its own), or when it was not
 * listening yet (not catching it then means starting, not draining). Where /proc cannot be read,
 * stop signals are relayed at once (the child runs detached there). After a first stop, a further
 * SIGINT/SIGTERM to the launcher is relayed at once: the operator's "end it now".
 */
function relayTo(child) {
  // Whether the server was seen catching SIGTERM (listening): until then, a server that does not
  // catch it is starting (its default action ends it), not draining.
  let listening = false;
  const watchStart = setInterval(() => {
    const now = catches(child.pid, 'SIGTERM');
    if (now === false) return;
    listening = now === true;
    clearInterval(watchStart);
  }, 50);
  watchStart.unref();
  let stopped = false; // a stop signal reached the server (relayed or its own)
  let waiting; // the timer of a stop signal waiting for the server to take its own copy
  return (signal) => {
    if (signal === 'SIGHUP' || stopped) return void child.kill(signal);
    if (waiting !== undefined) {
      // A second stop while the first waits: the first was the launcher's alone; pass one on now.
      clearInterval(waiting);
      waiting = undefined;
      stopped = true;
      return void child.kill(signal);
    }
    const before = catches(child.pid, signal);
    if (before !== true) {
      stopped = true;
      // Not catching it while listening: already draining on its own copy. Starting, or no /proc: pass it on.
      if (before === undefined || !listening) child.kill(signal);
      return;
    }
    const since = Date.now();
    waiting = setInterval(() => {
      const now = catches(child.pid, signal);
      if (now === true && Date.now() - since < OWN_COPY_WINDOW_MS) return;
      clearInterval(waiting);
      waiting = undefined;
      stopped = true;
      if (now === true) child.kill(signal);
    }, 20);
  };
}

const entry = builtEntry() ?? join(root, 'cmd', 'cnfguard.ts');

/**
 * `run` wants V8's gc() once, after listening, to give back what start-up grew (~9 MB of idle RSS,
 * src/serve/settle-memory.ts); Node offers it only with --expose-gc on its command line. So a `run`
 * without it replaces this process (same pid, exec) by node with it running the entry chosen above
 * (not this launcher again: its walk of src/ would run twice). Not for the other commands (they
 * exit), nor when NODE_OPTIONS already chooses; CNFGUARD_SETTLE_MEMORY=0 turns it off.
 */
const wantsGc = process.argv[2] === 'run' && process.env.CNFGUARD_SETTLE_MEMORY !== '0';

function execWithGc() {
  if (!wantsGc || typeof process.execve !== 'function') return;
  if (process.execArgv.includes('--expose-gc') || (process.env.NODE_OPTIONS ?? '').includes('--expose-gc')) return;
  process.execve(process.execPath, [process.execPath, '--expose-gc', ...process.execArgv, entry, ...process.argv.slice(2)], process.env);
}

if (major >= 24) {
  execWithGc();
  // Keep compiled (and type-stripped) code on disk between runs: --help and check start in a
  // third of the time. NODE_COMPILE_CACHE picks the folder (default: the OS temp dir), and
  // NODE_DISABLE_COMPILE_CACHE=1 turns it off; an unwritable folder only costs the speed-up.
  module.enableCompileCache?.();
  await import(entry);
} else {
  const pinned = join(root, 'node_modules', 'node', 'bin', 'node');
  if (!existsSync(pinned)) {
    console.error(`cnfguard needs Node.js 24 or newer (this is ${process.version}); run "npm install" in ${root}`);
    process.exit(2);
  }
  // The cluster primary (workers > 1) watches this pid: it stops once the launcher was killed (src/cluster.ts watchLauncher).
  // Where /proc shows which signals a process catches (Linux), the server stays in the launcher's
  // process group (Ctrl-Z, `kill -9 -- -PGID` take both) and relayTo skips the copies it got
  // directly; elsewhere it gets a session and group of its own (`detached`), so that a group
  // signal (a terminal's Ctrl-C) reaches it only through the relay.
  const detached = catches(process.pid, 'SIGINT') === undefined;
  const child = spawn(pinned, [...(wantsGc ? ['--expose-gc'] : []), entry, ...process.argv.slice(2)], { stdio: 'inherit', detached, env: { ...process.env, CNFGUARD_LAUNCHER_PID: String(process.pid) } });
  const relayed = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  const relay = relayTo(child);
  for (const signal of relayed) process.on(signal, relay);
  // Mirror the server's fate, so a supervisor (systemd Restart=on-failure) sees what happened.
  child.on('exit', (code, signal) => {
    if (signal === null) process.exit(code ?? 1);
    // Our relay handlers would catch the re-raised signal and let the launcher exit 0.
    for (const name of relayed) process.removeListener(name, relay);
    // Should the signal be ignored here (nohup), exit as a shell reports a signal death.
    process.exitCode = 128 + (constants.signals[signal] ?? 0);
    process.kill(process.pid, signal);
  });
}
