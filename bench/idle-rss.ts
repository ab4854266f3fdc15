/**
 * Idle RSS of `cnfguard run` with the default config (introspection mode, logLevel info, process
 * metrics on, no traffic), and the floor under it module by module (issue 32):
 *
 *   node bench/idle-rss.ts [--runs 3] [--settle 3] [--baseline DIR] [--out FILE] [--quick]
 *
 * Every figure is a fresh process, measured `--settle` seconds after it is up (RSS does not move
 * after the first second: measured up to 20 s), median of `--runs`. RSS is split into anonymous
 * memory (this process's own: heaps, malloc) and file-backed pages (the node binary's code and
 * data it has touched, shared with every process running the same binary). Variants of `run`:
 * the TypeScript sources (type stripping), the build (dist/, built first when stale), the build
 * measured before its start-up GC (src/serve/settle-memory.ts, 1 s after listening), the build
 * under V8/libuv settings an operator can pass on node's command line / UV_THREADPOOL_SIZE, and
 * with --baseline DIR another checkout's `bin/cnfguard.js run` (its build when fresh) in the same
 * run. The floor: a bare Node, then the packages the default config loads added one at a time
 * (each line includes the ones above), then cnfguard's own modules (src/cli/run-proxy.ts): each line one
 * esbuild bundle as `npm run build` makes, measured after the same memory-reducing GC `run` does.
 */
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { build } from 'esbuild';
import { nodeBuiltinsWithoutFacade } from '../scripts/node-builtins.ts';
import { createPki } from '../test/fixtures/stack.ts';
import { writeIdleConfig } from './lib/startup.ts';
import { machineInfo } from './lib/machine.ts';
import { fixed, median, table } from './lib/table.ts';

const ROOT = join(import.meta.dirname, '..');
const { values } = parseArgs({ options: { runs: { type: 'string' }, settle: { type: 'string' }, baseline: { type: 'string' }, out: { type: 'string' }, quick: { type: 'boolean' } } });
// --quick (bench/run.ts --quick): one run each of the sources and the build, the floor's ends only.
const quick = values.quick === true;
const runs = Number(values.runs ?? (quick ? 1 : 3));
// quick: 1.5 s, past run's start-up GC (1 s after listening), so the figure is the default's.
const settleMs = Number(values.settle ?? (quick ? 1.5 : 3)) * 1000;
const out = values.out ?? join(ROOT, '.tmp', 'bench', 'idle-rss.json');

interface Memory {
  rssMb: number;
  anonMb: number;
  fileMb: number;
  upMs?: number;
}

function memoryOf(pid: number): Memory {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) / 1024;
  return { rssMb: kb('VmRSS'), anonMb: kb('RssAnon'), fileMb: kb('RssFile') };
}

/** Starts a process, waits for `ready` on its stdout, lets it settle, reads its memory, stops it. */
async function measure(args: string[], env: NodeJS.ProcessEnv, ready: string, waitMs: number): Promise<Memory> {
  const started = performance.now();
  const child = spawn(process.execPath, args, { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let text = '';
  let err = '';
  child.stderr.on('data', (chunk: Buffer) => (err += chunk.toString()));
  try {
    const upMs = await new Promise<number>((resolve, reject) => {
      child.stdout.on('data', (chunk: Buffer) => {
        text += chunk.toString();
        if (text.includes(ready)) resolve(performance.now() - started);
      });
      child.once('exit', (code) => reject(new Error(`exited ${String(code)} before ${ready}: ${text}${err}`)));
    });
    await new Promise((resolve) => setTimeout(resolve, waitMs));
    return { ...memoryOf(child.pid!), upMs };
  } finally {
    child.kill('SIGTERM');
  }
}

async function medianOf(args: string[], env: NodeJS.ProcessEnv, ready: string, waitMs = settleMs): Promise<Memory & { runs: number[] }> {
  const all: Memory[] = [];
  for (let i = 0; i < runs; i++) all.push(await measure(args, env, ready, waitMs));
  const m = (pick: (x: Memory) => number) => median(all.map(pick));
  return { rssMb: m((x) => x.rssMb), anonMb: m((x) => x.anonMb), fileMb: m((x) => x.fileMb), upMs: m((x) => x.upMs ?? 0), runs: all.map((x) => Math.round(x.rssMb * 10) / 10) };
}

/** The build is stale when any source is newer than dist/.built (the launcher's own rule). */
function newest(path: string): number {
  const stat = statSync(path);
  if (!stat.isDirectory()) return stat.mtimeMs;
  return Math.max(stat.mtimeMs, ...spawnSync('find', [path, '-type', 'f'], { encoding: 'utf8' }).stdout.trim().split('\n').map((f) => statSync(f).mtimeMs));
}
const built = join(ROOT, 'dist', '.built');
if (!existsSync(built) || statSync(built).mtimeMs < Math.max(newest(join(ROOT, 'src')), newest(join(ROOT, 'cmd', 'cnfguard.ts')))) {
  console.log('building dist/ (npm run build)');
  spawnSync(process.execPath, [join(ROOT, 'scripts', 'build.ts')], { stdio: 'inherit' });
}

// Cumulative imports for the floor: each step adds to the ones before it.
const FLOOR: [string, string][] = [
  ['node (bare)', ''],
  ['+ pino', "await import('pino');"],
  ['+ yaml', "await import('yaml');"],
  // As src/config imports it (a namespace import: esbuild drops what is not used, zod's other locales too).
  ['+ zod', "import * as z from 'zod'; z.object({ a: z.string() }).safeParse({});"],
  ['+ prom-client', "const promModule = await import('prom-client'); const prom = promModule.default ?? promModule;"],
  ['+ its default collectors', 'prom.collectDefaultMetrics({ register: new prom.Registry() });'],
  // As src/undici.ts imports them (bundled).
  ["+ undici (Agent, request)", "await import('undici/lib/dispatcher/agent.js'); await import('undici/lib/api/api-request.js');"],
  ['+ http-proxy-3', "await import('http-proxy-3');"],
  ['+ lru-cache', "await import('lru-cache');"],
  ["+ cnfguard's modules (src/cli/run-proxy.ts: all run loads)", `await import(${JSON.stringify(join(ROOT, 'src', 'cli', 'run-proxy.ts'))});`],
];
const FLOOR_DIR = join(ROOT, '.tmp', 'bench', 'idle-floor');
// What `run` does 1 s after listening (src/serve/settle-memory.ts), so the floor compares like with like.
const SETTLE = `const { releaseStartupMemory } = await import(${JSON.stringify(join(ROOT, 'src', 'serve', 'settle-memory.ts'))}); releaseStartupMemory();`;

/** One floor step bundled as scripts/build.ts bundles (ESM, minified, built-ins without their ESM facade), ready to run. */
async function floorBundle(i: number, script: string): Promise<string> {
  mkdirSync(FLOOR_DIR, { recursive: true });
  // src/version.ts reads ../package.json from its chunk, as from dist/chunks/.
  copyFileSync(join(ROOT, 'package.json'), join(FLOOR_DIR, 'package.json'));
  const entry = join(FLOOR_DIR, `step-${i}.ts`);
  writeFileSync(entry, `${script}${SETTLE}\nconsole.log('ready'); setInterval(() => {}, 1000);\n`);
  const outdir = join(FLOOR_DIR, `step-${i}`);
  // Splitting, as the build: what app.ts imports dynamically (tracing) stays out of the entry.
  await build({ entryPoints: { main: entry }, outdir, outExtension: { '.js': '.mjs' }, splitting: true, bundle: true, format: 'esm', platform: 'node', target: 'node24', minify: true, plugins: [nodeBuiltinsWithoutFacade], logLevel: 'warning', banner: { js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" } });
  return join(outdir, 'main.mjs');
}

const pki = await createPki();
try {
  const config = writeIdleConfig(pki);
  const machine = machineInfo(false);
  console.log(`machine: ${machine.cpuModel}, ${machine.cores} cores, Node ${machine.node}, load ${machine.loadavg.join(' ')}; ${runs} runs each, measured ${settleMs / 1000} s after start-up`);
  const bin = join(ROOT, 'bin', 'cnfguard.js');
  const run = ['run', '-c', config];
  const started = '"msg":"cnfguard started"';
  // [name, node arguments, environment, ms to wait after "started" (default --settle)]
  const variants: [string, string[], NodeJS.ProcessEnv, number?][] = [
    ['sources (type stripping)', [bin, ...run], { CNFGUARD_FROM_SOURCE: '1' }],
    ['build (dist/): the default', [bin, ...run], {}],
    ['build, before its start-up GC (0.5 s after listening)', [bin, ...run], {}, 500],
    ...(values.baseline === undefined ? [] : [[`baseline ${values.baseline}: its bin/cnfguard.js`, [join(values.baseline, 'bin', 'cnfguard.js'), ...run], {}] as [string, string[], NodeJS.ProcessEnv]]),
    ['build, --max-semi-space-size=2', ['--max-semi-space-size=2', bin, ...run], {}],
    ['build, --max-semi-space-size=1', ['--max-semi-space-size=1', bin, ...run], {}],
    ['build, --optimize-for-size', ['--optimize-for-size', bin, ...run], {}],
    ['build, --v8-pool-size=1', ['--v8-pool-size=1', bin, ...run], {}],
    ['build, UV_THREADPOOL_SIZE=1', [bin, ...run], { UV_THREADPOOL_SIZE: '1' }],
    // Start-up code stays interpreted (its calls do not reach these counts); hot code is optimised after 10x the calls.
    ['build, optimising tiers at 10x the calls', ['--invocation-count-for-maglev=4000', '--invocation-count-for-maglev-osr=1000', '--invocation-count-for-turbofan=30000', bin, ...run], {}],
    // Not an option (no optimised code at all): what the optimising compilers' pages of the binary weigh.
    ['build, --no-maglev --no-turbofan (never optimise)', ['--no-maglev', '--no-turbofan', bin, ...run], {}],
  ];
  const rows: { name: string; memory: Memory & { runs: number[] } }[] = [];
  if (quick) variants.splice(2);
  for (const [name, args, env, waitMs] of variants) rows.push({ name: `run: ${name}`, memory: await medianOf(args, env, started, waitMs) });
  const floor: { name: string; memory: Memory & { runs: number[] } }[] = [];
  let script = '';
  for (const [i, [name, step]] of FLOOR.entries()) {
    script += `${step}\n`;
    if (quick && i > 0 && i < FLOOR.length - 1) continue;
    floor.push({ name, memory: await medianOf(['--expose-gc', await floorBundle(i, script)], {}, 'ready') });
  }
  const print = (list: typeof rows, up: boolean) =>
    table(
      ['', 'RSS MB', 'anon MB', 'file MB', ...(up ? ['up ms'] : []), 'runs'],
      list.map(({ name, memory }) => [name, fixed(memory.rssMb, 1), fixed(memory.anonMb, 1), fixed(memory.fileMb, 1), ...(up ? [fixed(memory.upMs, 0)] : []), memory.runs.join(' ')]),
    );
  console.log(`\nidle \`cnfguard run\`, default config (64 MiB = 67.1 MB; up = exec to "cnfguard started", with the compile cache the launcher keeps):\n${print(rows, true)}`);
  console.log(`\nthe floor, one package at a time in a bare Node (cumulative, each line one minified bundle, after the start-up GC):\n${print(floor, false)}`);
  mkdirSync(join(out, '..'), { recursive: true });
  writeFileSync(out, `${JSON.stringify({ at: new Date().toISOString(), machine, runs, settleMs, run: rows, floor }, null, 2)}\n`);
  console.log(`\nwritten to ${out}`);
} finally {
  await pki.cleanup();
}
