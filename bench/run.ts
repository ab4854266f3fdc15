/**
 * cnfguard's benchmark (issue 7), one run end to end:
 *
 *   node bench/run.ts [--quick] [--rounds 3] [--duration 5] [--warmup 3] [--connections 32]
 *                     [--targets cnfguard,cnfguard-info,bare-node,node-static,nginx] [--no-nginx]
 *                     [--no-pin] [--skip miss,handshake,memory] [--out FILE]
 *   node bench/run.ts --profile [--profile-target cnfguard-info] [--profile-seconds 10]
 *
 * With the cnfguard target, two HTTP/2 phases follow the HTTP/1.1 load (issue 15; --skip h2,grpc):
 * h2 cache-hit throughput of cnfguard against a bare Node h2 forwarder, and gRPC unary calls per
 * second through cnfguard (an upstreamHttp2 route) against the same calls direct to the upstream.
 * Then, when nginx is installed, the decisions phase (issue 16; --skip decisions): nginx terminating
 * mTLS with auth_request to cnfguard's decision API (examples/decision-api/nginx.conf), against
 * cnfguard as the proxy, against nginx alone, all three loaded in turn round after round.
 *
 * It starts a fast upstream, a real authorization server (oidc-provider), cnfguard (in a child
 * process, through createApp and the real config loader), a bare Node 24 mTLS forwarder (undici,
 * no checks) and nginx as an mTLS-terminating proxy when installed. With taskset and two cores, the
 * servers under test run on CPU 0 and everything else (this load generator, the upstream, the AS)
 * on CPU 1. Each target is warmed up, then loaded in turn, round after round (A B A B ...), with the
 * same client certificate and token over keep-alive mTLS connections. Then: cache-miss latency
 * (a new token per request), new-connection rate (full and resumed handshakes), and memory with
 * 100k cached tokens. The table is printed and written as JSON (bench/results/latest.json).
 *
 * Every setting also reads an environment variable: BENCH_ROUNDS, BENCH_DURATION, BENCH_WARMUP,
 * BENCH_CONNECTIONS, BENCH_TARGETS, BENCH_PIN=0, NGINX_BIN.
 */
import { execFile } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, promisify } from 'node:util';
import { startAuthorizationServer, type AuthorizationServer } from '../demo/authorization-server.ts';
import { createPki, type Pki } from '../test/fixtures/stack.ts';
import { runCacheMiss, scrapeCounter, type CacheMissResult } from './lib/cache-miss.ts';
import { spawnChild, type ChildServer } from './lib/children.ts';
import { runHandshakes, type HandshakeResult } from './lib/handshake.ts';
import { runGrpcLoad, runH2Load, type ClosedLoopResult } from './lib/h2-load.ts';
import { runLoad, type LoadResult } from './lib/load.ts';
import { autocannonSide, loadAtOnce, type AtOnceOptions, type AtOnceRound, type AtOnceSide, type AtOnceSummary } from './lib/at-once.ts';
import { cpuSecondsOf, hasTaskset, loadAverage, machineInfo, pinProcess, rssMbOf, type MachineInfo } from './lib/machine.ts';
import { startCli } from './lib/cli-target.ts';
import { writeGuardConfig } from './lib/guard-config.ts';
import { measureStartup, type StartupResult } from './lib/startup.ts';
import { findNginx, freePort, startNginx, type NginxServer } from './lib/nginx.ts';
import { nginxRecipe } from '../test/fixtures/nginx-auth.ts';
import { fixed, median, table } from './lib/table.ts';
import { formatSummary, summarizeProfile, type CpuProfile, type ProfileSummary } from './profile-summary.ts';
import type { MemoryPoint } from './servers/memory.ts';

const HERE = fileURLToPath(new URL('.', import.meta.url));
const ROOT = join(HERE, '..');

// ---------------------------------------------------------------- options

const TARGETS = {
  cnfguard: 'cnfguard, logLevel warn (no per-request log line)',
  'cnfguard-info': 'cnfguard, logLevel info (the default: one JSON line per request, to /dev/null)',
  'cnfguard-assertion': 'cnfguard, logLevel warn, with a signed assertion (ES256) on every forwarded request (issue 29: goal >= 0.9x cnfguard)',
  'cnfguard-h1only': 'cnfguard with listen.http2: false (no ALPN h2): what offering h2 costs the HTTP/1.1 path, logLevel warn',
  'cnfguard-cli': 'cnfguard started by `cnfguard run` (cmd/cnfguard.ts), workers: 1, logLevel warn',
  'cnfguard-workers': 'cnfguard started by `cnfguard run` with workers: N (--workers, default 2), logLevel warn',
  baseline: 'cnfguard from another checkout (--baseline DIR, e.g. the commit before a change), logLevel warn',
  'baseline-info': 'cnfguard from the --baseline checkout, logLevel info (its default)',
  'bare-node': 'bare Node 24 mTLS forwarder: https + undici, no checks',
  'bare-h2': 'bare Node 24 h2 mTLS forwarder: http2 compat API + undici to the HTTP/1.1 upstream, no checks (used by the h2 phase)',
  'bare-proxy3': 'experiment: the bare forwarder with http-proxy-3 + node:http Agent (as cnfguard forwards) instead of undici',
  'bare-proxy3-weakmap': 'experiment: bare-proxy3 + a WeakMap<req, {onResponse closure}> per request, as src/proxy/forward.ts keeps',
  'node-static': 'calibration: Node mTLS server answering itself, no upstream (ceiling of Node + this load generator)',
  nginx: 'nginx, 1 worker, mTLS-terminating reverse proxy, keep-alive upstream, no access log',
} as const;
type TargetName = keyof typeof TARGETS;

interface Options {
  quick: boolean;
  rounds: number;
  durationSeconds: number;
  warmupSeconds: number;
  quickRequests: number;
  connections: number;
  targets: TargetName[];
  /** --no-nginx: neither the nginx target nor the decisions phase (which needs nginx). */
  noNginx: boolean;
  pin: boolean;
  skip: Set<string>;
  /** --at-once: pairs of running targets loaded at once, reference first ("bare-node/cnfguard-info"); undefined: the default pairs. */
  atOnce: [TargetName, TargetName][] | undefined;
  missTokens: number;
  memoryTokens: number;
  out: string;
  profile: boolean;
  profileTargets: TargetName[];
  profileSeconds: number;
  /** Profile under the h2 phase's load (h2 sessions x streams) instead of HTTP/1.1 connections. */
  profileH2: boolean;
  guardConfig: Record<string, unknown>;
  /** Extra Node flags for the Node servers under test, e.g. --trace-gc or --max-semi-space-size=64. */
  nodeFlags: string[];
  /** Let the servers' stdout (logs, --trace-gc) through instead of /dev/null. */
  serverStdout: boolean;
  /** In --profile mode, also sample what survives young-generation GC during the load (cnfguard targets). */
  heapSample: boolean;
  /** workers: for the cnfguard-workers target. */
  workers: number;
  /** Another checkout whose cnfguard runs as the baseline targets, for before/after in one run. */
  baseline: string | undefined;
  /** taskset CPU lists when pinning (defaults: servers 0, the rest 1). */
  serverCpus: string;
  clientCpus: string;
  /** HTTP/2 phase: sessions x streams in flight; gRPC phase: unary calls in flight. */
  h2Sessions: number;
  h2Streams: number;
  /** h2 phase: requests per second in all, paced; undefined: closed loop, as fast as each answers. */
  h2Rate: number | undefined;
  /** Decisions phase: the rate (req/s in all) at which each side is also loaded in turn, paced; 0: not. */
  decisionRate: number;
  grpcConcurrency: number;
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      quick: { type: 'boolean', default: false },
      rounds: { type: 'string' },
      duration: { type: 'string' },
      warmup: { type: 'string' },
      'quick-requests': { type: 'string' },
      connections: { type: 'string' },
      targets: { type: 'string' },
      'no-nginx': { type: 'boolean', default: false },
      'no-pin': { type: 'boolean', default: false },
      skip: { type: 'string' },
      'miss-tokens': { type: 'string' },
      'memory-tokens': { type: 'string' },
      out: { type: 'string' },
      profile: { type: 'boolean', default: false },
      'profile-target': { type: 'string' },
      'profile-seconds': { type: 'string' },
      'profile-h2': { type: 'boolean', default: false },
      'guard-config': { type: 'string' },
      'node-flags': { type: 'string' },
      'server-stdout': { type: 'boolean', default: false },
      'heap-sample': { type: 'boolean', default: false },
      workers: { type: 'string' },
      baseline: { type: 'string' },
      'server-cpus': { type: 'string' },
      'client-cpus': { type: 'string' },
      'h2-sessions': { type: 'string' },
      'h2-streams': { type: 'string' },
      'h2-rate': { type: 'string' },
      'decision-rate': { type: 'string' },
      'grpc-concurrency': { type: 'string' },
      'at-once': { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  const env = process.env;
  const num = (flag: string | undefined, envName: string, fallback: number): number => {
    const raw = flag ?? env[envName];
    if (raw === undefined || raw === '') return fallback;
    const n = Number(raw);
    if (!Number.isFinite(n) || n <= 0) throw new Error(`${envName}/--${envName.slice(6).toLowerCase()}: not a positive number: ${raw}`);
    return n;
  };
  const quick = values.quick;
  const defaultTargets: TargetName[] = quick ? ['cnfguard', 'cnfguard-assertion', 'bare-node', 'nginx'] : ['cnfguard', 'cnfguard-assertion', 'cnfguard-info', 'bare-node', 'node-static', 'nginx'];
  const requested = (values.targets ?? env.BENCH_TARGETS)?.split(',').map((s) => s.trim()).filter((s) => s !== '');
  const targetList = requested === undefined ? defaultTargets : requested.includes('all') ? Object.keys(TARGETS) : requested;
  for (const t of targetList) if (!(t in TARGETS)) throw new Error(`unknown target ${t}; known: ${Object.keys(TARGETS).join(', ')}`);
  let targets = targetList as TargetName[];
  if (values['no-nginx']) targets = targets.filter((t) => t !== 'nginx');
  const profileTargets = (values['profile-target'] ?? 'cnfguard-info').split(',').map((s) => s.trim()) as TargetName[];
  for (const t of profileTargets) {
    if (!(t in TARGETS) || ['nginx', 'cnfguard-cli', 'cnfguard-workers'].includes(t)) throw new Error(`--profile-target takes the single-process Node targets, not ${t}`);
  }
  return {
    quick,
    rounds: Math.round(num(values.rounds, 'BENCH_ROUNDS', quick ? 2 : 3)),
    durationSeconds: num(values.duration, 'BENCH_DURATION', 5),
    warmupSeconds: num(values.warmup, 'BENCH_WARMUP', 3),
    quickRequests: Math.round(num(values['quick-requests'], 'BENCH_QUICK_REQUESTS', 300)),
    connections: Math.round(num(values.connections, 'BENCH_CONNECTIONS', 32)),
    targets,
    noNginx: values['no-nginx'],
    pin: !values['no-pin'] && env.BENCH_PIN !== '0',
    skip: new Set((values.skip ?? '').split(',').filter((s) => s !== '')),
    atOnce: values['at-once'] === undefined ? undefined : values['at-once'].split(',').filter((s) => s !== '').map(pairOf),
    missTokens: Math.round(num(values['miss-tokens'], 'BENCH_MISS_TOKENS', quick ? 20 : 300)),
    memoryTokens: Math.round(num(values['memory-tokens'], 'BENCH_MEMORY_TOKENS', quick ? 4000 : 100_000)),
    out: values.out ?? (quick || values.profile ? join(ROOT, '.tmp', 'bench', quick ? 'quick.json' : 'profile-run.json') : join(HERE, 'results', 'latest.json')),
    profile: values.profile,
    profileTargets,
    profileSeconds: num(values['profile-seconds'], 'BENCH_PROFILE_SECONDS', 10),
    profileH2: values['profile-h2'],
    guardConfig: values['guard-config'] === undefined ? {} : (JSON.parse(values['guard-config']) as Record<string, unknown>),
    nodeFlags: (values['node-flags'] ?? env.BENCH_NODE_FLAGS ?? '').split(/\s+/).filter((f) => f !== ''),
    serverStdout: values['server-stdout'],
    heapSample: values['heap-sample'],
    baseline: values.baseline ?? env.BENCH_BASELINE,
    workers: Math.round(num(values.workers, 'BENCH_WORKERS', 2)),
    serverCpus: values['server-cpus'] ?? env.BENCH_SERVER_CPUS ?? '0',
    clientCpus: values['client-cpus'] ?? env.BENCH_CLIENT_CPUS ?? '1',
    h2Sessions: Math.round(num(values['h2-sessions'], 'BENCH_H2_SESSIONS', 4)),
    h2Streams: Math.round(num(values['h2-streams'], 'BENCH_H2_STREAMS', 8)),
    h2Rate: values['h2-rate'] === undefined && env.BENCH_H2_RATE === undefined ? undefined : num(values['h2-rate'], 'BENCH_H2_RATE', 0),
    decisionRate: Math.round(num(values['decision-rate'], 'BENCH_DECISION_RATE', 2000)),
    grpcConcurrency: Math.round(num(values['grpc-concurrency'], 'BENCH_GRPC_CONCURRENCY', 32)),
  };
}

const USAGE = `usage: node bench/run.ts [options]     (npm run bench -- [options])
  --quick                 a few hundred requests per target (smoke test; numbers not meaningful)
  --rounds N              load rounds, targets alternating in each (BENCH_ROUNDS, default 3; quick 2)
  --duration S            seconds per target per round (BENCH_DURATION, default 5)
  --warmup S              warm-up seconds per target (BENCH_WARMUP, default 3)
  --connections N         keep-alive mTLS connections (BENCH_CONNECTIONS, default 32)
  --targets a,b|all       of ${Object.keys(TARGETS).join(', ')} (BENCH_TARGETS;
                          default cnfguard,cnfguard-info,bare-node,node-static,nginx)
  --no-nginx              skip nginx even when installed (NGINX_BIN picks the binary); also skips decisions
  --no-pin                do not pin with taskset (BENCH_PIN=0)
  --server-cpus LIST      taskset CPUs of the servers under test (BENCH_SERVER_CPUS, default 0)
  --client-cpus LIST      taskset CPUs of the load generator, upstream and AS (BENCH_CLIENT_CPUS, default 1)
  --workers N             workers: of the cnfguard-workers target (default 2); for a scaling figure run
                          --targets cnfguard-cli,cnfguard-workers with --server-cpus 0-1 --client-cpus 2-3
                          on a machine with 4+ cores
  --skip at-once,miss,handshake,memory,h2,grpc,decisions,paced,floor,startup,idle
  --at-once A/B,...       pairs of targets loaded AT ONCE after the main load, B against the reference A (default:
                          bare-node/cnfguard-info, bare-node/cnfguard, baseline-info/cnfguard-info, those whose
                          targets run): both share the server CPU and whatever else the machine does, so the
                          ratio is that of their cost; the main load (one target at a time) swings far more
  --baseline DIR          a checkout (npm install done) whose cnfguard runs as the baseline targets;
                          e.g. --targets cnfguard,baseline gives the HTTP/1.1 "x baseline" ratio;
                          the decisions phase then also loads DIR's decision API behind its own nginx
  --h2-sessions N         h2 phase: mTLS h2 sessions (BENCH_H2_SESSIONS, default 4)...
  --h2-streams N          ...with N requests in flight on each (BENCH_H2_STREAMS, default 8)
  --h2-rate R             h2 phase: at most R requests/s in all, paced (BENCH_H2_RATE; default: closed loop), so that
                          the sides compared see the same arrivals and their CPU per request compares on a busy machine
  --decision-rate R       decisions phase: each side also loaded in turn at R req/s in all, paced (BENCH_DECISION_RATE,
                          default 2000; 0: not), a sidecar's load rather than its ceiling (--skip paced leaves it out)
  --grpc-concurrency N    gRPC phase: unary calls in flight on one grpc-js channel (default 32)
  --miss-tokens N         tokens for the cache-miss run (default 300; quick 20)
  --memory-tokens N       cached tokens for the memory run (default 100000; quick 4000)
  --guard-config JSON     merged into cnfguard's YAML config, e.g. '{"introspection":{...}}'
  --node-flags="FLAGS"    extra Node flags for the Node servers under test (BENCH_NODE_FLAGS), e.g.
                          "--max-semi-space-size=32" or "--trace-gc" (with --server-stdout)
  --server-stdout         let the servers' stdout through (default /dev/null)
  --out FILE              JSON results (default bench/results/latest.json; quick: .tmp/bench/quick.json)
  --profile               instead: run one target under --cpu-prof with cache-hit load and summarize
  --profile-target a,b    Node targets to profile one after another (default cnfguard-info)
  --profile-seconds S     seconds of profiled load (default 10)
  --profile-h2            with --profile: the h2 phase's load (h2 sessions x streams), e.g. --profile-target cnfguard,bare-h2
  --heap-sample           with --profile: also sample for 1.5 s under load the allocations that no
                          scavenge collected (what survives young-generation GC and gets promoted)
`;

// ---------------------------------------------------------------- targets

interface Target {
  name: TargetName;
  url: string;
  adminUrl?: string;
  pids(): number[];
  alive(): boolean;
  stop(): Promise<void>;
  child?: ChildServer;
}

interface Stack {
  pki: Pki;
  as: AuthorizationServer;
  upstream: ChildServer;
  token: string;
  cert: string;
  key: string;
  /** taskset CPU lists: servers under test, and everything else (load generator, upstream, AS). */
  serverCpu: string | undefined;
  sideCpu: string | undefined;
  workDir: string;
}

function guardConfigFile(stack: Stack, name: string, extra: Record<string, unknown>): string {
  return writeGuardConfig(stack.pki, stack.as, stack.upstream.ready.url, name, extra);
}

/** The cache-miss phase's guard: the throughput targets' config, with the introspection budget off. */
async function startMissGuard(stack: Stack, logLevel: 'warn' | 'info', options: Options): Promise<{ url: string; adminUrl: string; stop: () => Promise<void> }> {
  const introspection = { url: stack.as.introspectionUrl, clientId: 'rs', clientSecret: 'rs-secret', ca: stack.pki.files.ca, timeoutMs: 2000, probeAtStartup: false, ...(options.guardConfig.introspection as Record<string, unknown> | undefined) };
  const file = guardConfigFile(stack, 'cnfguard-miss', { logLevel, ...options.guardConfig, introspection: { ...introspection, budget: { perPeerPerSecond: 0, totalPerSecond: 0 } } });
  const server = await spawnChild({ name: 'cnfguard-miss', script: join(HERE, 'servers', 'guard.ts'), args: [file], cpu: stack.serverCpu, nodeFlags: options.nodeFlags, stdout: options.serverStdout ? 'inherit' : 'ignore' });
  return { url: server.ready.url, adminUrl: String(server.ready.adminUrl), stop: () => server.stop() };
}

async function startTarget(stack: Stack, name: TargetName, options: { guardConfig: Record<string, unknown>; nodeFlags: string[]; stdout: boolean; workers?: number; baseline?: string | undefined }): Promise<Target | undefined> {
  const child = { cpu: stack.serverCpu, nodeFlags: options.nodeFlags, stdout: options.stdout ? ('inherit' as const) : ('ignore' as const) };
  const fromChild = (server: ChildServer): Target => ({
    name,
    url: server.ready.url,
    ...(typeof server.ready.adminUrl === 'string' && { adminUrl: server.ready.adminUrl }),
    pids: () => [server.pid],
    alive: () => server.alive(),
    stop: () => server.stop(),
    child: server,
  });
  switch (name) {
    case 'cnfguard':
    case 'cnfguard-info': {
      const file = guardConfigFile(stack, name, { logLevel: name === 'cnfguard' ? 'warn' : 'info', ...options.guardConfig });
      return fromChild(await spawnChild({ name, script: join(HERE, 'servers', 'guard.ts'), args: [file], ...child }));
    }
    case 'cnfguard-assertion': {
      // The same config as `cnfguard` plus `assertion` with a fresh P-256 key (the default ES256).
      const keyFile = join(stack.workDir, 'assertion.key');
      writeFileSync(keyFile, generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, { mode: 0o600 });
      const file = guardConfigFile(stack, name, { logLevel: 'warn', ...options.guardConfig, assertion: { keyFile, issuer: 'https://cnfguard.bench' } });
      return fromChild(await spawnChild({ name, script: join(HERE, 'servers', 'guard.ts'), args: [file], ...child }));
    }
    case 'cnfguard-h1only': {
      const file = guardConfigFile(stack, name, { logLevel: 'warn', ...options.guardConfig, listen: { host: '127.0.0.1', port: 0, http2: false } });
      return fromChild(await spawnChild({ name, script: join(HERE, 'servers', 'guard.ts'), args: [file], ...child }));
    }
    case 'baseline':
    case 'baseline-info': {
      if (options.baseline === undefined) throw new Error(`target ${name} needs --baseline DIR (a checkout with npm install done)`);
      const file = guardConfigFile(stack, name, { logLevel: name === 'baseline' ? 'warn' : 'info', ...options.guardConfig });
      return fromChild(await spawnChild({ name, script: join(options.baseline, 'bench', 'servers', 'guard.ts'), args: [file], ...child }));
    }
    case 'cnfguard-cli':
    case 'cnfguard-workers': {
      const [port, adminPort] = [await freePort(), await freePort()];
      const workers = name === 'cnfguard-cli' ? 1 : (options.workers ?? 2);
      const file = guardConfigFile(stack, name, { logLevel: 'warn', ...options.guardConfig, workers, listen: { host: '127.0.0.1', port }, admin: { host: '127.0.0.1', port: adminPort } });
      const adminUrl = `http://127.0.0.1:${adminPort}`;
      const cli = await startCli({ entry: join(ROOT, 'cmd', 'cnfguard.ts'), configFile: file, adminUrl, cpus: stack.serverCpu, nodeFlags: options.nodeFlags, stdout: options.stdout });
      return { name, url: `https://127.0.0.1:${port}`, adminUrl, pids: cli.pids, alive: cli.alive, stop: cli.stop };
    }
    case 'bare-h2': {
      const config = { cert: stack.pki.files.server.cert, key: stack.pki.files.server.key, upstream: stack.upstream.ready.url };
      return fromChild(await spawnChild({ name, script: join(HERE, 'servers', 'bare-h2-forwarder.ts'), args: [JSON.stringify(config)], ...child }));
    }
    case 'bare-node':
    case 'bare-proxy3':
    case 'bare-proxy3-weakmap':
    case 'node-static': {
      const modes = { 'bare-node': 'forward', 'bare-proxy3': 'proxy3', 'bare-proxy3-weakmap': 'proxy3-weakmap', 'node-static': 'static' } as const;
      const mode = modes[name];
      const config = { cert: stack.pki.files.server.cert, key: stack.pki.files.server.key, upstream: stack.upstream.ready.url, mode };
      return fromChild(await spawnChild({ name, script: join(HERE, 'servers', 'bare-forwarder.ts'), args: [JSON.stringify(config)], ...child }));
    }
    case 'nginx': {
      const bin = findNginx();
      if (bin === undefined) return undefined;
      const nginx = await startNginx({
        bin,
        dir: join(stack.workDir, 'nginx'),
        cert: stack.pki.files.server.cert,
        key: stack.pki.files.server.key,
        upstream: stack.upstream.ready.url,
        cpu: stack.serverCpu,
      });
      log(`  nginx: ${nginx.version} (${bin})`);
      return { name, url: nginx.url, pids: nginx.pids, alive: nginx.alive, stop: nginx.stop };
    }
  }
}

// ---------------------------------------------------------------- output

/** A server that died under load makes the whole comparison meaningless: stop there. */
function assertAlive(target: { name: string; alive(): boolean }): void {
  if (!target.alive()) throw new Error(`target ${target.name} exited during the benchmark (its stderr is above)`);
}

function log(line: string): void {
  process.stdout.write(`${line}\n`);
}

function machineLine(machine: MachineInfo): string {
  return `machine: ${machine.cpuModel}, ${machine.cores} cores, ${machine.memoryGb} GB, ${machine.platform}, Node ${machine.node}`;
}

function noiseNote(loadStart: number[], cores: number): string {
  const busy = (loadStart[0] ?? 0) / cores;
  return busy > 0.25
    ? `NOTE: load average before the run was ${loadStart.join(' ')} on ${cores} cores: other work is running, so figures are noisy; compare ratios within this run, not absolute numbers`
    : `load average before the run: ${loadStart.join(' ')} (quiet enough; still compare ratios rather than absolute numbers)`;
}

interface TargetSummary {
  name: TargetName;
  description: string;
  rps: number;
  rpsRounds: number[];
  p50Ms: number;
  p99Ms: number;
  p99Rounds: number[];
  ratioVsBare: number | undefined;
  /** cnfguard-assertion: its req/s over cnfguard's (per-round ratios, median). */
  ratioVsCnfguard?: number | undefined;
  ratioVsNginx: number | undefined;
  /** Against `baseline`, or `baseline-info` for an `-info` target when it ran. */
  ratioVsBaseline: number | undefined;
  /** The server's CPU per request (process accounting), µs: median of rounds. */
  cpuUsPerRequest: number | undefined;
  /** Median of per-round ratios of CPU per request: against bare-node, and the matching baseline. */
  cpuVsBare: number | undefined;
  cpuVsBaseline: number | undefined;
  /** Every round's ratios, as printed under the table: req/s and CPU per request against bare-node and the baseline. */
  perRound: { vsBare: number[]; vsBaseline: number[]; cpuVsBare: number[]; cpuVsBaseline: number[] };
  serverCpuPct: number | undefined;
  loadgenCpuPct: number | undefined;
  upstreamCpuPct: number | undefined;
  foreignCpuPct: number | undefined;
  rssMbAfter: number | undefined;
  errors: number;
  non2xx: number;
  statusCodes: Record<string, number>;
}

function summarizeTargets(names: TargetName[], runs: Map<TargetName, LoadResult[]>, rss: Map<TargetName, number | undefined>): TargetSummary[] {
  const ratio = (name: TargetName, base: TargetName): number | undefined => {
    const a = runs.get(name);
    const b = runs.get(base);
    if (a === undefined || b === undefined || a.length === 0) return undefined;
    // Per-round ratios (neighbouring runs share the machine's state), then their median.
    const r = median(a.map((run, i) => run.rps / (b[i]?.rps ?? Number.NaN)));
    return Number.isFinite(r) ? Math.round(r * 100) / 100 : undefined;
  };
  // CPU per request from process accounting: steadier than req/s when others take the CPU.
  const cpuPerRequest = (run: LoadResult | undefined): number => (run?.serverCpuPct === undefined || run.rps === 0 ? Number.NaN : (run.serverCpuPct * 1e4) / run.rps);
  const cpuRatio = (name: TargetName, base: TargetName): number | undefined => {
    const a = runs.get(name);
    const b = runs.get(base);
    if (a === undefined || b === undefined || a.length === 0) return undefined;
    const r = median(a.map((run, i) => cpuPerRequest(run) / cpuPerRequest(b[i])).filter(Number.isFinite));
    return Number.isFinite(r) ? Math.round(r * 100) / 100 : undefined;
  };
  const rounds = (name: TargetName, base: TargetName, of: (run: LoadResult | undefined) => number): number[] => {
    const b = runs.get(base);
    if (b === undefined || b.length === 0) return [];
    return (runs.get(name) ?? []).map((run, i) => Math.round((of(run) / of(b[i])) * 100) / 100);
  };
  const baselineOf = (name: TargetName): TargetName => (name.endsWith('-info') && (runs.get('baseline-info')?.length ?? 0) > 0 ? 'baseline-info' : 'baseline');
  return names
    .filter((name) => (runs.get(name)?.length ?? 0) > 0)
    .map((name) => {
      const list = runs.get(name) as LoadResult[];
      const statusCodes: Record<string, number> = {};
      for (const run of list) for (const [code, n] of Object.entries(run.statusCodes)) statusCodes[code] = (statusCodes[code] ?? 0) + n;
      const opt = (values: (number | undefined)[]) => {
        const m = median(values.filter((v): v is number => v !== undefined));
        return Number.isFinite(m) ? Math.round(m) : undefined;
      };
      return {
        name,
        description: TARGETS[name],
        rps: Math.round(median(list.map((r) => r.rps))),
        rpsRounds: list.map((r) => r.rps),
        p50Ms: Math.round(median(list.map((r) => r.p50Ms)) * 100) / 100,
        p99Ms: Math.round(median(list.map((r) => r.p99Ms)) * 100) / 100,
        p99Rounds: list.map((r) => r.p99Ms),
        ratioVsBare: ratio(name, 'bare-node'),
        ratioVsNginx: ratio(name, 'nginx'),
        ratioVsBaseline: ratio(name, baselineOf(name)),
        cpuUsPerRequest: opt(list.map(cpuPerRequest).filter(Number.isFinite)),
        cpuVsBare: cpuRatio(name, 'bare-node'),
        cpuVsBaseline: cpuRatio(name, baselineOf(name)),
        perRound: {
          vsBare: rounds(name, 'bare-node', (run) => run?.rps ?? Number.NaN),
          vsBaseline: rounds(name, baselineOf(name), (run) => run?.rps ?? Number.NaN),
          cpuVsBare: rounds(name, 'bare-node', cpuPerRequest),
          cpuVsBaseline: rounds(name, baselineOf(name), cpuPerRequest),
        },
        ...(name === 'cnfguard-assertion' && { ratioVsCnfguard: ratio(name, 'cnfguard') }),
        serverCpuPct: opt(list.map((r) => r.serverCpuPct)),
        loadgenCpuPct: opt(list.map((r) => r.loadgenCpuPct)),
        upstreamCpuPct: opt(list.map((r) => r.upstreamCpuPct)),
        foreignCpuPct: opt(list.map((r) => r.foreignCpuPct)),
        rssMbAfter: rss.get(name),
        errors: list.reduce((a, r) => a + r.errors + r.timeouts, 0),
        non2xx: list.reduce((a, r) => a + r.non2xx, 0),
        statusCodes,
      };
    });
}

function printTargets(rows: TargetSummary[]): void {
  log(
    table(
      ['target', 'req/s', 'min-max req/s', 'p50 ms', 'p99 ms', 'x bare', 'x nginx', 'x baseline', 'CPU µs/req', 'CPU/req x bare', 'CPU/req x baseline', 'server CPU%', 'loadgen CPU%', 'upstream CPU%', 'others CPU%', 'RSS MB', 'errors+non2xx'],
      rows.map((r) => [
        r.name,
        r.rps,
        `${Math.min(...r.rpsRounds)}-${Math.max(...r.rpsRounds)}`,
        fixed(r.p50Ms, 2),
        fixed(r.p99Ms, 2),
        fixed(r.ratioVsBare, 2),
        fixed(r.ratioVsNginx, 2),
        fixed(r.ratioVsBaseline, 2),
        r.cpuUsPerRequest,
        fixed(r.cpuVsBare, 2),
        fixed(r.cpuVsBaseline, 2),
        r.serverCpuPct,
        r.loadgenCpuPct,
        r.upstreamCpuPct,
        r.foreignCpuPct,
        r.rssMbAfter,
        r.errors + r.non2xx,
      ]),
    ),
  );
  const compared = rows.some((r) => r.name !== 'bare-node' && r.perRound.vsBare.length + r.perRound.vsBaseline.length > 0);
  if (compared) log('  per-round ratios (req/s, then CPU per request; CPU/req below 1 is cheaper), in round order:');
  for (const r of rows) {
    const parts = [
      ['x bare', r.perRound.vsBare],
      ['x baseline', r.perRound.vsBaseline],
      ['CPU/req x bare', r.perRound.cpuVsBare],
      ['CPU/req x baseline', r.perRound.cpuVsBaseline],
    ].filter(([, list]) => (list as number[]).length > 0 && r.name !== 'bare-node');
    if (parts.length > 0) log(`    ${r.name.padEnd(14)} ${parts.map(([label, list]) => `${label as string} ${(list as number[]).join(' ')}`).join(';  ')}`);
  }
}

// ---------------------------------------------------------------- phases

async function issueTokens(as: AuthorizationServer, pki: Pki, count: number): Promise<string[]> {
  const tokens: string[] = [];
  let next = 0;
  const worker = async () => {
    while (next < count) {
      next += 1;
      tokens.push(await as.issueToken({ clientCert: pki.certs.clients.client1, caCert: pki.certs.ca.cert }));
    }
  };
  await Promise.all(Array.from({ length: Math.min(8, count) }, worker));
  return tokens;
}

/** What a load round needs of a target: where it is, its processes (for CPU), whether it still runs. */
interface LoadTarget<N extends string> {
  name: N;
  url: string;
  pids(): number[];
  alive(): boolean;
  /** Processes whose CPU per request is reported apart (e.g. nginx and cnfguard of one side). */
  parts?: Record<string, () => number[]>;
}

/** A load round, with the CPU µs per 2xx response of each of the target's `parts`. */
type RoundResult = LoadResult & { partsCpuUs?: Record<string, number> };

function pairOf(text: string): [TargetName, TargetName] {
  const names = text.split('/').map((s) => s.trim());
  if (names.length !== 2 || names[0] === names[1] || !names.every((n) => n in TARGETS)) throw new Error(`--at-once: ${text}: two different targets as A/B, e.g. bare-node/cnfguard-info`);
  return names as [TargetName, TargetName];
}

const AT_ONCE_PAIRS: [TargetName, TargetName][] = [
  ['bare-node', 'cnfguard-info'],
  ['bare-node', 'cnfguard'],
  ['baseline-info', 'cnfguard-info'],
];

/**
 * The main load's targets again, two at a time and both at once (bench/lib/at-once.ts): the
 * figure of issue 32's "default config >= 1.0x the bare forwarder" that a shared machine cannot
 * swing by ±15% a round. Pairs whose targets are not running are left out.
 */
async function atOncePhase(options: Options, stack: Stack, targets: Target[]): Promise<AtOnceSummary[]> {
  const byName = new Map(targets.map((t) => [t.name as string, t]));
  const pairs = (options.atOnce ?? AT_ONCE_PAIRS).filter(([a, b]) => byName.has(a) && byName.has(b));
  if (pairs.length === 0) return [];
  const base = loadBase(options, stack);
  const results: AtOnceSummary[] = [];
  for (const [a, b] of pairs) {
    log(`\nat once: ${b} against ${a}, both loaded at once on the server CPU, ${options.connections} connections each`);
    const side = (t: Target) => autocannonSide(t.name, t, base, options.quick ? 200 : undefined);
    results.push(await loadAtOnce([side(byName.get(a) as Target), side(byName.get(b) as Target)], { ...atOnceRounds(options), log }));
  }
  return results;
}

function printAtOnce(results: AtOnceSummary[], machine: MachineInfo): void {
  if (results.length === 0) return;
  log(`\nat once (two targets loaded together, sharing the server CPU; medians of per-round ratios, B / A):`);
  for (const r of results) {
    const [a, b] = r.labels;
    const rounds = (f: (x: AtOnceRound) => number) => r.rounds.map((x) => f(x).toFixed(2)).join(' ');
    log(`  ${b} / ${a}: ${fixed(r.rpsRatio, 3)}x req/s, ${fixed(r.cpuRatio, 3)}x CPU per request (${r.cpuUs[1]} against ${r.cpuUs[0]} µs; ${r.rounds.length} rounds${r.skipped > 0 ? `, ${r.skipped} not counted` : ''})`);
    log(`    per round: req/s ${rounds((x) => x.rps[1] / x.rps[0])}; CPU/req ${rounds((x) => x.cpuUs[1] / x.cpuUs[0])}`);
  }
  log(`  ${machineLine(machine)}`);
}

/** A pause between two loads, so the next starts on a settled machine; not in --quick, whose figures mean nothing. */
function settle(options: Options): Promise<void> {
  return options.quick ? Promise.resolve() : new Promise((resolve) => setTimeout(resolve, 200));
}

/** What every cache-hit load of a run shares: the token, the client certificate, the connections, the upstream's pid. */
function loadBase(options: Options, stack: Stack) {
  return { token: stack.token, cert: stack.cert, key: stack.key, connections: options.connections, sidePids: () => [stack.upstream.pid] };
}

/** --quick's warm-up of a cache-hit load: half its requests per round, at least 100. */
function quickWarmupRequests(options: Options): number {
  return Math.max(100, Math.round(options.quickRequests / 2));
}

/** Rounds of the pairs loaded at once: --quick's are half a second, and count with any requests on a side. */
function atOnceRounds(options: Options): Omit<AtOnceOptions, 'log'> {
  return options.quick ? { rounds: 2, seconds: 0.5, minRoundRequests: 1 } : { rounds: options.rounds, seconds: options.durationSeconds };
}

async function loadPhase<N extends string>(options: Options, stack: Stack, targets: LoadTarget<N>[], rate?: number): Promise<Map<N, RoundResult[]>> {
  const runs = new Map<N, RoundResult[]>(targets.map((t) => [t.name, []]));
  const base = { ...loadBase(options, stack), rate };
  // --quick, paced: half a second of requests at least, or process accounting (10 ms ticks) may
  // see no CPU at all in a round of a few hundred requests spread over a tenth of a second.
  const amount = options.quick ? { amount: rate === undefined ? options.quickRequests : Math.max(options.quickRequests, Math.round(rate / 2)) } : {};
  log(`\nwarm-up: ${options.quick ? `${quickWarmupRequests(options)} requests` : `${options.warmupSeconds} s`} per target`);
  for (const target of targets) {
    assertAlive(target);
    const warm = await runLoad({ ...base, url: target.url, ...(options.quick ? { amount: quickWarmupRequests(options) } : { durationSeconds: options.warmupSeconds }) });
    log(`  ${target.name.padEnd(14)} ${String(warm.rps).padStart(6)} req/s  (status ${JSON.stringify(warm.statusCodes)})`);
  }
  log(`\nload: ${options.rounds} rounds x ${amount.amount !== undefined ? `${amount.amount} requests` : `${options.durationSeconds} s`} per target, ${options.connections} keep-alive mTLS connections, pipelining 1${rate === undefined ? '' : `, paced to ${rate} req/s in all`}`);
  for (let round = 1; round <= options.rounds; round++) {
    for (const target of targets) {
      assertAlive(target);
      const parts = Object.entries(target.parts ?? {}).map(([name, pids]) => ({ name, pids: pids(), before: cpuSecondsOf(pids()) }));
      const load = await runLoad({ ...base, url: target.url, serverPids: target.pids, ...amount, ...(options.quick ? {} : { durationSeconds: options.durationSeconds }) });
      const ok = Math.max(1, Math.round(load.rps * load.seconds));
      const result: RoundResult = parts.length === 0 ? load : { ...load, partsCpuUs: Object.fromEntries(parts.map((p) => [p.name, Math.round(((cpuSecondsOf(p.pids) - p.before) * 1e6) / ok)])) };
      assertAlive(target);
      runs.get(target.name)?.push(result);
      log(
        `  round ${round} ${target.name.padEnd(14)} ${String(result.rps).padStart(6)} req/s  p50 ${result.p50Ms.toFixed(2)} ms  p99 ${result.p99Ms.toFixed(2)} ms  server CPU ${result.serverCpuPct ?? '-'}%  loadgen CPU ${result.loadgenCpuPct}%  upstream CPU ${result.upstreamCpuPct}%  others ${result.foreignCpuPct ?? '-'}%${result.errors + result.non2xx > 0 ? `  ERRORS ${result.errors} non2xx ${result.non2xx} ${JSON.stringify(result.statusCodes)}` : ''}`,
      );
      await settle(options);
    }
  }
  return runs;
}

/**
 * Ways of doing the same work, loaded in turn round after round (issue 15's h2 and gRPC figures),
 * each compared with the last side (the reference): req/s, and the server's CPU per request
 * (process accounting, which a shared machine disturbs far less than req/s).
 */
interface PairSummary {
  phase: string;
  names: string[];
  rps: number[];
  rpsRounds: number[][];
  p50Ms: number[];
  p99Ms: number[];
  serverCpuPct: (number | undefined)[];
  /** Median server CPU µs per answered request (undefined for a side with no server process measured). */
  cpuUsPerReq: (number | undefined)[];
  cpuUsRounds: (number | undefined)[][];
  loadgenCpuPct: number[];
  upstreamCpuPct: number[];
  foreignCpuPct: number | undefined;
  failures: number[];
  /** Median of the per-round ratios first / last (req/s). */
  ratio: number | undefined;
  /** For each side: median of the per-round req/s ratios side / last, and of CPU per request side / last. */
  ratios: (number | undefined)[];
  cpuRatios: (number | undefined)[];
  /** With three sides or more (e.g. cnfguard, baseline, bare): the first against the second, req/s and CPU per request. */
  firstVsSecond?: { ratio: number | undefined; cpuRatio: number | undefined };
}

interface PairSide {
  name: string;
  run: (seconds: number) => Promise<ClosedLoopResult>;
}

async function pairedPhase(options: Options, phase: string, sides: PairSide[]): Promise<PairSummary> {
  // --quick: long enough for every side to serve some requests; its figures mean nothing.
  const seconds = options.quick ? 0.4 : options.durationSeconds;
  const runs: ClosedLoopResult[][] = sides.map(() => []);
  for (const side of sides) {
    const warm = await side.run(options.quick ? 0.3 : options.warmupSeconds);
    log(`  warm-up ${side.name.padEnd(24)} ${String(warm.rps).padStart(6)}/s  (${warm.failures} failed)`);
  }
  for (let round = 1; round <= options.rounds; round++) {
    for (const [i, side] of sides.entries()) {
      const result = await side.run(seconds);
      runs[i]?.push(result);
      log(
        `  round ${round} ${side.name.padEnd(24)} ${String(result.rps).padStart(6)}/s  p50 ${result.p50Ms.toFixed(2)} ms  p99 ${result.p99Ms.toFixed(2)} ms  server CPU ${result.serverCpuPct ?? '-'}% ${result.serverCpuUsPerReq ?? '-'} µs/req  loadgen CPU ${result.loadgenCpuPct}%  upstream CPU ${result.upstreamCpuPct}%  others ${result.foreignCpuPct ?? '-'}%${result.failures > 0 ? `  FAILED ${result.failures}` : ''}`,
      );
      await settle(options);
    }
  }
  const med = (list: ClosedLoopResult[], pick: (r: ClosedLoopResult) => number | undefined) => {
    const m = median(list.map(pick).filter((v): v is number => v !== undefined));
    return Number.isFinite(m) ? Math.round(m * 100) / 100 : undefined;
  };
  const reference = runs[runs.length - 1] ?? [];
  const roundRatio = (list: ClosedLoopResult[], pick: (r: ClosedLoopResult) => number | undefined, against = reference) => {
    const m = median(list.map((r, i) => (pick(r) ?? Number.NaN) / (pick(against[i] as ClosedLoopResult) ?? Number.NaN)).filter((v) => Number.isFinite(v)));
    return Number.isFinite(m) ? Math.round(m * 100) / 100 : undefined;
  };
  const ratios = runs.map((list) => roundRatio(list, (r) => r.rps));
  return {
    phase,
    names: sides.map((s) => s.name),
    rps: runs.map((list) => Math.round(med(list, (r) => r.rps) ?? 0)),
    rpsRounds: runs.map((list) => list.map((r) => r.rps)),
    p50Ms: runs.map((list) => med(list, (r) => r.p50Ms) ?? Number.NaN),
    p99Ms: runs.map((list) => med(list, (r) => r.p99Ms) ?? Number.NaN),
    serverCpuPct: runs.map((list) => med(list, (r) => r.serverCpuPct)),
    cpuUsPerReq: runs.map((list) => med(list, (r) => r.serverCpuUsPerReq)),
    cpuUsRounds: runs.map((list) => list.map((r) => r.serverCpuUsPerReq)),
    loadgenCpuPct: runs.map((list) => med(list, (r) => r.loadgenCpuPct) ?? 0),
    upstreamCpuPct: runs.map((list) => med(list, (r) => r.upstreamCpuPct) ?? 0),
    foreignCpuPct: med(runs.flat(), (r) => r.foreignCpuPct),
    failures: runs.map((list) => list.reduce((a, r) => a + r.failures, 0)),
    ratio: ratios[0],
    ratios,
    cpuRatios: runs.map((list) => roundRatio(list, (r) => r.serverCpuUsPerReq)),
    ...(runs.length > 2 && {
      firstVsSecond: { ratio: roundRatio(runs[0] ?? [], (r) => r.rps, runs[1]), cpuRatio: roundRatio(runs[0] ?? [], (r) => r.serverCpuUsPerReq, runs[1]) },
    }),
  };
}

function printPair(pair: PairSummary, unit: string): void {
  const last = pair.names[pair.names.length - 1];
  log(
    table(
      ['target', `${unit}/s`, `min-max ${unit}/s`, 'p50 ms', 'p99 ms', `x ${last}`, `CPU µs/${unit}`, `CPU/${unit} x ${last}`, 'server CPU%', 'loadgen CPU%', 'upstream CPU%', 'failed'],
      pair.names.map((name, i) => [
        name,
        pair.rps[i],
        `${Math.min(...(pair.rpsRounds[i] as number[]))}-${Math.max(...(pair.rpsRounds[i] as number[]))}`,
        fixed(pair.p50Ms[i], 2),
        fixed(pair.p99Ms[i], 2),
        fixed(pair.ratios[i], 2),
        pair.cpuUsPerReq[i],
        fixed(pair.cpuRatios[i], 2),
        pair.serverCpuPct[i],
        pair.loadgenCpuPct[i],
        pair.upstreamCpuPct[i],
        pair.failures[i],
      ]),
    ),
  );
  for (const [i, name] of pair.names.slice(0, -1).entries()) {
    log(`  ${name} / ${last}: ${fixed(pair.ratios[i], 2) ?? '?'}x req/s, ${fixed(pair.cpuRatios[i], 2) ?? '?'}x CPU per ${unit} (medians of per-round ratios; rounds ${(pair.cpuUsRounds[i] ?? []).join(', ')} µs)`);
  }
  if (pair.firstVsSecond !== undefined) log(`  ${pair.names[0]} / ${pair.names[1]}: ${fixed(pair.firstVsSecond.ratio, 2) ?? '?'}x req/s, ${fixed(pair.firstVsSecond.cpuRatio, 2) ?? '?'}x CPU per ${unit} (medians of per-round ratios)`);
  log(`  others CPU% ${pair.foreignCpuPct ?? '?'}`);
}

/**
 * h2 cache hits: cnfguard (a `cnfguard` target of its own, ALPN h2 on its one port) against the
 * bare h2 forwarder, and a `baseline` of its own too when the baseline runs (before/after in one
 * run). Every side is a fresh process given the same HTTP/1.1 history first (h2History): a process
 * that served HTTP/1.1 before runs its shared code on polymorphic paths, and comparing one that did
 * (the main load's cnfguard) with one that never did (bare-h2) put cnfguard ~6% behind for that alone.
 */
async function h2Phase(options: Options, stack: Stack, withBaseline: boolean): Promise<PairSummary & { atOnce?: AtOnceSummary }> {
  const started: Target[] = [];
  const start = async (name: TargetName): Promise<Target> => {
    const target = (await startTarget(stack, name, { guardConfig: name === 'bare-h2' ? {} : options.guardConfig, nodeFlags: options.nodeFlags, stdout: options.serverStdout, baseline: options.baseline })) as Target;
    started.push(target);
    return target;
  };
  try {
    const guard = await start('cnfguard');
    const baseline = withBaseline ? await start('baseline') : undefined;
    const bare = await start('bare-h2');
    log(`
h2 cache hits: ${options.h2Sessions} mTLS h2 sessions x ${options.h2Streams} streams in flight${options.h2Rate === undefined ? '' : `, paced to ${options.h2Rate} req/s`}, GET with the cached token, both to the HTTP/1.1 upstream`);
    await h2History(options, stack, started);
    const h2Load = (target: Target, seconds: number) =>
      runH2Load({ url: target.url, token: stack.token, ca: stack.pki.certs.ca.cert, cert: stack.cert, key: stack.key, sessions: options.h2Sessions, streams: options.h2Streams, rate: options.h2Rate, seconds, serverPids: target.pids, sidePids: () => [stack.upstream.pid] });
    const side = (name: string, target: Target): PairSide => ({ name, run: (seconds) => h2Load(target, seconds) });
    const pair = await pairedPhase(options, 'h2 cache hit', [side('cnfguard h2', guard), ...(baseline === undefined ? [] : [side('baseline h2', baseline)]), side('bare-h2', bare)]);
    if (options.skip.has('at-once')) return pair;
    // The goal's pair again, loaded at once (bench/lib/at-once.ts), as the HTTP/1.1 pairs are.
    const h2Side = (label: string, target: Target): AtOnceSide => {
      const load = async (seconds: number) => {
        const r = await h2Load(target, seconds);
        return { requests: r.ok, rps: r.rps, failed: r.failures, detail: `${r.failures} failed` };
      };
      return { label, pids: target.pids, alive: target.alive, run: load, warm: () => load(options.quick ? 0.3 : options.warmupSeconds) };
    };
    log(`\nat once: cnfguard h2 against bare-h2, both loaded at once on the server CPU`);
    const atOnce = await loadAtOnce([h2Side('bare-h2', bare), h2Side('cnfguard h2', guard)], { ...atOnceRounds(options), log });
    return { ...pair, atOnce };
  } finally {
    for (const target of started) await target.stop();
  }
}

/**
 * The same HTTP/1.1 cache-hit load through each h2 side before any h2 request, one side at a time:
 * a gateway serves both protocols, and each side's JIT then has seen both (see h2Phase).
 */
async function h2History(options: Options, stack: Stack, targets: Target[]): Promise<void> {
  const base = loadBase(options, stack);
  for (const target of targets) {
    const run = await runLoad({ ...base, url: target.url, ...(options.quick ? { amount: quickWarmupRequests(options) } : { durationSeconds: 2 * options.warmupSeconds }) });
    log(`  HTTP/1.1 history ${target.name.padEnd(10)} ${String(run.rps).padStart(6)} req/s  (status ${JSON.stringify(run.statusCodes)})`);
  }
}

/** gRPC unary calls through cnfguard (mTLS, bound token, upstreamHttp2 route) against direct h2c to the same grpc-js server. */
async function grpcPhase(options: Options, stack: Stack): Promise<PairSummary> {
  const upstream = await spawnChild({ name: 'grpc-upstream', script: join(HERE, 'servers', 'grpc-upstream.ts'), cpu: stack.sideCpu });
  let guard: Target | undefined;
  try {
    const routes = [{ pathPrefix: '/bench.Echo', upstream: upstream.ready.url, upstreamHttp2: true }];
    guard = (await startTarget(stack, 'cnfguard', { guardConfig: { ...options.guardConfig, routes }, nodeFlags: options.nodeFlags, stdout: options.serverStdout })) as Target;
    const through = guard;
    const address = String(upstream.ready.address);
    log(`
gRPC unary: ${options.grpcConcurrency} calls in flight on one grpc-js channel; through cnfguard (mTLS, cached bound token, h2c upstream) and direct (h2c)`);
    const sidePids = () => [upstream.pid];
    return await pairedPhase(options, 'gRPC unary', [
      { name: 'through cnfguard', run: (seconds) => runGrpcLoad({ address: `localhost:${new URL(through.url).port}`, tls: { ca: stack.pki.certs.ca.cert, cert: stack.cert, key: stack.key, token: stack.token }, concurrency: options.grpcConcurrency, seconds, serverPids: through.pids, sidePids }) },
      { name: 'direct to the upstream', run: (seconds) => runGrpcLoad({ address, concurrency: options.grpcConcurrency, seconds, sidePids }) },
    ]);
  } finally {
    await guard?.stop();
    await upstream.stop();
  }
}

/** One side of the decisions phase, summarized over its rounds. */
interface DecisionSide {
  name: DecisionSideName;
  description: string;
  rps: number;
  rpsRounds: number[];
  p50Ms: number;
  p99Ms: number;
  serverCpuPct: number | undefined;
  loadgenCpuPct: number | undefined;
  upstreamCpuPct: number | undefined;
  foreignCpuPct: number | undefined;
  /** Median CPU µs per 2xx response of each process group (nginx, cnfguard): where the time goes. */
  cpuUsPerRequest: Record<string, number | undefined>;
  /** The same, round by round. */
  cpuUsRounds: Record<string, (number | undefined)[]>;
  errors: number;
  non2xx: number;
  statusCodes: Record<string, number>;
}

const DECISION_SIDES = {
  'nginx+cnfguard decisions': 'nginx (1 worker) terminating mTLS, auth_request to cnfguard /nginx, then proxying to the upstream: examples/decision-api/nginx.conf as is',
  'nginx+cnfguard decisions, socket': 'the same recipe with its decision upstream on the Unix socket (`server unix:...`; decisionApi.socket, a trustedProxies entry with unixSocket: true); the same cnfguard process',
  'cnfguard proxy': 'cnfguard as the proxy, its own mTLS listener',
  'nginx alone': 'nginx (1 worker) terminating mTLS and proxying to the upstream, no auth (the ceiling)',
  'nginx+baseline decisions': 'with --baseline: the same nginx recipe asking the baseline checkout\'s decision API (the before of an A/B)',
} as const;
type DecisionSideName = keyof typeof DECISION_SIDES;

interface DecisionsSummary {
  nginx: string;
  /** cnfguard's config in both roles: the defaults (logLevel info) and any --guard-config, plus decisionApi and trustedProxies for the decision side. */
  config: string;
  sides: DecisionSide[];
  /** Medians of the per-round ratios. Goal: decisionsVsProxy >= 1.3. */
  decisionsVsProxy: number | undefined;
  decisionsVsNginxAlone: number | undefined;
  /** Medians of per-round ratios of cnfguard's CPU µs per request: decision / proxy (goal <= 0.5), and with --baseline the baseline's decision / the same proxy and this decision / the baseline's. */
  cpuShare: { decisionVsProxy: number | undefined; socketDecisionVsProxy: number | undefined; socketVsTcpDecision: number | undefined; baselineDecisionVsProxy?: number | undefined; decisionVsBaselineDecision?: number | undefined };
  /** The proxy and the decision cnfguard (over TCP, then the socket) loaded at once, nginx moved off the server CPU: see decisionsAtOnce. */
  atOnce: AtOnceSummary[];
  /**
   * The sides (but nginx alone) loaded in turn at one paced rate, far below what saturates a core:
   * a sidecar's load. Unsaturated, each request pays its own wake-ups (the proxy two: the client's
   * request, the upstream's answer; a decision one), which a saturated loop shares among many.
   */
  paced?: { rate: number; cpuShare: DecisionCpuShare; cpuUsRounds: Record<string, (number | undefined)[]> };
}

type DecisionCpuShare = DecisionsSummary['cpuShare'];

/** The median of per-round ratios of cnfguard's CPU µs per request, side `a` over side `b`. */
function cnfguardCpuRatio(runs: Map<DecisionSideName, RoundResult[]>, a: DecisionSideName, b: DecisionSideName): number | undefined {
  const [x, y] = [runs.get(a) ?? [], runs.get(b) ?? []];
  const r = median(x.map((run, i) => (run.partsCpuUs?.cnfguard ?? Number.NaN) / (y[i]?.partsCpuUs?.cnfguard ?? Number.NaN)).filter(Number.isFinite));
  return Number.isFinite(r) ? Math.round(r * 1000) / 1000 : undefined;
}

function cpuShareOf(runs: Map<DecisionSideName, RoundResult[]>, withBaseline: boolean): DecisionCpuShare {
  return {
    decisionVsProxy: cnfguardCpuRatio(runs, 'nginx+cnfguard decisions', 'cnfguard proxy'),
    socketDecisionVsProxy: cnfguardCpuRatio(runs, 'nginx+cnfguard decisions, socket', 'cnfguard proxy'),
    socketVsTcpDecision: cnfguardCpuRatio(runs, 'nginx+cnfguard decisions, socket', 'nginx+cnfguard decisions'),
    ...(withBaseline && {
      baselineDecisionVsProxy: cnfguardCpuRatio(runs, 'nginx+baseline decisions', 'cnfguard proxy'),
      decisionVsBaselineDecision: cnfguardCpuRatio(runs, 'nginx+cnfguard decisions', 'nginx+baseline decisions'),
    }),
  };
}

/** One line of the CPU shares (goal: a decision <= 0.5 of a proxied request). */
function cpuShareLine(share: DecisionCpuShare): string {
  return `TCP ${fixed(share.decisionVsProxy, 3) ?? '?'}, Unix socket ${fixed(share.socketDecisionVsProxy, 3) ?? '?'} (goal <= 0.5; median of per-round ratios); socket / TCP decision ${fixed(share.socketVsTcpDecision, 3) ?? '?'}${share.baselineDecisionVsProxy === undefined ? '' : `; baseline's decision / the same proxy: ${fixed(share.baselineDecisionVsProxy, 3) ?? '?'}; this decision / the baseline's: ${fixed(share.decisionVsBaselineDecision, 3) ?? '?'}`}`;
}

/**
 * Issue 16's figure: is nginx asking cnfguard (auth_request, the README recipe) faster than
 * cnfguard proxying itself? Three sides loaded in turn, round after round, like the main load:
 * nginx + a cnfguard serving only decisions, a cnfguard as the proxy, and nginx alone. Both
 * cnfguards run the default config (logLevel info); the decision one adds `decisionApi` and
 * trusts nginx (127.0.0.1) for `x-client-cert`. Every server under test shares the server CPU, so
 * "nginx+cnfguard" is two processes on one core, against one.
 */
async function decisionsPhase(options: Options, stack: Stack, bin: string): Promise<DecisionsSummary> {
  const stops: (() => Promise<void>)[] = [];
  const child = { cpu: stack.serverCpu, nodeFlags: options.nodeFlags, stdout: options.serverStdout ? ('inherit' as const) : ('ignore' as const) };
  try {
    const decisionPort = await freePort();
    const trustedProxies = [{ cidrs: ['127.0.0.1/32'], header: 'x-client-cert', format: 'pem-urlencoded' }];
    // One decision cnfguard on both transports: each side's rounds count its CPU while only that side is loaded.
    const decisionSocket = join(stack.workDir, 'decision.sock');
    const decider = await spawnChild({
      name: 'cnfguard-decisions',
      script: join(HERE, 'servers', 'guard.ts'),
      args: [guardConfigFile(stack, 'cnfguard-decisions', { ...options.guardConfig, decisionApi: { host: '127.0.0.1', port: decisionPort, socket: decisionSocket }, trustedProxies: [...trustedProxies, { unixSocket: true, header: 'x-client-cert', format: 'pem-urlencoded' }] })],
      ...child,
    });
    stops.push(() => decider.stop());
    const proxy = await spawnChild({ name: 'cnfguard-proxy', script: join(HERE, 'servers', 'guard.ts'), args: [guardConfigFile(stack, 'cnfguard-default', { ...options.guardConfig })], ...child });
    stops.push(() => proxy.stop());
    // --baseline: the same decision config on the baseline checkout, behind its own nginx (the A/B's before).
    const baselinePort = options.baseline === undefined ? undefined : await freePort();
    const baselineDecider =
      baselinePort === undefined || options.baseline === undefined
        ? undefined
        : await spawnChild({ name: 'baseline-decisions', script: join(options.baseline, 'bench', 'servers', 'guard.ts'), args: [guardConfigFile(stack, 'baseline-decisions', { ...options.guardConfig, decisionApi: { host: '127.0.0.1', port: baselinePort }, trustedProxies })], ...child });
    if (baselineDecider !== undefined) stops.push(() => baselineDecider.stop());
    const nginxBase = { bin, cert: stack.pki.files.server.cert, key: stack.pki.files.server.key, upstream: stack.upstream.ready.url, cpu: stack.serverCpu };
    /** An nginx in `dir` running the decision recipe (examples/decision-api/nginx.conf) against `decisionUrl`, stopped with the phase. */
    const recipeFront = async (dir: string, decisionUrl: string): Promise<NginxServer> => {
      const started = await startNginx({
        ...nginxBase,
        dir: join(stack.workDir, dir),
        http: (port) => nginxRecipe({ serverCert: nginxBase.cert, serverKey: nginxBase.key, decisionUrl, upstreamUrl: nginxBase.upstream, listen: `127.0.0.1:${port}` }),
      });
      stops.push(() => started.stop());
      return started;
    };
    const front = await recipeFront('nginx-decisions', `http://127.0.0.1:${decisionPort}`);
    const socketFront = await recipeFront('nginx-decisions-socket', `unix:${decisionSocket}`);
    const alone = await startNginx({ ...nginxBase, dir: join(stack.workDir, 'nginx-alone') });
    stops.push(() => alone.stop());
    const baselineFront = baselinePort === undefined ? undefined : await recipeFront('nginx-baseline-decisions', `http://127.0.0.1:${baselinePort}`);
    // The floor of a check on Node (no checks, no access line), loaded only at once: --skip floor leaves it out.
    const withFloor = !options.skip.has('floor') && !options.skip.has('at-once');
    const floorServer = withFloor ? await spawnChild({ name: 'bare-decision', script: join(HERE, 'servers', 'bare-decision.ts'), ...child }) : undefined;
    if (floorServer !== undefined) stops.push(() => floorServer.stop());
    const floorFront = floorServer === undefined ? undefined : await recipeFront('nginx-bare-decisions', floorServer.ready.url);
    log(`
decisions (issue 16): nginx ${front.version} with auth_request to cnfguard's decision API, against cnfguard as the proxy, against nginx alone; cnfguard's default config${Object.keys(options.guardConfig).length === 0 ? ' (logLevel info)' : ` + ${JSON.stringify(options.guardConfig)}`}`);
    const sides: LoadTarget<DecisionSideName>[] = [
      { name: 'nginx+cnfguard decisions', url: front.url, pids: () => [...front.pids(), decider.pid], alive: () => front.alive() && decider.alive(), parts: { nginx: front.pids, cnfguard: () => [decider.pid] } },
      { name: 'cnfguard proxy', url: proxy.ready.url, pids: () => [proxy.pid], alive: () => proxy.alive(), parts: { cnfguard: () => [proxy.pid] } },
      { name: 'nginx+cnfguard decisions, socket', url: socketFront.url, pids: () => [...socketFront.pids(), decider.pid], alive: () => socketFront.alive() && decider.alive(), parts: { nginx: socketFront.pids, cnfguard: () => [decider.pid] } },
      { name: 'nginx alone', url: alone.url, pids: alone.pids, alive: alone.alive, parts: { nginx: alone.pids } },
    ];
    if (baselineFront !== undefined && baselineDecider !== undefined) {
      sides.push({ name: 'nginx+baseline decisions', url: baselineFront.url, pids: () => [...baselineFront.pids(), baselineDecider.pid], alive: () => baselineFront.alive() && baselineDecider.alive(), parts: { nginx: baselineFront.pids, cnfguard: () => [baselineDecider.pid] } });
    }
    const runs = await loadPhase(options, stack, sides);
    const atOnce = options.skip.has('at-once') ? [] : await decisionsAtOnce(options, stack, proxy, decider, { TCP: front, socket: socketFront }, stack.serverCpu === undefined || stack.sideCpu === undefined ? undefined : { server: stack.serverCpu, side: stack.sideCpu }, {
      baseline: baselineFront !== undefined && baselineDecider !== undefined ? { front: baselineFront, decider: baselineDecider } : undefined,
      floor: floorFront !== undefined && floorServer !== undefined ? { front: floorFront, server: floorServer } : undefined,
    });
    const ratio = (a: DecisionSideName, b: DecisionSideName): number | undefined => {
      const [x, y] = [runs.get(a) ?? [], runs.get(b) ?? []];
      const r = median(x.map((run, i) => run.rps / (y[i]?.rps ?? Number.NaN)));
      return Number.isFinite(r) ? Math.round(r * 100) / 100 : undefined;
    };
    // A sidecar's load rather than its ceiling: the same sides (but nginx alone) in turn at one paced rate.
    const pacedSides = sides.filter((side) => side.name !== 'nginx alone');
    const pacedRuns = options.decisionRate > 0 && !options.skip.has('paced') ? await loadPhase(options, stack, pacedSides, options.decisionRate) : undefined;
    const opt = (values: (number | undefined)[]) => {
      const m = median(values.filter((v): v is number => v !== undefined));
      return Number.isFinite(m) ? Math.round(m) : undefined;
    };
    return {
      nginx: front.version,
      config: `${Object.keys(options.guardConfig).length === 0 ? 'cnfguard defaults (logLevel info: one access line per request, to /dev/null)' : `cnfguard defaults with --guard-config ${JSON.stringify(options.guardConfig)}`}; the decision side adds decisionApi (port and socket) and trustedProxies [127.0.0.1/32 and unixSocket, x-client-cert, pem-urlencoded]`,
      sides: sides.map(({ name }) => {
        const list = runs.get(name) ?? [];
        const statusCodes: Record<string, number> = {};
        for (const run of list) for (const [code, n] of Object.entries(run.statusCodes)) statusCodes[code] = (statusCodes[code] ?? 0) + n;
        return {
          name,
          description: DECISION_SIDES[name],
          rps: Math.round(median(list.map((r) => r.rps))),
          rpsRounds: list.map((r) => r.rps),
          p50Ms: Math.round(median(list.map((r) => r.p50Ms)) * 100) / 100,
          p99Ms: Math.round(median(list.map((r) => r.p99Ms)) * 100) / 100,
          serverCpuPct: opt(list.map((r) => r.serverCpuPct)),
          loadgenCpuPct: opt(list.map((r) => r.loadgenCpuPct)),
          upstreamCpuPct: opt(list.map((r) => r.upstreamCpuPct)),
          foreignCpuPct: opt(list.map((r) => r.foreignCpuPct)),
          cpuUsPerRequest: Object.fromEntries(Object.keys(list[0]?.partsCpuUs ?? {}).map((part) => [part, opt(list.map((r) => r.partsCpuUs?.[part]))])),
          cpuUsRounds: Object.fromEntries(Object.keys(list[0]?.partsCpuUs ?? {}).map((part) => [part, list.map((r) => r.partsCpuUs?.[part])])),
          errors: list.reduce((a, r) => a + r.errors + r.timeouts, 0),
          non2xx: list.reduce((a, r) => a + r.non2xx, 0),
          statusCodes,
        };
      }),
      decisionsVsProxy: ratio('nginx+cnfguard decisions', 'cnfguard proxy'),
      decisionsVsNginxAlone: ratio('nginx+cnfguard decisions', 'nginx alone'),
      cpuShare: cpuShareOf(runs, baselineFront !== undefined),
      atOnce,
      ...(pacedRuns !== undefined && {
        paced: {
          rate: options.decisionRate,
          cpuShare: cpuShareOf(pacedRuns, baselineFront !== undefined),
          cpuUsRounds: Object.fromEntries(pacedSides.map((side) => [side.name, (pacedRuns.get(side.name) ?? []).map((run) => run.partsCpuUs?.cnfguard)])),
        },
      }),
    };
  } finally {
    for (const stop of stops.reverse()) await stop().catch((err: unknown) => log(`decisions phase: stop failed: ${String(err)}`));
  }
}

/**
 * The decision goal's pair loaded at once, as the HTTP/1.1 and h2 pairs are (bench/lib/at-once.ts):
 * the proxy cnfguard against the decision cnfguard, each with its own load, over TCP and then over
 * the socket. Loaded in turn, this phase's rounds swing more than the goal's margin (a proxied
 * request 71-184 µs within one run); at once both sides take the same swings. The front nginx is
 * moved to the client CPU meanwhile, so that the server CPU holds the two cnfguards and nothing
 * else, as in the other pairs (three processes there inflated the proxy's CPU per request, turn 5);
 * the ratio is of the two cnfguards' CPU per request, nginx's not counted.
 */
async function decisionsAtOnce(options: Options, stack: Stack, proxy: ChildServer, decider: ChildServer, fronts: Record<'TCP' | 'socket', NginxServer>, cpus: { server: string; side: string } | undefined, extra: { baseline?: { front: NginxServer; decider: ChildServer } | undefined; floor?: { front: NginxServer; server: ChildServer } | undefined }): Promise<AtOnceSummary[]> {
  const base = loadBase(options, stack);
  // --quick warms each side with 200 requests, as the other pairs do (20,000 otherwise).
  const warm = options.quick ? 200 : undefined;
  const proxySide = autocannonSide('cnfguard proxy', { url: proxy.ready.url, pids: () => [proxy.pid], alive: () => proxy.alive() }, base, warm);
  const deciderSide = (name: string, front: NginxServer, server: ChildServer) => autocannonSide(name, { url: front.url, pids: () => [server.pid], alive: () => front.alive() && server.alive() }, base, warm);
  const results: AtOnceSummary[] = [];
  /** Loads `a` and `b` at once with the `moved` fronts on the client CPU meanwhile (without pinning, e.g. bench-smoke's --no-pin, nothing is moved). */
  const loadPair = async (moved: readonly NginxServer[], title: string, a: AtOnceSide, b: AtOnceSide): Promise<void> => {
    const move = (to: 'side' | 'server') => {
      if (cpus !== undefined) for (const front of moved) for (const pid of front.pids()) pinProcess(pid, cpus[to]);
    };
    move('side');
    try {
      log(`\nat once: ${title}${cpus === undefined ? '' : ', nginx on the client CPU meanwhile'}`);
      results.push(await loadAtOnce([a, b], { ...atOnceRounds(options), log }));
    } finally {
      move('server');
    }
  };
  for (const [transport, front] of Object.entries(fronts)) {
    await loadPair([front], `the proxy cnfguard against the decision cnfguard behind nginx (${transport})`, proxySide, deciderSide(`cnfguard decisions, ${transport}`, front, decider));
  }
  const { baseline, floor } = extra;
  // The floor: a bare node:http server answering every check as a decision does (bench/servers/bare-decision.ts),
  // against a proxied request, and against cnfguard's decision.
  if (floor !== undefined) {
    const floorSide = deciderSide('bare decisions, TCP', floor.front, floor.server);
    await loadPair([floor.front], 'the proxy cnfguard against a bare node:http check answer behind nginx (TCP)', proxySide, floorSide);
    await loadPair([floor.front, fronts.TCP], 'a bare node:http check answer against the decision cnfguard, each behind its own nginx (TCP)', floorSide, deciderSide('cnfguard decisions, TCP', fronts.TCP, decider));
  }
  // --baseline: the before/after of a decision itself, both over TCP behind their own nginx.
  if (baseline !== undefined) {
    await loadPair([baseline.front, fronts.TCP], 'the baseline decision cnfguard against this one, each behind its own nginx (TCP)', deciderSide('baseline decisions, TCP', baseline.front, baseline.decider), deciderSide('cnfguard decisions, TCP', fronts.TCP, decider));
  }
  return results;
}

function printDecisions(d: DecisionsSummary, machine: MachineInfo): void {
  log(
    table(
      ['target', 'req/s', 'min-max req/s', 'p50 ms', 'p99 ms', 'server CPU%', 'loadgen CPU%', 'upstream CPU%', 'others CPU%', 'errors+non2xx'],
      d.sides.map((s) => [s.name, s.rps, `${Math.min(...s.rpsRounds)}-${Math.max(...s.rpsRounds)}`, fixed(s.p50Ms, 2), fixed(s.p99Ms, 2), s.serverCpuPct, s.loadgenCpuPct, s.upstreamCpuPct, s.foreignCpuPct, s.errors + s.non2xx]),
    ),
  );
  log(`  nginx+cnfguard decisions / cnfguard proxy: ${fixed(d.decisionsVsProxy, 2) ?? '?'}x (goal >= 1.3; median of per-round ratios)`);
  log(`  nginx+cnfguard decisions / nginx alone: ${fixed(d.decisionsVsNginxAlone, 2) ?? '?'}x (what asking cnfguard costs nginx)`);
  log(`  cnfguard CPU per decision / per proxied request: ${cpuShareLine(d.cpuShare)}`);
  log(`  cnfguard CPU µs per request by round: ${d.sides.filter((s) => s.cpuUsRounds.cnfguard !== undefined).map((s) => `${s.name}: ${s.cpuUsRounds.cnfguard?.join(' ')}`).join('; ')}`);
  log(`  CPU µs per request (median of rounds): ${d.sides.map((s) => `${s.name}: ${Object.entries(s.cpuUsPerRequest).map(([part, us]) => `${part} ${us ?? '?'}`).join(' + ')}`).join('; ')}`);
  log(`  server CPU% of nginx+cnfguard is nginx's worker and master plus cnfguard, sharing the server CPU; ${machineLine(machine)}`);
  for (const s of d.sides.filter((x) => x.errors + x.non2xx > 0)) log(`  WARNING ${s.name}: ${s.errors} errors, ${s.non2xx} non-2xx ${JSON.stringify(s.statusCodes)}`);
  if (d.paced !== undefined) {
    log(`  paced, each side in turn at ${d.paced.rate} req/s in all: cnfguard CPU per decision / per proxied request: ${cpuShareLine(d.paced.cpuShare)}`);
    log(`    cnfguard CPU µs per request by round: ${Object.entries(d.paced.cpuUsRounds).map(([name, rounds]) => `${name}: ${rounds.join(' ')}`).join('; ')}`);
  }
  // The goal's figure from the pairs loaded at once: the decision's CPU per request over the proxy's (<= 0.5).
  printAtOnce(d.atOnce, machine);
}

interface MemoryResult {
  run: string;
  capped: boolean;
  maxEntries: number;
  slowFill: boolean;
  baseline: MemoryPoint;
  checkpoints: MemoryPoint[];
}

async function memoryPhase(stack: Stack, tokens: number): Promise<MemoryResult[]> {
  const q = (f: number) => Math.round(tokens * f);
  const runs = [
    // Tokens arriving with traffic: GC keeps up (forced after every 1000 lookups).
    { run: 'steady fill', maxEntries: tokens, total: tokens, slowFill: true, checkpoints: [q(0.25), q(0.5), q(0.75), tokens] },
    { run: 'steady fill, capped', maxEntries: q(0.5), total: q(1.5), slowFill: true, checkpoints: [q(0.25), q(0.5), q(0.75), tokens, q(1.25), q(1.5)] },
    // All at once (1000 concurrent lookups at a time, GC only at checkpoints): V8 keeps the pages it grew into.
    { run: 'burst fill', maxEntries: tokens, total: tokens, slowFill: false, checkpoints: [q(0.5), tokens] },
  ];
  const results: MemoryResult[] = [];
  for (const run of runs) {
    const file = guardConfigFile(stack, `memory-${run.maxEntries}`, {
      logLevel: 'warn',
      introspection: {
        url: stack.as.introspectionUrl,
        clientId: 'rs',
        clientSecret: 'rs-secret',
        ca: stack.pki.files.ca,
        cache: { maxEntries: run.maxEntries, maxTtlSeconds: 3600 },
        // The fill is 100k+ distinct tokens a second through app.tokens: no introspection budget.
        budget: { perPeerPerSecond: 0, totalPerSecond: 0 },
        probeAtStartup: false,
      },
    });
    const child = await spawnChild({ name: 'memory', script: join(HERE, 'servers', 'memory.ts'), args: [file], nodeFlags: ['--expose-gc'] });
    try {
      const answer = await child.call<{ baseline: MemoryPoint; checkpoints: MemoryPoint[] }>({ type: 'fill', tokens: run.total, checkpoints: run.checkpoints, slowFill: run.slowFill }, 300_000);
      results.push({ run: run.run, capped: run.total > run.maxEntries, maxEntries: run.maxEntries, slowFill: run.slowFill, baseline: answer.baseline, checkpoints: answer.checkpoints });
    } finally {
      await child.stop();
    }
  }
  return results;
}

// ---------------------------------------------------------------- main

async function withStack<T>(options: Options, body: (stack: Stack, machine: MachineInfo, cleanups: (() => Promise<void>)[]) => Promise<T>): Promise<T> {
  const pinning = options.pin && machineInfo(false).cores >= 2 && hasTaskset();
  if (pinning) pinProcess(process.pid, options.clientCpus);
  const machine = machineInfo(pinning);
  log(machineLine(machine));
  log(
    pinning
      ? `pinning: servers under test on CPU ${options.serverCpus}; load generator, upstream and AS on CPU ${options.clientCpus} (taskset)`
      : `pinning: OFF (${options.pin ? (machine.cores < 2 ? 'fewer than 2 cores' : 'taskset not found') : '--no-pin'}): all processes share all cores`,
  );
  log(noiseNote(machine.loadavg, machine.cores));
  const cleanups: (() => Promise<void>)[] = [];
  try {
    const workDir = join(ROOT, '.tmp', 'bench');
    mkdirSync(workDir, { recursive: true });
    const pki = await createPki();
    cleanups.push(() => pki.cleanup());
    const upstream = await spawnChild({ name: 'upstream', script: join(HERE, 'servers', 'upstream.ts'), cpu: pinning ? options.clientCpus : undefined });
    cleanups.push(() => upstream.stop());
    const as = await startAuthorizationServer({ tls: pki.certs.server, accessTokenTtlSeconds: 3600 });
    cleanups.push(() => as.stop());
    const token = await as.issueToken({ clientCert: pki.certs.clients.client1, caCert: pki.certs.ca.cert });
    const stack: Stack = {
      pki,
      as,
      upstream,
      token,
      cert: pki.certs.clients.client1.cert,
      key: pki.certs.clients.client1.key,
      serverCpu: pinning ? options.serverCpus : undefined,
      sideCpu: pinning ? options.clientCpus : undefined,
      workDir,
    };
    return await body(stack, machine, cleanups);
  } finally {
    for (const cleanup of cleanups.reverse()) await cleanup().catch((err: unknown) => log(`cleanup failed: ${String(err)}`));
  }
}

async function benchmark(options: Options): Promise<void> {
  const startedAt = new Date().toISOString();
  await withStack(options, async (stack, machine, cleanups) => {
    const targets: Target[] = [];
    const skipped: string[] = [];
    for (const name of options.targets) {
      const target = await startTarget(stack, name, { guardConfig: options.guardConfig, nodeFlags: options.nodeFlags, stdout: options.serverStdout, workers: options.workers, baseline: options.baseline });
      if (target === undefined) {
        skipped.push(`${name}: not installed (looked for NGINX_BIN, /usr/sbin/nginx, PATH)`);
        log(`  ${name}: skipped, not installed`);
        continue;
      }
      targets.push(target);
      cleanups.push(() => target.stop());
    }
    log(`targets: ${targets.map((t) => t.name).join(', ')}  (client1 certificate, one cached token; all forward to the same upstream)`);

    // Cache-miss tokens are issued before any load so issuing does not disturb the measurements.
    const missTokens = options.skip.has('miss') ? [] : await issueTokens(stack.as, stack.pki, options.missTokens);

    const runs = await loadPhase(options, stack, targets);
    const atOnce = options.skip.has('at-once') ? [] : await atOncePhase(options, stack, targets);
    const rss = new Map(targets.map((t) => [t.name, t.pids().reduce<number | undefined>((a, pid) => (a ?? 0) + (rssMbOf(pid) ?? 0), undefined)]));
    const mainGuard = targets.find((t) => t.name === 'cnfguard');
    const h2 = mainGuard !== undefined && !options.skip.has('h2') ? await h2Phase(options, stack, targets.some((t) => t.name === 'baseline')) : undefined;
    const grpcUnary = mainGuard !== undefined && !options.skip.has('grpc') ? await grpcPhase(options, stack) : undefined;
    const nginxBin = options.noNginx ? undefined : findNginx();
    if (!options.skip.has('decisions') && nginxBin === undefined) skipped.push(`decisions phase: nginx ${options.noNginx ? 'left out (--no-nginx)' : 'not installed'}`);
    const decisions = options.skip.has('decisions') || nginxBin === undefined ? undefined : await decisionsPhase(options, stack, nginxBin);
    const summary = summarizeTargets(
      targets.map((t) => t.name),
      runs,
      rss,
    );

    const guard = targets.find((t) => t.name === 'cnfguard') ?? targets.find((t) => t.name.startsWith('cnfguard') && t.adminUrl !== undefined);
    const hitPath =
      guard?.adminUrl === undefined
        ? undefined
        : {
            target: guard.name,
            cacheHits: await scrapeCounter(guard.adminUrl, 'cnfguard_token_cache_hits_total'),
            cacheMisses: await scrapeCounter(guard.adminUrl, 'cnfguard_token_cache_misses_total'),
          };

    let cacheMiss: (CacheMissResult & { target: string }) | undefined;
    if (guard?.adminUrl !== undefined && missTokens.length > 0) {
      // One client sending hundreds of new tokens a second is what the per-peer introspection
      // budget (50 new tokens/s by default) answers with 429: this phase measures cache misses, so
      // it runs the same config as the throughput target with the budget off, in a guard of its own.
      const missGuard = await startMissGuard(stack, guard.name === 'cnfguard' ? 'warn' : 'info', options);
      log(`\ncache miss: ${missTokens.length} requests one after another, each with a new token, on one keep-alive connection to ${guard.name}'s config with the introspection budget off`);
      try {
        cacheMiss = {
          target: `${guard.name} (budget off)`,
          ...(await runCacheMiss({
            guardUrl: missGuard.url,
            adminUrl: missGuard.adminUrl,
            tokens: missTokens,
            hitToken: stack.token,
            cert: stack.cert,
            key: stack.key,
            asIntrospectionUrl: stack.as.introspectionUrl,
            asCa: stack.pki.certs.ca.cert,
            asCredentials: { clientId: 'rs', clientSecret: 'rs-secret' },
            asCalls: () => stack.as.introspectionCalls(),
          })),
        };
      } finally {
        await missGuard.stop();
      }
    }

    const handshakes: Record<string, { full: HandshakeResult; resumed: HandshakeResult }> = {};
    if (!options.skip.has('handshake')) {
      const concurrency = 8;
      log(`\nnew connections: one request per mTLS connection (Connection: close), ${concurrency} at a time, ${options.quick ? '40 connections' : 'up to 3 s'} per target and mode`);
      for (const target of targets.filter((t) => !['node-static', 'bare-proxy3', 'bare-proxy3-weakmap'].includes(t.name))) {
        const { port, hostname } = new URL(target.url);
        const base = { host: hostname, port: Number(port), token: stack.token, cert: stack.cert, key: stack.key, concurrency, maxConnections: options.quick ? 40 : 100_000, maxSeconds: options.quick ? 10 : 3 };
        const full = await runHandshakes({ ...base, mode: 'full' });
        const resumed = await runHandshakes({ ...base, mode: 'resumed' });
        handshakes[target.name] = { full, resumed };
      }
    }

    for (const target of targets) await target.stop();

    let memory: MemoryResult[] | undefined;
    if (!options.skip.has('memory')) {
      log(`\nmemory: ${options.memoryTokens} distinct cached tokens through app.tokens (injected introspect), maxEntries ${Math.round(options.memoryTokens / 2)} with ${Math.round((options.memoryTokens * 3) / 2)} tokens, and a burst fill`);
      memory = await memoryPhase(stack, options.memoryTokens);
    }

    // Start-up (issue 18): fresh `bin/cnfguard.js` processes, unpinned, after the load is over.
    let startup: StartupResult[] | undefined;
    if (!options.skip.has('startup')) {
      const file = guardConfigFile(stack, 'startup', { logLevel: 'info' });
      const rounds = options.quick ? 1 : 5;
      log(`\nstart-up: bin/cnfguard.js, exec -> exit (run: exec -> "cnfguard started"), cold / warm (median of ${rounds}) / no compile cache`);
      startup = await measureStartup(
        join(ROOT, 'bin', 'cnfguard.js'),
        [
          { name: '--help', args: ['--help'] },
          { name: 'check', args: ['check', '-c', file] },
          { name: 'run (listening)', args: ['run', '-c', file], until: 'cnfguard started' },
        ],
        rounds,
      );
    }

    // Idle RSS (issue 32): bench/idle-rss.ts in its own processes, the build and the floor under it.
    let idleRss: { text: string; results: unknown } | undefined;
    if (!options.skip.has('idle')) {
      log('\nidle RSS: bench/idle-rss.ts (cnfguard run idle: sources, build, V8 settings; the floor package by package)');
      const file = join(stack.workDir, 'idle-rss.json');
      const { stdout } = await promisify(execFile)(process.execPath, [join(HERE, 'idle-rss.ts'), ...(options.quick ? ['--quick'] : []), ...(options.baseline === undefined ? [] : ['--baseline', options.baseline]), '--out', file], { encoding: 'utf8', maxBuffer: 1 << 22 });
      idleRss = { text: stdout.replace(/\n*written to .*\n*$/, ''), results: JSON.parse(readFileSync(file, 'utf8')) as unknown };
    }

    const loadEnd = loadAverage();
    // ------------------------------------------------------------ report
    log(`\n=== cnfguard benchmark${options.quick ? ' (QUICK: a few hundred requests per target, numbers are not meaningful)' : ''} ===`);
    log(machineLine(machine));
    log(`pinning: ${machine.pinning ? `servers on CPU ${options.serverCpus}, load generator + upstream + AS on CPU ${options.clientCpus}` : 'off'}; load average before ${machine.loadavg.join(' ')}, after ${loadEnd.join(' ')}`);
    const foreign = median(summary.map((s) => s.foreignCpuPct ?? Number.NaN));
    if (machine.loadavg[0] / machine.cores > 0.25 || foreign > 20) {
      log(`NOISY: other processes used ~${Number.isFinite(foreign) ? foreign : '?'}% of a core during the load runs; ratios within a round are the figures to trust`);
    }
    log(`\ncache-hit throughput: ${options.connections} keep-alive mTLS connections, same client certificate and token, median of ${options.rounds} rounds; ratios are medians of per-round ratios`);
    printTargets(summary);
    const assertionRatio = summary.find((s) => s.name === 'cnfguard-assertion')?.ratioVsCnfguard;
    if (assertionRatio !== undefined) {
      const cpu = (name: string) => summary.find((s) => s.name === name)?.cpuUsPerRequest;
      log(`  assertion on / off (cnfguard-assertion x cnfguard, same run): ${fixed(assertionRatio, 2)} (goal >= 0.9); server CPU per request ${cpu('cnfguard-assertion') ?? '?'} µs vs ${cpu('cnfguard') ?? '?'} µs`);
    }
    log('  CPU% = % of one core during the run; "others" = every other process on the machine (noise). When loadgen + upstream');
    log('  CPU% reaches ~100 (they share one core), the client side is the limit and that row is a lower bound (see node-static).');
    for (const s of skipped) log(`  skipped ${s}`);
    if (hitPath !== undefined) log(`  ${hitPath.target} token cache during the load: ${hitPath.cacheHits ?? '?'} hits, ${hitPath.cacheMisses ?? '?'} misses`);
    const bad = summary.filter((s) => s.errors + s.non2xx > 0);
    for (const s of bad) log(`  WARNING ${s.name}: ${s.errors} errors, ${s.non2xx} non-2xx ${JSON.stringify(s.statusCodes)}`);

    printAtOnce(atOnce, machine);

    if (h2 !== undefined) {
      log(`\nh2 cache-hit throughput (${options.h2Sessions} sessions x ${options.h2Streams} streams; goal cnfguard / bare-h2 >= 1.0):`);
      printPair(h2, 'req');
      if (h2.atOnce !== undefined) printAtOnce([h2.atOnce], machine);
    }
    if (grpcUnary !== undefined) {
      log(`\ngRPC unary calls (${options.grpcConcurrency} in flight; direct is plaintext h2c, cnfguard adds mTLS and the checks):`);
      printPair(grpcUnary, 'calls');
      log('  the grpc-js client shares its core with the upstream: when loadgen CPU% nears 100, the client is the limit');
    }

    if (decisions !== undefined) {
      log(`\ndecisions: nginx ${decisions.nginx} + cnfguard's decision API vs cnfguard as the proxy vs nginx alone (${options.connections} keep-alive mTLS connections, cache hits, median of ${options.rounds} rounds; ${decisions.config}):`);
      printDecisions(decisions, machine);
    }

    if (cacheMiss !== undefined) {
      log(`\ncache miss (${cacheMiss.target}, sequential, one connection):`);
      log(
        table(
          ['path', 'requests', 'p50 ms', 'p99 ms', 'mean ms'],
          [
            ['miss (new token each request)', cacheMiss.miss.requests, fixed(cacheMiss.miss.p50Ms, 2), fixed(cacheMiss.miss.p99Ms, 2), fixed(cacheMiss.miss.meanMs, 2)],
            ['hit (same token)', cacheMiss.hit.requests, fixed(cacheMiss.hit.p50Ms, 2), fixed(cacheMiss.hit.p99Ms, 2), fixed(cacheMiss.hit.meanMs, 2)],
            ['AS introspection alone', cacheMiss.asRoundTrip.requests, fixed(cacheMiss.asRoundTrip.p50Ms, 2), fixed(cacheMiss.asRoundTrip.p99Ms, 2), fixed(cacheMiss.asRoundTrip.meanMs, 2)],
          ],
        ),
      );
      log(
        `  AS introspection calls: ${cacheMiss.asCalls} for ${cacheMiss.miss.requests + cacheMiss.miss.failures} requests = ${cacheMiss.asCallsPerRequest} per request; cnfguard counted ${cacheMiss.guardCacheMisses ?? '?'} misses, ${cacheMiss.guardIntrospections ?? '?'} introspections${cacheMiss.miss.failures > 0 ? `; ${cacheMiss.miss.failures} FAILED` : ''}`,
      );
      log(
        `  miss - hit: p50 ${(cacheMiss.miss.p50Ms - cacheMiss.hit.p50Ms).toFixed(2)} ms, mean ${(cacheMiss.miss.meanMs - cacheMiss.hit.meanMs).toFixed(2)} ms; one AS round trip: p50 ${cacheMiss.asRoundTrip.p50Ms.toFixed(2)} ms from the orchestrator (same process as the AS), mean ${cacheMiss.guardIntrospectionMeanMs?.toFixed(2) ?? '?'} ms as cnfguard timed its introspection calls`,
      );
    }

    if (Object.keys(handshakes).length > 0) {
      log('\nnew connections (connect + mTLS handshake + 1 request, Connection: close, 8 concurrent):');
      log(
        table(
          ['target', 'full conn/s', 'full p50 ms', 'full p99 ms', 'resumed conn/s', 'resumed p50 ms', 'resumed p99 ms', 'resumed share', 'failures'],
          Object.entries(handshakes).map(([name, h]) => [
            name,
            h.full.perSecond,
            fixed(h.full.p50Ms, 2),
            fixed(h.full.p99Ms, 2),
            h.resumed.perSecond,
            fixed(h.resumed.p50Ms, 2),
            fixed(h.resumed.p99Ms, 2),
            fixed(h.resumed.resumedShare, 2),
            h.full.failures + h.resumed.failures,
          ]),
        ),
      );
    }

    if (memory !== undefined) {
      log('\nmemory of the token cache (cnfguard via createApp, injected introspect; RSS and heap after full GC, MB):');
      log(
        table(
          ['run', 'maxEntries', 'tokens looked up', 'cached', 'RSS MB', 'RSS +MB vs empty', 'heap used MB', 'heap used +MB', 'heap reserved MB', 'external MB'],
          memory.flatMap((m) => [
            [m.run, m.maxEntries, 0, m.baseline.cacheSize, m.baseline.rssMb, 0, m.baseline.heapUsedMb, 0, m.baseline.heapTotalMb, m.baseline.externalMb],
            ...m.checkpoints.map((p) => [
              m.run,
              m.maxEntries,
              p.tokens,
              p.cacheSize,
              p.rssMb,
              Math.round((p.rssMb - m.baseline.rssMb) * 10) / 10,
              p.heapUsedMb,
              Math.round((p.heapUsedMb - m.baseline.heapUsedMb) * 10) / 10,
              p.heapTotalMb,
              p.externalMb,
            ]),
          ]),
        ),
      );
    }

    if (startup !== undefined) {
      log('\nstart-up (goals: --help and check <= 300 ms, run listening <= 500 ms; warm CPU = user+system):');
      log(
        table(
          ['command', 'cold ms', 'warm ms', 'warm CPU ms', 'no cache ms', 'peak RSS MB', 'idle RSS MB'],
          startup.map((r) => [r.name, fixed(r.coldMs, 0), fixed(r.warmMs, 0), fixed(r.warmCpuMs, 0), fixed(r.noCacheMs, 0), fixed(r.maxRssMb, 1), fixed(r.idleRssMb, 1)]),
        ),
      );
    }
    if (idleRss !== undefined) log(`\n${idleRss.text.trim()}`);

    const result = {
      kind: options.quick ? 'quick' : 'full',
      startedAt,
      finishedAt: new Date().toISOString(),
      machine,
      loadavgBefore: machine.loadavg,
      loadavgAfter: loadEnd,
      settings: {
        rounds: options.rounds,
        durationSeconds: options.quick ? undefined : options.durationSeconds,
        warmupSeconds: options.quick ? undefined : options.warmupSeconds,
        requestsPerRun: options.quick ? options.quickRequests : undefined,
        connections: options.connections,
        pipelining: 1,
        loadGenerator: 'autocannon 9 (tlsOptions with the client certificate), exact per-request latency samples',
        pinning: machine.pinning,
      },
      targets: summary,
      h2,
      grpcUnary,
      atOnce,
      decisions,
      skipped,
      hitPath,
      cacheMiss,
      handshakes,
      memory,
      startup,
      idleRss: idleRss?.results,
    };
    mkdirSync(join(options.out, '..'), { recursive: true });
    writeFileSync(options.out, `${JSON.stringify(result, null, 2)}\n`);
    log(`\nresults written to ${options.out}`);
  });
}

async function profile(options: Options): Promise<void> {
  await withStack(options, async (stack) => {
    const dir = join(stack.workDir, 'profiles');
    mkdirSync(dir, { recursive: true });
    const profiles: { target: TargetName; file: string; rps: number; requests: number; summary: ProfileSummary }[] = [];
    for (const targetName of options.profileTargets) {
      const name = `${targetName}-${Date.now()}.cpuprofile`;
      const target = (await startTarget(stack, targetName, {
        guardConfig: options.guardConfig,
        nodeFlags: [...options.nodeFlags, '--cpu-prof', '--cpu-prof-dir', dir, '--cpu-prof-name', name],
        stdout: options.serverStdout,
      })) as Target;
      let requests: number;
      let rps: number;
      try {
        const base = { url: target.url, token: stack.token, cert: stack.cert, key: stack.key, connections: options.connections, serverPids: target.pids, sidePids: () => [stack.upstream.pid] };
        const h2 = { ...base, ca: stack.pki.certs.ca.cert, sessions: options.h2Sessions, streams: options.h2Streams };
        const load = (seconds: number) => (options.profileH2 ? runH2Load({ ...h2, seconds }).then((r) => ({ ...r, statusCodes: { failed: r.failures } })) : runLoad({ ...base, durationSeconds: seconds }));
        log(`\nprofiling ${target.name}: warm-up ${options.warmupSeconds} s, then ${options.profileSeconds} s of cache-hit load${options.profileH2 ? ' over h2' : ''} (the profile covers start-up and warm-up too)`);
        const warm = await load(options.warmupSeconds);
        const loading = load(options.profileSeconds);
        if (options.heapSample && target.child !== undefined) {
          await new Promise((r) => setTimeout(r, 2000));
          const heap = await target.child.call<{ totalKb: number; sites: { stack: string; kb: number; pct: number }[] }>({ type: 'heapSample', seconds: 1.5 }, 60_000);
          log(`  heap sample (1.5 s under load): ${heap.totalKb} KB sampled objects not yet collected; top allocation sites:`);
          for (const site of heap.sites) log(`    ${String(site.pct).padStart(5)}%  ${String(site.kb).padStart(7)} KB  ${site.stack}`);
        }
        const result = await loading;
        assertAlive(target);
        requests = warm.requests + result.requests;
        rps = result.rps;
        log(`  under the profiler: ${result.rps} req/s, p50 ${result.p50Ms} ms, p99 ${result.p99Ms} ms, server CPU ${result.serverCpuPct ?? '-'}% (${JSON.stringify(result.statusCodes)})`);
      } finally {
        await target.stop();
      }
      const file = join(dir, name);
      const summary = summarizeProfile(JSON.parse(readFileSync(file, 'utf8')) as CpuProfile, { top: 40, requests });
      log(`\n${formatSummary(summary, `${target.name} (${file})`)}`);
      profiles.push({ target: targetName, file, rps, requests, summary });
      const out = join(HERE, 'results', `profile-${targetName}.json`);
      mkdirSync(join(out, '..'), { recursive: true });
      writeFileSync(out, `${JSON.stringify({ target: targetName, profile: file, at: new Date().toISOString(), rpsUnderProfiler: rps, requests, summary }, null, 2)}\n`);
      log(`\nsummary written to ${out}`);
    }
    if (profiles.length > 1) {
      log('\nCPU per request by package / subsystem (µs of busy CPU per request served, start-up included):');
      const names = [...new Set(profiles.flatMap((p) => p.summary.categories.map((c) => c.name)))];
      const per = (p: (typeof profiles)[number], category: string) => p.summary.categories.find((c) => c.name === category)?.usPerRequest;
      const rows = names
        .map((category) => [category, ...profiles.map((p) => per(p, category))])
        .filter((row) => row.slice(1).some((v) => typeof v === 'number' && v >= 0.5))
        .sort((a, b) => Math.max(...(b.slice(1) as number[]).map((v) => v ?? 0)) - Math.max(...(a.slice(1) as number[]).map((v) => v ?? 0)));
      log(table(['category', ...profiles.map((p) => p.target)], [['TOTAL busy', ...profiles.map((p) => p.summary.busyUsPerRequest)], ...rows]));
    }
    log('open a .cpuprofile in Chrome DevTools (Performance panel) or speedscope for a flame graph');
  });
}

const options = parseOptions(process.argv.slice(2));
// A hard ceiling on the whole run, whatever hangs.
const ceiling = setTimeout(() => {
  process.stderr.write('bench: gave up after the overall time limit\n');
  process.exit(3);
}, (options.quick ? 120 : 1800) * 1000);
ceiling.unref();
try {
  if (options.profile) await profile(options);
  else await benchmark(options);
} catch (err) {
  process.stderr.write(`bench: ${(err as Error).stack ?? String(err)}\n`);
  process.exitCode = 1;
}
