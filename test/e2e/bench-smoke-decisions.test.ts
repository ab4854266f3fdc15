/**
 * Keeps the benchmark's decisions phase from rotting (bench-smoke.test.ts has the others; split so
 * that each file's run stays well inside its timeout): `bench/run.ts --quick` with only the
 * decisions phase after the short main load: nginx asking cnfguard's decision API over TCP and the
 * Unix socket, cnfguard as the proxy, nginx alone, the pairs loaded at once, the floor, and every
 * side paced. Runs when nginx is installed. Only the shape is checked, never speed.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { findNginx } from '../../bench/lib/nginx.ts';
import { runQuickBench, type QuickBench } from '../fixtures/quick-bench.ts';

interface DecisionsResult {
  decisions?: { sides: { name: string; rps: number; p50Ms: number; p99Ms: number; errors: number; non2xx: number }[]; decisionsVsProxy?: number; decisionsVsNginxAlone?: number; cpuShare?: { decisionVsProxy?: number; socketDecisionVsProxy?: number }; atOnce?: { labels: [string, string]; rounds: unknown[]; cpuRatio: number }[]; paced?: { rate: number; cpuShare: { decisionVsProxy?: number; socketDecisionVsProxy?: number }; cpuUsRounds: Record<string, (number | null)[]> } };
}

let run: QuickBench<DecisionsResult>;

beforeAll(async () => {
  if (findNginx() === undefined) return;
  // A thousand requests a round: the CPU shares below come from process accounting (10 ms ticks),
  // which a round of a few hundred decisions (~60 µs each) can miss altogether.
  run = await runQuickBench<DecisionsResult>(['--targets', 'cnfguard', '--quick-requests', '1000', '--skip', 'miss,handshake,memory,h2,grpc,startup,idle', '--at-once', '']);
}, 120_000);

describe('npm run bench -- --quick: decisions', () => {
  it.skipIf(findNginx() === undefined)('finishes', () => {
    expect(run.code, `stdout:\n${run.stdout}\nstderr:\n${run.stderr}`).toBe(0);
  });

  it.skipIf(findNginx() === undefined)('compares nginx asking cnfguard\'s decision API with cnfguard as the proxy and nginx alone', () => {
    expect(run.result.decisions?.sides.map((s) => s.name)).toEqual(['nginx+cnfguard decisions', 'cnfguard proxy', 'nginx+cnfguard decisions, socket', 'nginx alone']);
    for (const side of run.result.decisions?.sides ?? []) {
      expect(side.rps, side.name).toBeGreaterThan(0);
      expect(side.p99Ms, side.name).toBeGreaterThanOrEqual(side.p50Ms);
      expect(side.errors + side.non2xx, side.name).toBe(0);
    }
    expect(run.result.decisions?.decisionsVsProxy).toBeGreaterThan(0);
    expect(run.result.decisions?.decisionsVsNginxAlone).toBeGreaterThan(0);
    expect(run.stdout).toMatch(/^\s+nginx\+cnfguard decisions \/ cnfguard proxy: \d+\.\d+x \(goal >= 1\.3/m);
    // The decision's CPU share over TCP and over the Unix socket (decisionApi.socket), each from process accounting.
    expect(run.result.decisions?.cpuShare?.decisionVsProxy).toBeGreaterThan(0);
    expect(run.result.decisions?.cpuShare?.socketDecisionVsProxy).toBeGreaterThan(0);
    // The goal's pair loaded at once, over TCP and over the socket; then the floor (a bare node:http check answer) against both sides.
    expect(run.result.decisions?.atOnce?.map((p) => p.labels)).toEqual([
      ['cnfguard proxy', 'cnfguard decisions, TCP'],
      ['cnfguard proxy', 'cnfguard decisions, socket'],
      ['cnfguard proxy', 'bare decisions, TCP'],
      ['bare decisions, TCP', 'cnfguard decisions, TCP'],
    ]);
    for (const pair of run.result.decisions?.atOnce ?? []) {
      expect(pair.rounds).toHaveLength(2);
      expect(pair.cpuRatio).toBeGreaterThan(0);
    }
    expect(run.stdout).toMatch(/^\s+cnfguard CPU per decision \/ per proxied request: TCP \d+\.\d+, Unix socket \d+\.\d+ \(goal <= 0\.5/m);
    // The same shares with every side paced to one rate (a sidecar's load), in turn.
    expect(run.result.decisions?.paced?.rate).toBe(2000);
    expect(Object.keys(run.result.decisions?.paced?.cpuUsRounds ?? {})).toEqual(['nginx+cnfguard decisions', 'cnfguard proxy', 'nginx+cnfguard decisions, socket']);
    for (const rounds of Object.values(run.result.decisions?.paced?.cpuUsRounds ?? {})) expect(rounds.every((us) => us !== null && us > 0)).toBe(true);
    expect(run.result.decisions?.paced?.cpuShare.decisionVsProxy).toBeGreaterThan(0);
    expect(run.result.decisions?.paced?.cpuShare.socketDecisionVsProxy).toBeGreaterThan(0);
    expect(run.stdout).toMatch(/^\s+paced, each side in turn at 2000 req\/s in all: cnfguard CPU per decision \/ per proxied request: TCP \d+\.\d+, Unix socket \d+\.\d+ \(goal <= 0\.5/m);
    expect(run.stdout).toMatch(/^machine: /m);
  });

});
