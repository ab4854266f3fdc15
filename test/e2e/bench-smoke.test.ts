/**
 * Keeps the benchmark (bench/run.ts) from rotting: its quick mode, a few hundred requests per
 * target, no nginx target, no CPU pinning. The decisions phase is bench-smoke-decisions.test.ts's,
 * start-up and idle memory bench-smoke-startup.test.ts's (each file well inside its timeout). Only
 * the shape of the results is checked, never speed.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { runQuickBench } from '../fixtures/quick-bench.ts';

interface TargetRow {
  name: string;
  rps: number;
  p50Ms: number;
  p99Ms: number;
  ratioVsBare?: number;
  errors: number;
  non2xx: number;
}

interface QuickResult {
  kind: string;
  machine: { cores: number; node: string; loadavg: number[] };
  targets: TargetRow[];
  cacheMiss: { asCalls: number; asCallsPerRequest: number; miss: { requests: number; failures: number }; guardIntrospections?: number };
  handshakes: Record<string, { full: { connections: number }; resumed: { connections: number; resumedShare: number } }>;
  memory: { maxEntries: number; checkpoints: { tokens: number; cacheSize: number }[] }[];
  h2?: PairRow & { atOnce?: { labels: [string, string]; rounds: unknown[]; cpuRatio: number } };
  grpcUnary?: PairRow;
  atOnce: { labels: [string, string]; rounds: { rps: [number, number]; cpuUs: [number, number] }[]; rpsRatio: number; cpuRatio: number }[];
}

interface PairRow {
  names: [string, string];
  rps: [number, number];
  failures: [number, number];
  ratio?: number;
}

let stdout = '';
let stderr = '';
let code: number | null;
let result: QuickResult;

beforeAll(async () => {
  ({ code, stdout, stderr, result } = await runQuickBench<QuickResult>(['--targets', 'cnfguard,bare-node', '--quick-requests', '200', '--miss-tokens', '10', '--memory-tokens', '2000', '--skip', 'decisions,startup,idle']));
}, 120_000);

describe('npm run bench -- --quick', () => {
  it('finishes and prints the table with the machine', () => {
    expect(code, `stdout:\n${stdout}\nstderr:\n${stderr}`).toBe(0);
    expect(stdout).toMatch(/^machine: .+, \d+ cores, .+Node v\d+/m);
    expect(stdout).toMatch(/^target\s+req\/s\s+min-max req\/s\s+p50 ms\s+p99 ms\s+x bare\s+x nginx/m);
    expect(stdout).toMatch(/^cnfguard\s+[1-9]\d*\s/m);
    expect(stdout).toMatch(/^bare-node\s+[1-9]\d*\s/m);
  });

  it('loads cnfguard and the bare forwarder with every request answered 200', () => {
    const byName = new Map(result.targets.map((t) => [t.name, t]));
    for (const name of ['cnfguard', 'bare-node']) {
      const row = byName.get(name);
      expect(row, name).toBeDefined();
      expect(row?.rps).toBeGreaterThan(0);
      expect(row?.p50Ms).toBeGreaterThan(0);
      expect(row?.p99Ms).toBeGreaterThanOrEqual(row?.p50Ms ?? 0);
      expect(row?.errors).toBe(0);
      expect(row?.non2xx).toBe(0);
    }
    expect(byName.get('cnfguard')?.ratioVsBare).toBeGreaterThan(0);
    expect(byName.has('nginx')).toBe(false);
  });

  it('makes exactly one AS introspection call per cache miss', () => {
    expect(result.cacheMiss.miss.requests).toBe(10);
    expect(result.cacheMiss.miss.failures).toBe(0);
    expect(result.cacheMiss.asCalls).toBe(10);
    expect(result.cacheMiss.asCallsPerRequest).toBe(1);
    expect(result.cacheMiss.guardIntrospections).toBe(10);
  });

  it('compares h2 cache hits with the bare h2 forwarder, and gRPC unary calls through cnfguard with direct', () => {
    for (const [pair, names] of [
      [result.h2, ['cnfguard h2', 'bare-h2']],
      [result.grpcUnary, ['through cnfguard', 'direct to the upstream']],
    ] as const) {
      expect(pair?.names).toEqual(names);
      expect(pair?.rps[0]).toBeGreaterThan(0);
      expect(pair?.rps[1]).toBeGreaterThan(0);
      expect(pair?.failures).toEqual([0, 0]);
      expect(pair?.ratio).toBeGreaterThan(0);
    }
    expect(stdout).toMatch(/^\s+cnfguard h2 \/ bare-h2: \d+\.\d+x/m);
    // And the same pair loaded at once.
    expect(result.h2?.atOnce?.labels).toEqual(['bare-h2', 'cnfguard h2']);
    expect(result.h2?.atOnce?.rounds).toHaveLength(2);
    expect(result.h2?.atOnce?.cpuRatio).toBeGreaterThan(0);
  });

  it('loads cnfguard and the bare forwarder at once, and reports the ratio of their req/s and CPU per request', () => {
    expect(result.atOnce.map((p) => p.labels)).toEqual([['bare-node', 'cnfguard']]);
    const pair = result.atOnce[0];
    expect(pair?.rounds).toHaveLength(2);
    for (const round of pair?.rounds ?? []) for (const side of [0, 1]) expect(round.cpuUs[side]).toBeGreaterThan(0);
    expect(pair?.rpsRatio).toBeGreaterThan(0);
    expect(pair?.cpuRatio).toBeGreaterThan(0);
    expect(stdout).toMatch(/^\s+cnfguard \/ bare-node: \d+\.\d+x req\/s, \d+\.\d+x CPU per request/m);
  });

  it('measures new connections and the token cache memory, which maxEntries caps', () => {
    expect(result.handshakes.cnfguard?.full.connections).toBeGreaterThan(0);
    expect(result.handshakes.cnfguard?.resumed.resumedShare).toBe(1);
    const capped = result.memory.find((m) => m.maxEntries === 1000);
    expect(capped?.checkpoints.at(-1)).toMatchObject({ tokens: 3000, cacheSize: 1000 });
  });
});
