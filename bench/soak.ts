/**
 * The bounded soak (issue 6, item 5): minutes of mixed traffic through a real cnfguard while the
 * authorization server is killed and restarted and the upstream flaps, then proof that nothing was
 * let through wrongly, nothing valid was lost outside the outages, memory stayed flat and nothing
 * leaked.
 *
 *   node --expose-gc bench/soak.ts [--seconds 180] [--rate 400] [--concurrency 6] [--shared-state] [--out FILE]
 *
 * --shared-state adds a real redis-server as cnfguard's sharedState, killed and restarted every
 * 15 s; its outages excuse no failure (valid Bearer mTLS requests fall back to the AS).
 *
 * Everything runs in this process on 127.0.0.1: certificates made now, the demo authorization
 * server (oidc-provider; on a port chosen at the first start and reused on every restart), an
 * upstream of our own that checks every request it receives against the binding of the token it
 * carries (so the upstream itself detects a wrongly allowed request), and cnfguard loaded from a
 * YAML file through the real config loader with a 2 s cache TTL so introspection keeps happening.
 *
 * Traffic: a few closed loops over undici keep-alive agents with client certificates, each request
 * of a random category: valid bound requests (client1, client2 on their own certificates), stolen
 * tokens on another certificate (also with forged identity headers), no certificate, garbage
 * tokens, unbound tokens, a certificate outside tls.clientCa, malformed Authorization headers.
 *
 * Requests are classified by time against the outage windows (AS down: from the kill until new
 * tokens are issued by the restarted AS, whose memory lost the old ones; upstream down: from the
 * stop until it listens again), each extended by a recovery margin. A JSON summary goes to stdout
 * and to bench/results/soak-latest.json; the exit code is 1 when a check fails.
 *
 * `runSoak({ seconds, log })` runs the same in-process (test/e2e/soak-short.test.ts).
 */
import { randomBytes, X509Certificate } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Agent, request } from 'undici';
import { stringify } from 'yaml';
import { startAuthorizationServer, type AuthorizationServer } from '../demo/authorization-server.ts';
import { createApp, type App, type StartedApp } from '../src/app.ts';
import { ConfigError, loadConfigFile } from '../src/config/load.ts';
import { createLogger } from '../src/log.ts';
import { thumbprintS256 } from '../src/tls/certificates.ts';
import { startAttackers, type AttackerStats } from './lib/attackers.ts';
import type { PemPair } from '../src/tls/dev-certs.ts';

/** pino's level number of a log line, whether it names its level (`"level":"warn"`) or numbers it. */
const LEVEL_NUMBERS: Readonly<Record<string, string>> = { trace: '10', debug: '20', info: '30', warn: '40', error: '50', fatal: '60' };
function levelNumber(line: string): string | undefined {
  const value = /"level":"?([a-z0-9]+)/.exec(line)?.[1];
  return value === undefined ? undefined : (LEVEL_NUMBERS[value] ?? value);
}
import { startRedis, type RedisServer } from '../test/fixtures/redis.ts';
import { createPki, type Pki } from '../test/fixtures/stack.ts';

// ---------------------------------------------------------------------------------------------
// Options and results

export interface OutageSchedule {
  /** First outage, ms after traffic starts. */
  firstMs: number;
  /** Between outage starts. */
  everyMs: number;
  /** How long the service stays down (a restart then takes what it takes). */
  downMs: number;
}

export interface SoakOptions {
  seconds: number;
  log?: (line: string) => void;
  /** Closed traffic loops. Default 6. */
  concurrency?: number;
  /** Requests per second over all loops; 0 for as fast as they go. Default 400. */
  rate?: number;
  /** Outage schedules; default scaled to `seconds` (AS down 3 s every 15 s, the upstream 2 s every 15 s, interleaved). */
  asOutages?: OutageSchedule;
  upstreamOutages?: OutageSchedule;
  /** After an outage ends, how long failures still count as the outage's. Default: introspection timeout + the breaker's open time + 1 s. */
  recoveryMarginMs?: number;
  /** cnfguard's introspection circuit breaker open time. Default 1. */
  breakerOpenSeconds?: number;
  /** Heap growth (after forced GC) from warm-up to the end that fails the run. Default 50. */
  maxHeapGrowthPct?: number;
  /** Top-level cnfguard config keys to replace, e.g. `{ binding: 'report-only' }` to prove the checks catch a hole. */
  guardOverrides?: Record<string, unknown>;
  /** Run the attackers beside the traffic (silent sockets, slow forms, aborted uploads). Default true. */
  attackers?: boolean;
  /** Where the summary is written; undefined for nowhere. Default bench/results/soak-latest.json from the CLI only. */
  resultFile?: string | undefined;
  /**
   * Run with `sharedState` on a real redis-server (issue 14) that is killed and restarted on
   * `storeOutages` (default: 3 s down every 15 s, between the other outages). A store outage
   * excuses nothing: valid Bearer mTLS requests must keep working through it.
   */
  sharedState?: boolean;
  storeOutages?: OutageSchedule;
}

export const CATEGORIES = [
  'valid_client1',
  'valid_client2',
  'stolen_token',
  'stolen_token_forged_headers',
  'missing_certificate',
  'garbage_token',
  'unbound_token',
  'untrusted_certificate',
  'malformed_authorization',
  'junk_jwt',
] as const;
export type Category = (typeof CATEGORIES)[number];

const VALID: ReadonlySet<Category> = new Set(['valid_client1', 'valid_client2']);
const WEIGHTS: Record<Category, number> = {
  valid_client1: 22,
  valid_client2: 22,
  stolen_token: 12,
  stolen_token_forged_headers: 6,
  missing_certificate: 10,
  garbage_token: 10,
  unbound_token: 7,
  untrusted_certificate: 6,
  malformed_authorization: 5,
  // JWT-shaped junk with no certificate: the AS answers 400, which must not open the breaker.
  junk_jwt: 8,
};

export interface CategoryStats {
  mustDeny: boolean;
  count: number;
  /** Status -> count; `error` for a request that got no response. */
  statuses: Record<string, number>;
  /** Completed while an outage (or its recovery margin) was on. */
  duringOutage: number;
  /** Valid categories: not 200 outside every outage window. */
  lost: number;
  /** Must-deny categories: got a 1xx-3xx answer, or the upstream answered it. */
  wronglyAllowed: number;
  /** A status no rule expects (e.g. a 500, a must-deny 503 outside an AS outage, a valid 401 during an upstream outage). */
  unexpected: number;
}

export interface OutageWindow {
  kind: 'authorization-server' | 'upstream';
  index: number;
  /** Seconds after traffic start: the kill, the service listening again, and (AS) new tokens issued. */
  downAtS: number;
  upAtS: number | undefined;
  /** The window's end: the AS with new tokens issued, the upstream listening. */
  endAtS: number | undefined;
  /** Valid requests that failed during this outage or its recovery margin. */
  validFailures: number;
  /** Valid requests that failed after the margin, before the next outage (counted as lost). */
  lostAfter: number;
  /** The last valid failure after the window's end, in ms after it: how long recovery really took (0: none after the end). */
  lastValidFailureAfterEndMs: number;
  /** The first valid request sent after the window's end that succeeded, ms after the end. */
  firstOkAfterEndMs: number | undefined;
}

export interface MemorySample {
  atS: number;
  rssMb: number;
  heapUsedMb: number;
  /** V8's committed heap: RSS follows this high-water mark, not heapUsed. */
  heapTotalMb: number;
  externalMb: number;
  arrayBuffersMb: number;
  tokenCacheEntries: number;
}

export interface SoakSummary {
  kind: 'soak';
  startedAt: string;
  seconds: number;
  node: string;
  settings: { concurrency: number; rate: number; recoveryMarginMs: number; cacheMaxTtlSeconds: number; breakerOpenSeconds: number; asOutages: OutageSchedule; upstreamOutages: OutageSchedule };
  totals: { requests: number; rps: number; valid: number; validOk: number; mustDeny: number; wronglyAllowed: number; lostValid: number; unexpected: number; clientErrors: number };
  categories: Record<Category, CategoryStats>;
  outages: OutageWindow[];
  upstream: { hits: number; violations: number; violationSamples: string[]; violationSamplesByCategory: string[]; restarts: number };
  authorizationServer: { restarts: number; introspectionCalls: number; tokenGenerations: number };
  guard: { logLines: number; warnLines: number; errorLines: number; errorSamples: string[]; warnSamples: string[]; circuit: string[]; metrics: Record<string, number> };
  memory: {
    gcForced: boolean;
    warmup: MemorySample | undefined;
    end: MemorySample | undefined;
    heapGrowthPct: number | undefined;
    rssGrowthPct: number | undefined;
    /** Only runs of 30 s or more are judged. */
    checked: boolean;
    /** The highest RSS of the timeline (the whole soak process: cnfguard, AS, upstream, clients, attackers). */
    peakRssMb: number;
    /** Every 5 s, without forcing GC: `[s, rssMb, heapUsedMb, heapTotalMb]`. */
    timeline: [number, number, number, number][];
  };
  /** What the attackers did and what the server did to them (undefined when they did not run). */
  attackers: AttackerStats | undefined;
  /** `[s, 1 while the introspection circuit is open or probing]`, every second. */
  circuitTimeline: [number, number][];
  /** With `sharedState`: the store's outages and the valid requests that met them. */
  sharedState?: { storeOutages: { index: number; downAtS: number; upAtS: number | undefined }[]; restarts: number; validDuringStoreOutages: number; validOkDuringStoreOutages: number; replicaMetrics: Record<string, number> };
  handles: { before: Record<string, number>; after: Record<string, number>; leaked: Record<string, number> };
  samples: { lost: string[]; unexpected: string[]; wronglyAllowed: string[] };
  checks: Record<'noWronglyAllowed' | 'noUpstreamViolations' | 'noLostValid' | 'noUnexpectedStatus' | 'memoryFlat' | 'noLeakedHandles', boolean>;
  failures: string[];
  passed: boolean;
}

// ---------------------------------------------------------------------------------------------
// Small helpers

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));
const round = (n: number, digits = 1): number => Math.round(n * 10 ** digits) / 10 ** digits;
const mb = (bytes: number): number => round(bytes / 2 ** 20, 1);

function resourceCounts(): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const type of process.getActiveResourcesInfo()) counts[type] = (counts[type] ?? 0) + 1;
  return counts;
}

function leakedResources(before: Record<string, number>, after: Record<string, number>): Record<string, number> {
  const leaked: Record<string, number> = {};
  for (const [type, n] of Object.entries(after)) if (n > (before[type] ?? 0)) leaked[type] = n - (before[type] ?? 0);
  return leaked;
}

/** `gc` from --expose-gc, or enabled at run time (the flag is honoured by contexts made after it is set). */
function garbageCollector(): (() => void) | undefined {
  const exposed = (globalThis as { gc?: () => void }).gc;
  if (typeof exposed === 'function') return exposed;
  try {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as unknown;
    return typeof gc === 'function' ? (gc as () => void) : undefined;
  } catch {
    return undefined;
  }
}

async function settledMemory(gc: (() => void) | undefined): Promise<NodeJS.MemoryUsage> {
  if (gc !== undefined) {
    for (let i = 0; i < 3; i++) {
      gc();
      await sleep(20);
    }
  }
  return process.memoryUsage();
}

function pick<T extends string>(weights: Record<T, number>): T {
  const entries = Object.entries(weights) as [T, number][];
  const total = entries.reduce((sum, [, w]) => sum + w, 0);
  let r = Math.random() * total;
  for (const [key, w] of entries) {
    r -= w;
    if (r < 0) return key;
  }
  return entries[entries.length - 1]![0];
}

/** A bounded list of examples. */
class Samples {
  readonly items: string[] = [];
  readonly max: number;
  constructor(max = 20) {
    this.max = max;
  }
  add(item: string): void {
    if (this.items.length < this.max) this.items.push(item);
  }
}

function defaultSchedules(seconds: number): { as: OutageSchedule; upstream: OutageSchedule } {
  const ms = seconds * 1000;
  if (seconds >= 40) {
    return { as: { firstMs: 10_000, everyMs: 15_000, downMs: 3_000 }, upstream: { firstMs: 17_500, everyMs: 15_000, downMs: 2_000 } };
  }
  // Short runs: one of each, interleaved, both ending well before the run does.
  return {
    as: { firstMs: Math.round(ms * 0.2), everyMs: ms, downMs: Math.min(3_000, Math.round(ms * 0.15)) },
    upstream: { firstMs: Math.round(ms * 0.6), everyMs: ms, downMs: Math.min(2_000, Math.round(ms * 0.12)) },
  };
}

// ---------------------------------------------------------------------------------------------
// The checking upstream

interface Binding {
  /** What the token is: only `bound` tokens on their own certificate may ever reach the upstream. */
  kind: 'bound' | 'unbound' | 'untrusted';
  thumbprint: string;
  sha256Hex: string;
  owner: string;
}

interface CheckingUpstream {
  url: string;
  port: number;
  hits(): number;
  violations: Samples;
  /** Up to 10 violation lines per request category. */
  violationsByCategory(): string[];
  violationCount(): number;
  /** Tells the upstream which certificate a token is bound to. */
  learn(token: string, binding: Binding): void;
  stop(): Promise<void>;
  /** Listens again on the same port. */
  restart(): Promise<void>;
}

async function listenOn(server: Server, port: number): Promise<number> {
  for (let attempt = 0; ; attempt++) {
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, '127.0.0.1', () => {
          server.off('error', reject);
          resolve();
        });
      });
      return (server.address() as AddressInfo).port;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || attempt >= 20) throw err;
      await sleep(100);
    }
  }
}

async function startCheckingUpstream(): Promise<CheckingUpstream> {
  const bindings = new Map<string, Binding>();
  const violations = new Samples(30);
  // A few samples per category too: the first 30 lines may all come from the first few requests.
  const byCategory = new Map<string, Samples>();
  let violationCount = 0;
  let hits = 0;

  const violation = (req: IncomingMessage, why: string): void => {
    violationCount++;
    const line = `${req.url ?? ''}: ${why}`;
    violations.add(line);
    const category = (req.url ?? '').split('/')[2] ?? '';
    let samples = byCategory.get(category);
    if (samples === undefined) byCategory.set(category, (samples = new Samples(10)));
    samples.add(line);
  };

  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    hits++;
    const authorization = req.headers.authorization ?? '';
    const token = /^Bearer +(\S+)$/i.exec(authorization)?.[1];
    const binding = token === undefined ? undefined : bindings.get(token);
    const category = (req.url ?? '').split('/')[2] ?? '';
    if (!VALID.has(category as Category)) violation(req, `a ${category || 'non-soak'} request reached the upstream`);
    if (binding === undefined) violation(req, token === undefined ? 'no bearer token' : 'a token the upstream was never told about');
    else {
      const thumbprint = req.headers['x-auth-cert-thumbprint'];
      if (binding.kind !== 'bound') violation(req, `a ${binding.kind} token (${binding.owner}) was forwarded`);
      if (thumbprint !== binding.thumbprint) violation(req, `x-auth-cert-thumbprint ${JSON.stringify(thumbprint)} is not the ${binding.owner} certificate the token is bound to`);
      const xfcc = req.headers['x-forwarded-client-cert'];
      if (typeof xfcc !== 'string' || !xfcc.startsWith(`Hash=${binding.sha256Hex};`)) violation(req, `x-forwarded-client-cert does not carry the ${binding.owner} certificate's hash`);
      if (req.headers['x-auth-client-id'] !== 'app') violation(req, `x-auth-client-id ${JSON.stringify(req.headers['x-auth-client-id'])}`);
    }
    req.resume();
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json', 'x-soak-upstream': '1' });
      res.end('{"ok":true}');
    });
  };

  let server = createServer({ keepAliveTimeout: 5_000 }, handler);
  const port = await listenOn(server, 0);
  const stop = async (): Promise<void> => {
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeAllConnections();
    await closed;
  };
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    hits: () => hits,
    violations,
    violationsByCategory: () => [...byCategory.values()].flatMap((samples) => samples.items),
    violationCount: () => violationCount,
    learn: (token, binding) => void bindings.set(token, binding),
    stop,
    async restart() {
      server = createServer({ keepAliveTimeout: 5_000 }, handler);
      await listenOn(server, port);
    },
  };
}

// ---------------------------------------------------------------------------------------------
// cnfguard, with a log sink that keeps nothing but counts and a few warnings

interface LogSink {
  lines: number;
  warn: number;
  error: number;
  samples: Samples;
  /** Warnings other than the circuit's, first few. */
  warnings: Samples;
  /** The introspection circuit's state changes, as `t=…s state`. */
  circuit: Samples;
  write(line: string): void;
}

function createLogSink(clock: () => number): LogSink {
  const sink: LogSink = {
    lines: 0,
    warn: 0,
    error: 0,
    samples: new Samples(20),
    warnings: new Samples(20),
    circuit: new Samples(200),
    write(line: string) {
      sink.lines++;
      const level = levelNumber(line);
      if (level === '40') {
        sink.warn++;
        const state = /"msg":"introspection circuit ([a-z-]+)"/.exec(line)?.[1];
        if (state !== undefined) sink.circuit.add(`t=${round(clock() / 1000, 2)}s ${state}`);
        else sink.warnings.add(line.slice(0, 300));
      }
      if (level !== undefined && Number(level) >= 50) {
        sink.error++;
        sink.samples.add(line.slice(0, 500));
      }
    },
  };
  return sink;
}

async function startSoakGuard(pki: Pki, config: Record<string, unknown>, sink: LogSink, name = 'cnfguard-soak'): Promise<{ app: App; started: StartedApp }> {
  const file = join(pki.dir, `${name}.yaml`);
  await writeFile(file, stringify(config));
  const loaded = loadConfigFile(file, process.env);
  const app = createApp(loaded, { logger: createLogger(loaded.settings.logLevel, sink), defaultMetrics: false, watchCertificates: false });
  return { app, started: await app.start() };
}

async function guardMetrics(adminUrl: string | undefined): Promise<Record<string, number>> {
  if (adminUrl === undefined) return {};
  const res = await request(`${adminUrl}/metrics`, { headersTimeout: 5_000, bodyTimeout: 5_000 });
  const text = await res.body.text();
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    if (!/^cnfguard_(introspection_requests_total|token_cache_|introspection_circuit|circuit|requests_total|shared_state_)/.test(line)) continue;
    const space = line.lastIndexOf(' ');
    out[line.slice(0, space)] = Number(line.slice(space + 1));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The soak

interface Tokens {
  generation: number;
  client1: string;
  client2: string;
  selfSigned: string;
  unbound: string;
}

export async function runSoak(options: SoakOptions): Promise<SoakSummary> {
  const log = options.log ?? (() => {});
  const seconds = options.seconds;
  const durationMs = seconds * 1000;
  const concurrency = options.concurrency ?? 6;
  const rate = options.rate ?? 400;
  const schedules = defaultSchedules(seconds);
  const asSchedule = options.asOutages ?? schedules.as;
  const upstreamSchedule = options.upstreamOutages ?? schedules.upstream;
  const breakerOpenSeconds = options.breakerOpenSeconds ?? 1;
  const introspectionTimeoutMs = 1500;
  // A probe sent while the AS is coming up can hang until the introspection timeout, and the
  // circuit then opens once more: recovery may take that long after the AS is back.
  const marginMs = options.recoveryMarginMs ?? introspectionTimeoutMs + breakerOpenSeconds * 1000 + 1000;
  const cacheMaxTtlSeconds = 2;
  const maxHeapGrowthPct = options.maxHeapGrowthPct ?? 50;
  const gc = garbageCollector();
  const startedAt = new Date().toISOString();

  const handlesBefore = resourceCounts();
  let t0 = performance.now();
  const elapsed = (): number => performance.now() - t0;

  // --- the deployment --------------------------------------------------------------------------
  const pki = await createPki();
  const pairs: Record<'client1' | 'client2' | 'selfSigned', PemPair> = { client1: pki.certs.clients.client1, client2: pki.certs.clients.client2, selfSigned: pki.selfSigned };
  const certFacts = (pair: PemPair) => {
    const x509 = new X509Certificate(pair.cert);
    return { thumbprint: thumbprintS256(x509.raw), sha256Hex: x509.fingerprint256.replace(/:/g, '').toLowerCase() };
  };
  const facts = { client1: certFacts(pairs.client1), client2: certFacts(pairs.client2), selfSigned: certFacts(pairs.selfSigned) };

  let as: AuthorizationServer | undefined = await startAuthorizationServer({ tls: pki.certs.server });
  const asPort = Number(new URL(as.issuer).port);
  let asRestarts = 0;
  let introspectionCalls = 0;
  const upstream = await startCheckingUpstream();
  let upstreamRestarts = 0;
  let redis: RedisServer | undefined;
  let sharedStateConfig: Record<string, unknown> = {};
  if (options.sharedState === true) {
    redis = await startRedis();
    if (redis === undefined) throw new Error('--shared-state needs redis-server (scripts/install-test-deps.sh installs it)');
    const secretFile = join(pki.dir, 'shared-state-secret');
    await writeFile(secretFile, randomBytes(32), { mode: 0o600 });
    sharedStateConfig = { sharedState: { url: redis.url, secretFile } };
  }
  const storeSchedule = options.storeOutages ?? { firstMs: 5_000, everyMs: 15_000, downMs: 3_000 };
  const sink = createLogSink(() => elapsed());
  const config = {
    listen: { host: '127.0.0.1', port: 0 },
    tls: { cert: pki.files.server.cert, key: pki.files.server.key, clientCa: pki.files.ca },
    introspection: {
      url: as.introspectionUrl,
      clientId: 'rs',
      clientSecret: 'rs-secret',
      ca: pki.files.ca,
      timeoutMs: introspectionTimeoutMs,
      cache: { maxTtlSeconds: cacheMaxTtlSeconds },
      circuitBreaker: { openSeconds: breakerOpenSeconds },
    },
    upstream: upstream.url,
    binding: 'required',
    upstreamTimeoutMs: 5000,
    admin: { host: '127.0.0.1', port: 0 },
    shutdownGraceSeconds: 1,
    logLevel: 'info',
    ...sharedStateConfig,
    ...options.guardOverrides,
  };
  let guard: { app: App; started: StartedApp };
  /** With sharedState, a second replica on the same store: valid requests go to either, so entries one writes the other reads. */
  let replica: { app: App; started: StartedApp } | undefined;
  try {
    guard = await startSoakGuard(pki, config, sink);
    if (redis !== undefined) replica = await startSoakGuard(pki, config, sink, 'cnfguard-soak-replica');
  } catch (err) {
    await Promise.allSettled([as.stop(), upstream.stop(), redis?.cleanup()]);
    await pki.cleanup();
    if (err instanceof ConfigError) throw new Error(`soak config rejected: ${err.message}`, { cause: err });
    throw err;
  }
  const target = guard.started.url;
  const validTarget = (): string => (replica !== undefined && Math.random() < 0.5 ? replica.started.url : target);

  const agentFor = (pair: PemPair | undefined, localAddress: string): Agent =>
    new Agent({ localAddress, connect: { ca: pki.certs.ca.cert, ...(pair !== undefined && { cert: pair.cert, key: pair.key }) }, keepAliveTimeout: 4_000, connections: 8 });
  const agents = { client1: agentFor(pairs.client1, '127.0.0.1'), client2: agentFor(pairs.client2, '127.0.0.1'), selfSigned: agentFor(pairs.selfSigned, '127.0.0.1'), none: agentFor(undefined, '127.0.0.1') };
  // Must-deny traffic comes from another peer (127.0.0.2), as an attacker would: its made-up tokens
  // spend that peer's introspection budget (limits per peer), not the legitimate clients'. From one
  // address, the junk tokens' misses made valid clients' re-introspections answer 429.
  const attackerAgents = new Map<Agent, Agent>([
    [agents.client1, agentFor(pairs.client1, '127.0.0.2')],
    [agents.client2, agentFor(pairs.client2, '127.0.0.2')],
    [agents.selfSigned, agentFor(pairs.selfSigned, '127.0.0.2')],
    [agents.none, agentFor(undefined, '127.0.0.2')],
  ]);

  // --- tokens, per AS generation ----------------------------------------------------------------
  /** Tokens of this generation or older were issued by an AS that has since been killed. */
  let deadGeneration = -1;
  async function issueTokens(generation: number): Promise<Tokens> {
    const server = as;
    if (server === undefined) throw new Error('no authorization server');
    const issue = (pair: PemPair) => server.issueToken({ clientCert: pair, caCert: pki.certs.ca.cert });
    const [client1, client2, selfSigned, unbound] = await Promise.all([
      issue(pairs.client1),
      issue(pairs.client2),
      issue(pairs.selfSigned),
      server.issueToken({ clientId: 'plain-app', caCert: pki.certs.ca.cert }),
    ]);
    upstream.learn(client1, { kind: 'bound', owner: 'client1', ...facts.client1 });
    upstream.learn(client2, { kind: 'bound', owner: 'client2', ...facts.client2 });
    upstream.learn(selfSigned, { kind: 'untrusted', owner: 'selfSigned', ...facts.selfSigned });
    upstream.learn(unbound, { kind: 'unbound', owner: 'plain-app', thumbprint: '', sha256Hex: '' });
    return { generation, client1, client2, selfSigned, unbound };
  }
  let tokens: Tokens = await issueTokens(0);

  // --- bookkeeping --------------------------------------------------------------------------------
  const categories = Object.fromEntries(
    CATEGORIES.map((c) => [c, { mustDeny: !VALID.has(c), count: 0, statuses: {}, duringOutage: 0, lost: 0, wronglyAllowed: 0, unexpected: 0 } satisfies CategoryStats]),
  ) as Record<Category, CategoryStats>;
  const windows: (OutageWindow & { startMs: number; endMs: number | undefined; upMs: number | undefined })[] = [];
  /** Store outages: kept apart from `windows`, since they excuse no failure. */
  const storeWindows: { index: number; startMs: number; endMs: number | undefined }[] = [];
  let validDuringStoreOutages = 0;
  let validOkDuringStoreOutages = 0;
  let storeRestarts = 0;
  const lostSamples = new Samples();
  const unexpectedSamples = new Samples();
  const wronglyAllowedSamples = new Samples();
  let clientErrors = 0;

  function windowsAround(sentMs: number, doneMs: number): typeof windows {
    return windows.filter((w) => sentMs <= (w.endMs ?? Number.POSITIVE_INFINITY) + marginMs && doneMs >= w.startMs);
  }

  function record(category: Category, status: number, reachedUpstream: boolean, sentMs: number, doneMs: number, generation: number, why: string): void {
    const stats = categories[category];
    stats.count++;
    const key = status === 0 ? 'error' : String(status);
    stats.statuses[key] = (stats.statuses[key] ?? 0) + 1;
    if (status === 0) clientErrors++;
    const around = windowsAround(sentMs, doneMs);
    if (!stats.mustDeny && storeWindows.some((w) => sentMs <= (w.endMs ?? Number.POSITIVE_INFINITY) && doneMs >= w.startMs)) {
      validDuringStoreOutages++;
      if (status === 200 && reachedUpstream) validOkDuringStoreOutages++;
    }
    const asDown = around.some((w) => w.kind === 'authorization-server');
    const upstreamDown = around.some((w) => w.kind === 'upstream');
    if (around.length > 0) stats.duringOutage++;
    const at = `t=${round(doneMs / 1000, 2)}s`;
    if (stats.mustDeny) {
      if ((status >= 100 && status < 400) || reachedUpstream) {
        stats.wronglyAllowed++;
        wronglyAllowedSamples.add(`${at} ${category}: ${status}${reachedUpstream ? ' (upstream answered)' : ''}`);
      } else if (!(status >= 400 && status < 500) && !(asDown && status === 503)) {
        stats.unexpected++;
        unexpectedSamples.add(`${at} ${category}: ${key} ${why}`.trim());
      }
      return;
    }
    if (status === 200 && reachedUpstream) {
      const previous = lastEndedBefore(sentMs);
      if (previous?.endMs !== undefined && previous.firstOkAfterEndMs === undefined) previous.firstOkAfterEndMs = Math.round(doneMs - previous.endMs);
      return;
    }
    // A valid request that failed: its outage's, or lost.
    const stale = generation <= deadGeneration;
    const expected =
      // While the AS is down every uncached token is retried: the client's introspection budget
      // may answer 429 before the breaker's 503.
      (asDown && (status === 503 || status === 429 || (stale && status === 401))) || (upstreamDown && (status === 502 || status === 504 || status === 0 || (stale && status === 401)));
    if (around.length === 0) {
      stats.lost++;
      lostSamples.add(`${at} ${category}: ${key} ${why}`.trim());
    } else if (!expected) {
      stats.unexpected++;
      unexpectedSamples.add(`${at} ${category} during ${around.map((w) => `${w.kind}#${w.index}`).join('+')}: ${key} ${why}`.trim());
    }
    for (const w of around) w.validFailures++;
    // Recovery of the outage that ended last (not failures that belong to a later one).
    const previous = lastEndedBefore(doneMs);
    if (previous?.endMs !== undefined && around.every((w) => w === previous)) {
      if (around.length === 0) previous.lostAfter++;
      previous.lastValidFailureAfterEndMs = Math.max(previous.lastValidFailureAfterEndMs, Math.round(doneMs - previous.endMs));
    }
  }

  /** The outage that ended last before `ms`. */
  function lastEndedBefore(ms: number): (typeof windows)[number] | undefined {
    let found: (typeof windows)[number] | undefined;
    for (const w of windows) if (w.endMs !== undefined && w.endMs <= ms && (found === undefined || w.endMs > (found.endMs ?? 0))) found = w;
    return found;
  }

  // --- one request ------------------------------------------------------------------------------
  const garbage = (): string => {
    const chars = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/';
    if (Math.random() < 0.5) return randomBytes(32).toString('base64url');
    const bytes = randomBytes(1 + Math.floor(Math.random() * 120));
    return Array.from(bytes, (b) => chars[b % chars.length]).join('');
  };

  async function one(category: Category): Promise<void> {
    const current = tokens;
    let agent: Agent = agents.client1;
    let headers: string[] = [];
    const bearer = (token: string) => ['authorization', `Bearer ${token}`];
    const forged = (owner: 'client1' | 'client2') => ['x-auth-cert-thumbprint', facts[owner].thumbprint, 'x-forwarded-client-cert', `Hash=${facts[owner].sha256Hex}`, 'x-auth-client-id', 'app'];
    switch (category) {
      case 'valid_client1':
      case 'valid_client2': {
        const self = category === 'valid_client1' ? 'client1' : 'client2';
        const other = self === 'client1' ? 'client2' : 'client1';
        agent = agents[self];
        headers = bearer(current[self]);
        // Sometimes forge the other client's identity headers: cnfguard must replace them.
        if (Math.random() < 0.25) headers.push(...forged(other));
        break;
      }
      case 'stolen_token': {
        const variant = Math.floor(Math.random() * 3);
        agent = variant === 0 ? agents.client2 : agents.client1;
        headers = bearer(variant === 0 ? current.client1 : variant === 1 ? current.client2 : current.selfSigned);
        if (variant === 2) agent = agents.client2;
        break;
      }
      case 'stolen_token_forged_headers': {
        const victim = Math.random() < 0.5 ? 'client1' : 'client2';
        agent = victim === 'client1' ? agents.client2 : agents.selfSigned;
        headers = [...bearer(current[victim]), ...forged(victim)];
        break;
      }
      case 'missing_certificate':
        agent = agents.none;
        headers = bearer(Math.random() < 0.5 ? current.client1 : current.client2);
        if (Math.random() < 0.3) headers.push(...forged('client1'));
        break;
      case 'garbage_token':
        // No certificate: with one, the misses would be charged to that certificate's introspection
        // budget (cnfguard budgets per certificate before per address), and a holder of client1's
        // key sending junk is rightly slowed down, valid requests included.
        agent = agents.none;
        headers = bearer(garbage());
        break;
      case 'unbound_token':
        agent = Math.random() < 0.5 ? agents.client1 : agents.none;
        headers = bearer(current.unbound);
        break;
      case 'untrusted_certificate':
        // A token bound to a self-signed certificate, on that certificate: not from tls.clientCa.
        agent = agents.selfSigned;
        headers = bearer(current.selfSigned);
        break;
      case 'junk_jwt':
        agent = agents.none;
        headers = bearer(`eyJhbGciOiJub25lIn0.${Buffer.from(JSON.stringify({ sub: garbage() })).toString('base64url')}.`);
        break;
      case 'malformed_authorization': {
        const variants: string[][] = [
          ['authorization', `Bearer ${current.client1} extra`],
          ['authorization', `Basic ${Buffer.from('app:app-secret').toString('base64')}`],
          ['authorization', `Bearer ${current.client1}`, 'authorization', `Bearer ${current.client1}`],
          ['authorization', 'Bearer'],
          ['authorization', `Bearer "${current.client1}"`],
          [],
        ];
        headers = variants[Math.floor(Math.random() * variants.length)]!;
        agent = agents.client1;
        break;
      }
    }
    const sentMs = elapsed();
    let status = 0;
    let reached = false;
    let why = '';
    try {
      const res = await request(`${VALID.has(category) ? validTarget() : target}/soak/${category}`, { dispatcher: VALID.has(category) ? agent : (attackerAgents.get(agent) ?? agent), method: 'GET', headers, headersTimeout: 10_000, bodyTimeout: 10_000 });
      status = res.statusCode;
      reached = res.headers['x-soak-upstream'] === '1';
      const body = await res.body.text();
      if (status !== 200) why = body.slice(0, 160);
    } catch (err) {
      why = `${(err as { code?: string }).code ?? ''} ${(err as Error).message}`.slice(0, 160);
    }
    record(category, status, reached, sentMs, elapsed(), current.generation, why);
  }

  // --- outages ------------------------------------------------------------------------------------
  let running = true;
  const outageTasks: Promise<void>[] = [];

  async function asOutage(index: number): Promise<void> {
    const w = { kind: 'authorization-server' as const, index, startMs: elapsed(), endMs: undefined as number | undefined, upMs: undefined as number | undefined, downAtS: 0, upAtS: undefined, endAtS: undefined, validFailures: 0, lostAfter: 0, lastValidFailureAfterEndMs: 0, firstOkAfterEndMs: undefined as number | undefined };
    windows.push(w);
    deadGeneration = tokens.generation;
    const dying = as as AuthorizationServer;
    introspectionCalls += dying.introspectionCalls();
    as = undefined;
    log(`t=${round(w.startMs / 1000)}s authorization server #${index}: killed`);
    await dying.stop();
    await sleep(asSchedule.downMs);
    for (let attempt = 0; ; attempt++) {
      try {
        as = await startAuthorizationServer({ tls: pki.certs.server, port: asPort });
        break;
      } catch (err) {
        if (attempt >= 20) throw err;
        await sleep(100);
      }
    }
    asRestarts++;
    w.upMs = elapsed();
    tokens = await issueTokens(deadGeneration + 1);
    w.endMs = elapsed();
    log(`t=${round(w.endMs / 1000)}s authorization server #${index}: back on port ${asPort}, new tokens (generation ${tokens.generation})`);
  }

  async function upstreamOutage(index: number): Promise<void> {
    const w = { kind: 'upstream' as const, index, startMs: elapsed(), endMs: undefined as number | undefined, upMs: undefined as number | undefined, downAtS: 0, upAtS: undefined, endAtS: undefined, validFailures: 0, lostAfter: 0, lastValidFailureAfterEndMs: 0, firstOkAfterEndMs: undefined as number | undefined };
    windows.push(w);
    log(`t=${round(w.startMs / 1000)}s upstream #${index}: stopped`);
    await upstream.stop();
    await sleep(upstreamSchedule.downMs);
    await upstream.restart();
    upstreamRestarts++;
    w.upMs = w.endMs = elapsed();
    log(`t=${round(w.endMs / 1000)}s upstream #${index}: listening again on port ${upstream.port}`);
  }

  async function storeOutage(index: number): Promise<void> {
    const store = redis as RedisServer;
    const w = { index, startMs: elapsed(), endMs: undefined as number | undefined };
    storeWindows.push(w);
    log(`t=${round(w.startMs / 1000)}s store #${index}: killed`);
    await store.stop();
    await sleep(storeSchedule.downMs);
    await store.start();
    storeRestarts++;
    w.endMs = elapsed();
    log(`t=${round(w.endMs / 1000)}s store #${index}: listening again on port ${store.port}`);
  }

  /** Runs `outage` on its schedule while the run lasts; each outage must end (with a recovery) before the traffic does. */
  async function scheduler(schedule: OutageSchedule, outage: (index: number) => Promise<void>): Promise<void> {
    for (let index = 0; ; index++) {
      const at = schedule.firstMs + index * schedule.everyMs;
      if (at + schedule.downMs + 3_000 > durationMs || index > 1000) return;
      await sleep(at - elapsed());
      if (!running) return;
      await outage(index);
    }
  }

  // --- memory samples -------------------------------------------------------------------------------
  const sampleMemory = async (): Promise<MemorySample> => {
    const { rss, heapUsed, heapTotal, external, arrayBuffers } = await settledMemory(gc);
    return { atS: round(elapsed() / 1000), rssMb: mb(rss), heapUsedMb: mb(heapUsed), heapTotalMb: mb(heapTotal), externalMb: mb(external), arrayBuffersMb: mb(arrayBuffers), tokenCacheEntries: guard.app.tokens.size };
  };
  let warmup: MemorySample | undefined;
  const timeline: [number, number, number, number][] = [];
  const warmupAtMs = Math.max(3_000, Math.min(30_000, durationMs * 0.25));

  // --- traffic ---------------------------------------------------------------------------------------
  const maxPerLoop = Math.max(1000, Math.ceil((rate > 0 ? rate : 5000) * seconds * 2 / concurrency));
  async function loop(id: number): Promise<void> {
    const interval = rate > 0 ? (concurrency * 1000) / rate : 0;
    let next = elapsed() + (interval * id) / concurrency;
    for (let n = 0; n < maxPerLoop && elapsed() < durationMs; n++) {
      if (interval > 0) {
        next += interval;
        const wait = next - elapsed();
        if (wait > 0) await sleep(wait);
        else if (wait < -1000) next = elapsed();
      }
      await one(pick(WEIGHTS));
    }
  }

  let progress: NodeJS.Timeout | undefined;
  let failure: unknown;
  let attackerStats: AttackerStats | undefined;
  /** `[s, 1 while the introspection circuit is open or probing]`, every second. */
  const circuitTimeline: [number, number][] = [];
  try {
    t0 = performance.now();
    log(`soak: ${seconds}s, ${concurrency} loops at ${rate > 0 ? `${rate} req/s` : 'full speed'}, cnfguard ${target}, AS port ${asPort}, upstream port ${upstream.port}`);
    progress = setInterval(() => {
      const { rss, heapUsed, heapTotal } = process.memoryUsage();
      timeline.push([round(elapsed() / 1000), mb(rss), mb(heapUsed), mb(heapTotal)]);
      const total = Object.values(categories).reduce((sum, c) => sum + c.count, 0);
      const ok = categories.valid_client1.statuses['200'] ?? 0;
      log(`t=${round(elapsed() / 1000)}s requests=${total} valid_client1 200=${ok} upstream hits=${upstream.hits()} violations=${upstream.violationCount()}`);
    }, 5_000);
    outageTasks.push(scheduler(asSchedule, asOutage), scheduler(upstreamSchedule, upstreamOutage));
    if (redis !== undefined) outageTasks.push(scheduler(storeSchedule, storeOutage));
    const warm = (async () => {
      await sleep(warmupAtMs - elapsed());
      warmup = await sampleMemory();
      log(`t=${warmup.atS}s warm-up memory: rss ${warmup.rssMb} MB, heap ${warmup.heapUsedMb} MB, token cache ${warmup.tokenCacheEntries}`);
    })();
    const attack =
      options.attackers === false
        ? undefined
        : startAttackers({ port: guard.started.port, ca: pki.certs.ca.cert, client: pairs.client1, token: () => tokens.client1 });
    const circuitTimer = setInterval(() => {
      void guard.app.metrics.circuitOpen.get().then((metric) => circuitTimeline.push([round(elapsed() / 1000), metric.values[0]?.value ?? 0]));
    }, 1000);
    try {
      await Promise.all([...Array.from({ length: concurrency }, (_, i) => loop(i)), ...outageTasks, warm]);
    } finally {
      clearInterval(circuitTimer);
      attackerStats = await attack?.stop();
    }
  } catch (err) {
    failure = err;
  } finally {
    running = false;
    clearInterval(progress);
  }
  const end = failure === undefined ? await sampleMemory() : undefined;
  const metrics = await guardMetrics(guard.started.adminUrl).catch(() => ({}));
  const replicaMetrics = replica === undefined ? {} : await guardMetrics(replica.started.adminUrl).catch(() => ({}));
  const cacheEntries = guard.app.tokens.size;

  // --- shutdown: everything this run started --------------------------------------------------------
  await Promise.allSettled(outageTasks);
  await Promise.allSettled([...Object.values(agents), ...attackerAgents.values()].map((agent) => agent.close()));
  await guard.app.stop(1000);
  await replica?.app.stop(1000);
  if (as !== undefined) {
    introspectionCalls += as.introspectionCalls();
    await as.stop();
  }
  await upstream.stop();
  await redis?.cleanup();
  await pki.cleanup();
  if (failure !== undefined) throw failure;

  let handlesAfter = resourceCounts();
  for (let i = 0; i < 50 && Object.keys(leakedResources(handlesBefore, handlesAfter)).length > 0; i++) {
    await sleep(100);
    handlesAfter = resourceCounts();
  }
  const leaked = leakedResources(handlesBefore, handlesAfter);

  // --- the verdict ----------------------------------------------------------------------------------
  const all = Object.values(categories);
  const requests = all.reduce((sum, c) => sum + c.count, 0);
  const valid = all.filter((c) => !c.mustDeny);
  const wronglyAllowed = all.reduce((sum, c) => sum + c.wronglyAllowed, 0);
  const lostValid = valid.reduce((sum, c) => sum + c.lost, 0);
  const unexpected = all.reduce((sum, c) => sum + c.unexpected, 0);
  const memoryChecked = warmup !== undefined && end !== undefined && seconds >= 30;
  const heapGrowthPct = warmup && end ? round(((end.heapUsedMb - warmup.heapUsedMb) / warmup.heapUsedMb) * 100) : undefined;
  const rssGrowthPct = warmup && end ? round(((end.rssMb - warmup.rssMb) / warmup.rssMb) * 100) : undefined;
  const checks: SoakSummary['checks'] = {
    noWronglyAllowed: wronglyAllowed === 0,
    noUpstreamViolations: upstream.violationCount() === 0,
    noLostValid: lostValid === 0,
    noUnexpectedStatus: unexpected === 0,
    memoryFlat: !memoryChecked || (heapGrowthPct ?? 0) <= maxHeapGrowthPct,
    noLeakedHandles: Object.keys(leaked).length === 0,
  };
  const failures: string[] = [];
  if (!checks.noWronglyAllowed) failures.push(`${wronglyAllowed} must-deny requests were allowed`);
  if (!checks.noUpstreamViolations) failures.push(`the upstream saw ${upstream.violationCount()} requests without a valid binding`);
  if (!checks.noLostValid) failures.push(`${lostValid} valid requests failed outside every outage window`);
  if (!checks.noUnexpectedStatus) failures.push(`${unexpected} requests got a status no rule expects`);
  if (!checks.memoryFlat) failures.push(`heap grew ${heapGrowthPct}% from warm-up to the end (limit ${maxHeapGrowthPct}%)`);
  if (!checks.noLeakedHandles) failures.push(`resources left after shutdown: ${JSON.stringify(leaked)}`);

  const summary: SoakSummary = {
    kind: 'soak',
    startedAt,
    seconds,
    node: process.version,
    settings: { concurrency, rate, recoveryMarginMs: marginMs, cacheMaxTtlSeconds, breakerOpenSeconds, asOutages: asSchedule, upstreamOutages: upstreamSchedule },
    totals: {
      requests,
      rps: round(requests / seconds),
      valid: valid.reduce((sum, c) => sum + c.count, 0),
      validOk: valid.reduce((sum, c) => sum + (c.statuses['200'] ?? 0), 0),
      mustDeny: all.filter((c) => c.mustDeny).reduce((sum, c) => sum + c.count, 0),
      wronglyAllowed,
      lostValid,
      unexpected,
      clientErrors,
    },
    categories,
    outages: windows.map((w) => ({
      kind: w.kind,
      index: w.index,
      downAtS: round(w.startMs / 1000, 2),
      upAtS: w.upMs === undefined ? undefined : round(w.upMs / 1000, 2),
      endAtS: w.endMs === undefined ? undefined : round(w.endMs / 1000, 2),
      validFailures: w.validFailures,
      lostAfter: w.lostAfter,
      lastValidFailureAfterEndMs: w.lastValidFailureAfterEndMs,
      firstOkAfterEndMs: w.firstOkAfterEndMs,
    })),
    upstream: { hits: upstream.hits(), violations: upstream.violationCount(), violationSamples: upstream.violations.items, violationSamplesByCategory: upstream.violationsByCategory(), restarts: upstreamRestarts },
    authorizationServer: { restarts: asRestarts, introspectionCalls, tokenGenerations: deadGeneration + 2 },
    guard: { logLines: sink.lines, warnLines: sink.warn, errorLines: sink.error, errorSamples: sink.samples.items, warnSamples: sink.warnings.items, circuit: sink.circuit.items, metrics: { ...metrics, token_cache_entries_at_end: cacheEntries } },
    memory: { gcForced: gc !== undefined, warmup, end, heapGrowthPct, rssGrowthPct, checked: memoryChecked, peakRssMb: Math.max(0, ...timeline.map((point) => point[1])), timeline },
    attackers: attackerStats,
    circuitTimeline,
    ...(redis !== undefined && {
      sharedState: {
        storeOutages: storeWindows.map((w) => ({ index: w.index, downAtS: round(w.startMs / 1000, 2), upAtS: w.endMs === undefined ? undefined : round(w.endMs / 1000, 2) })),
        restarts: storeRestarts,
        validDuringStoreOutages,
        validOkDuringStoreOutages,
        replicaMetrics,
      },
    }),
    handles: { before: handlesBefore, after: handlesAfter, leaked },
    samples: { lost: lostSamples.items, unexpected: unexpectedSamples.items, wronglyAllowed: wronglyAllowedSamples.items },
    checks,
    failures,
    passed: failures.length === 0,
  };
  if (options.resultFile !== undefined) {
    await mkdir(dirname(options.resultFile), { recursive: true });
    await writeFile(options.resultFile, `${JSON.stringify(summary, null, 2)}\n`);
  }
  return summary;
}

// ---------------------------------------------------------------------------------------------
// CLI

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      seconds: { type: 'string', default: '180' },
      rate: { type: 'string', default: '400' },
      concurrency: { type: 'string', default: '6' },
      out: { type: 'string', default: join(import.meta.dirname, 'results', 'soak-latest.json') },
      'shared-state': { type: 'boolean', default: false },
    },
  });
  const seconds = Number(values.seconds);
  const rate = Number(values.rate);
  const concurrency = Number(values.concurrency);
  if (!(seconds >= 5 && seconds <= 3600) || !(rate >= 0) || !(concurrency >= 1 && concurrency <= 64)) {
    process.stderr.write('usage: node --expose-gc bench/soak.ts [--seconds 5..3600] [--rate N (0: full speed)] [--concurrency 1..64] [--shared-state] [--out FILE]\n');
    process.exit(2);
  }
  const summary = await runSoak({ seconds, rate, concurrency, sharedState: values['shared-state'], resultFile: values.out, log: (line) => process.stderr.write(`${line}\n`) });
  process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
  process.stderr.write(summary.passed ? `soak passed (${values.out})\n` : `soak FAILED:\n${summary.failures.map((f) => `  - ${f}`).join('\n')}\n`);
  // Explicit: a leaked handle (which fails the run) must not also keep the process alive.
  process.exit(summary.passed ? 0 : 1);
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().catch((err: unknown) => {
    process.stderr.write(`soak: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  });
}
