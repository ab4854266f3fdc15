/**
 * Keeps the benchmark's start-up and idle-memory phases from rotting (bench-smoke.test.ts has the
 * others; split so that each file's run stays well inside its timeout): `bench/run.ts --quick`
 * with only those phases after the short main load. Only the shape is checked, never speed.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { runQuickBench, type QuickBench } from '../fixtures/quick-bench.ts';

interface StartupResult {
  startup?: { name: string; coldMs: number; warmMs: number; noCacheMs: number; idleRssMb?: number }[];
}

let run: QuickBench<StartupResult>;

beforeAll(async () => {
  run = await runQuickBench<StartupResult>(['--targets', 'cnfguard', '--quick-requests', '200', '--skip', 'at-once,miss,handshake,memory,h2,grpc,decisions']);
}, 120_000);

describe('npm run bench -- --quick: start-up and idle memory', () => {
  it('finishes', () => {
    expect(run.code, `stdout:\n${run.stdout}\nstderr:\n${run.stderr}`).toBe(0);
  });

  it('measures start-up: --help, check, and run until listening, with the idle RSS', () => {
    expect(run.result.startup?.map((r) => r.name)).toEqual(['--help', 'check', 'run (listening)']);
    for (const row of run.result.startup ?? []) for (const ms of [row.coldMs, row.warmMs, row.noCacheMs]) expect(ms).toBeGreaterThan(0);
    expect(run.result.startup?.at(-1)?.idleRssMb).toBeGreaterThan(10);
    expect(run.stdout).toMatch(/^run \(listening\)\s+\d+\s+\d+/m);
  });

  it('measures the idle RSS of cnfguard run from the sources and the build, and the floor under it', () => {
    expect(run.stdout).toMatch(/^run: sources \(type stripping\)\s+\d+\.\d\s+\d+\.\d\s+\d+\.\d/m);
    expect(run.stdout).toMatch(/^run: build \(dist\/\): the default\s+\d+\.\d/m);
    expect(run.stdout).toMatch(/^node \(bare\)\s+\d+\.\d/m);
  });
});
