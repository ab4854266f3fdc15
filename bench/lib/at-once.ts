/**
 * Two servers loaded at once, each by its own keep-alive connections, both pinned to the server
 * CPU: whatever else the machine runs (on this 2-core VM, mostly work outside it) weighs on both
 * alike, and the scheduler gives each about half the CPU, so the ratio of their req/s and of their
 * CPU per request is that of their cost. Loaded one after the other instead (the main load), an
 * A/A pair came out anywhere from 0.48x to 1.15x round by round; the method is issue 31's
 * (bench/lib/shared-state-ha-hit.ts), whose A/A runs gave 1.001x-1.009x.
 */
import { cpuSecondsOf } from './machine.ts';
import { runLoad, type LoadOptions, type LoadResult } from './load.ts';
import { median } from './table.ts';

export interface AtOnceSide {
  /** Label in the output (unique within the pair). */
  label: string;
  url: string;
  pids: () => number[];
  alive: () => boolean;
}

export interface AtOnceRound {
  rps: [number, number];
  /** Server CPU µs per response of each side, from process accounting. */
  cpuUs: [number, number];
}

export interface AtOnceSummary {
  labels: [string, string];
  rounds: AtOnceRound[];
  /** Rounds not counted: a side served fewer than MIN_ROUND_REQUESTS (the machine all but stopped it). */
  skipped: number;
  /** Medians of the per-round ratios, second side / first. */
  rpsRatio: number;
  cpuRatio: number;
  rps: [number, number];
  cpuUs: [number, number];
}

/** Warm-up by a count, not a time: V8 optimises after so many calls, whatever the machine's mood. */
const WARMUP_REQUESTS = 20_000;
const MIN_ROUND_REQUESTS = 1000;

export interface AtOnceOptions {
  rounds: number;
  seconds: number;
  /** Fewer warm-up requests (the smoke test). */
  warmupRequests?: number;
  log: (line: string) => void;
}

/**
 * Loads `sides` at once for `rounds` counted rounds, rounded up to even (at most twice as many run) and returns each
 * round's figures and the medians of the per-round ratios (second / first). Throws on any error or
 * non-2xx answer: a refusal is cheaper than a forward and would flatter its side.
 */
export async function loadAtOnce(sides: readonly [AtOnceSide, AtOnceSide], base: Omit<LoadOptions, 'url' | 'serverPids' | 'durationSeconds' | 'amount'>, options: AtOnceOptions): Promise<AtOnceSummary> {
  const load = (side: AtOnceSide, amount?: number): Promise<LoadResult> =>
    runLoad({ ...base, url: side.url, serverPids: side.pids, ...(amount === undefined ? { durationSeconds: options.seconds } : { amount }) });
  const checked = (side: AtOnceSide, result: LoadResult): LoadResult => {
    if (!side.alive()) throw new Error(`${side.label} exited during the load`);
    if (result.errors + result.timeouts + result.non2xx > 0) throw new Error(`${side.label}: ${result.errors} errors, ${result.timeouts} timeouts, ${result.non2xx} non-2xx ${JSON.stringify(result.statusCodes)}`);
    return result;
  };
  const [a, b] = sides;
  const rounds = 2 * Math.ceil(options.rounds / 2);
  const warmup = options.warmupRequests ?? WARMUP_REQUESTS;
  await Promise.all(sides.map(async (side) => checked(side, await load(side, warmup))));
  options.log(`  warmed up together, ${warmup} requests each; then ${rounds} rounds x ${options.seconds} s, both loaded at once, which starts first alternating`);
  const counted: AtOnceRound[] = [];
  let skipped = 0;
  for (let round = 1; counted.length < rounds && round <= 2 * rounds; round++) {
    const cpuBefore = sides.map((side) => cpuSecondsOf(side.pids()));
    // The side whose load starts second came out 2-7% ahead in both orders of one pair: the order
    // alternates round by round, so an even number of rounds carries that bias equally.
    const order = round % 2 === 1 ? [0, 1] : [1, 0];
    const started = order.map((i) => load(sides[i] as AtOnceSide).then((result) => checked(sides[i] as AtOnceSide, result)));
    const finished = await Promise.all(started);
    const [ra, rb] = (order[0] === 0 ? finished : [finished[1], finished[0]]) as [LoadResult, LoadResult];
    const cpuUs = sides.map((side, i) => ((cpuSecondsOf(side.pids()) - (cpuBefore[i] as number)) * 1e6) / Math.max(1, [ra, rb][i]?.requests ?? 1)) as [number, number];
    const line = `  round ${round}  ${a.label} ${ra.rps} req/s ${cpuUs[0].toFixed(1)} µs/req  ${b.label} ${rb.rps} req/s ${cpuUs[1].toFixed(1)} µs/req`;
    if (Math.min(ra.requests, rb.requests) < MIN_ROUND_REQUESTS) {
      skipped++;
      options.log(`${line}  (not counted: fewer than ${MIN_ROUND_REQUESTS} requests on a side)`);
      continue;
    }
    counted.push({ rps: [ra.rps, rb.rps], cpuUs });
    options.log(`${line}  ratio ${(rb.rps / ra.rps).toFixed(3)}x req/s, ${(cpuUs[1] / cpuUs[0]).toFixed(3)}x CPU/req  (others ${ra.foreignCpuPct ?? '-'}%)`);
  }
  const ratio = (f: (r: AtOnceRound) => number) => Math.round(median(counted.map(f)) * 1000) / 1000;
  return {
    labels: [a.label, b.label],
    rounds: counted,
    skipped,
    rpsRatio: ratio((r) => r.rps[1] / r.rps[0]),
    cpuRatio: ratio((r) => r.cpuUs[1] / r.cpuUs[0]),
    rps: [Math.round(median(counted.map((r) => r.rps[0]))), Math.round(median(counted.map((r) => r.rps[1])))],
    cpuUs: [Math.round(median(counted.map((r) => r.cpuUs[0])) * 10) / 10, Math.round(median(counted.map((r) => r.cpuUs[1])) * 10) / 10],
  };
}
