/**
 * Two servers loaded at once, each by its own keep-alive connections, both pinned to the server
 * CPU: whatever else the machine runs (on this 2-core VM, mostly work outside it) weighs on both
 * alike, and the scheduler gives each about half the CPU, so the ratio of their req/s and of their
 * CPU per request is that of their cost. Loaded one after the other instead (the main load), an
 * A/A pair came out anywhere from 0.48x to 1.15x round by round; the method is issue 31's
 * (bench/lib/shared-state-ha-hit.ts), whose A/A runs gave 1.001x-1.009x.
 */
import { cpuSecondsOf } from './machine.ts';
import { runLoad, type LoadOptions } from './load.ts';
import { median } from './table.ts';

/** What one side's load gives back: the load generator's count; CPU comes from the side's pids. */
export interface SideLoad {
  requests: number;
  rps: number;
  /** Errors, timeouts and non-2xx answers: any of them fails the run. */
  failed: number;
  detail: string;
}

export interface AtOnceSide {
  /** Label in the output (unique within the pair). */
  label: string;
  pids: () => number[];
  alive: () => boolean;
  /** Loads the side for a measured round. */
  run: (seconds: number) => Promise<SideLoad>;
  /** Warms it up (a request count where the load generator has one). */
  warm: () => Promise<SideLoad>;
}

/** A side loaded by autocannon (lib/load.ts): HTTP/1.1 keep-alive mTLS connections. */
export function autocannonSide(label: string, target: { url: string; pids: () => number[]; alive: () => boolean }, base: Omit<LoadOptions, 'url' | 'serverPids' | 'durationSeconds' | 'amount'>, warmupRequests = WARMUP_REQUESTS): AtOnceSide {
  const load = async (amount: { durationSeconds: number } | { amount: number }): Promise<SideLoad> => {
    const r = await runLoad({ ...base, url: target.url, serverPids: target.pids, ...amount });
    return { requests: r.requests, rps: r.rps, failed: r.errors + r.timeouts + r.non2xx, detail: `${r.errors} errors, ${r.timeouts} timeouts, ${r.non2xx} non-2xx ${JSON.stringify(r.statusCodes)}` };
  };
  return { label, pids: target.pids, alive: target.alive, run: (seconds) => load({ durationSeconds: seconds }), warm: () => load({ amount: warmupRequests }) };
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

/** Warm-up by a count, not a time, where the load generator can: V8 optimises after so many calls, whatever the machine's mood. */
const WARMUP_REQUESTS = 20_000;
const MIN_ROUND_REQUESTS = 1000;

export interface AtOnceOptions {
  rounds: number;
  seconds: number;
  /** Fewest requests a side must serve for its round to count (default MIN_ROUND_REQUESTS; --quick's half-second rounds on a busy machine serve fewer). */
  minRoundRequests?: number;
  log: (line: string) => void;
}

/**
 * Loads `sides` at once for `rounds` counted rounds, rounded up to even (at most twice as many run) and returns each
 * round's figures and the medians of the per-round ratios (second / first). Throws on any error or
 * non-2xx answer: a refusal is cheaper than a forward and would flatter its side.
 */
export async function loadAtOnce(sides: readonly [AtOnceSide, AtOnceSide], options: AtOnceOptions): Promise<AtOnceSummary> {
  const checked = (side: AtOnceSide, result: SideLoad): SideLoad => {
    if (!side.alive()) throw new Error(`${side.label} exited during the load`);
    if (result.failed > 0) throw new Error(`${side.label}: ${result.detail}`);
    return result;
  };
  const [a, b] = sides;
  const rounds = 2 * Math.ceil(options.rounds / 2);
  await Promise.all(sides.map(async (side) => checked(side, await side.warm())));
  options.log(`  warmed up together; then ${rounds} rounds x ${options.seconds} s, both loaded at once, which starts first alternating`);
  const counted: AtOnceRound[] = [];
  let skipped = 0;
  for (let round = 1; counted.length < rounds && round <= 2 * rounds; round++) {
    const cpuBefore = sides.map((side) => cpuSecondsOf(side.pids()));
    // The side whose load starts second came out 2-7% ahead in both orders of one pair: the order
    // alternates round by round, so an even number of rounds carries that bias equally.
    const loads: Promise<SideLoad>[] = [];
    for (const i of round % 2 === 1 ? [0, 1] : [1, 0]) loads[i] = sides[i]!.run(options.seconds).then((result) => checked(sides[i]!, result));
    const [ra, rb] = (await Promise.all(loads)) as [SideLoad, SideLoad];
    const cpuUs = [ra, rb].map((result, i) => ((cpuSecondsOf(sides[i]!.pids()) - cpuBefore[i]!) * 1e6) / Math.max(1, result.requests)) as [number, number];
    const line = `  round ${round}  ${a.label} ${ra.rps} req/s ${cpuUs[0].toFixed(1)} µs/req  ${b.label} ${rb.rps} req/s ${cpuUs[1].toFixed(1)} µs/req`;
    const fewest = options.minRoundRequests ?? MIN_ROUND_REQUESTS;
    if (Math.min(ra.requests, rb.requests) < fewest) {
      skipped++;
      options.log(`${line}  (not counted: fewer than ${fewest} requests on a side)`);
      continue;
    }
    counted.push({ rps: [ra.rps, rb.rps], cpuUs });
    options.log(`${line}  ratio ${(rb.rps / ra.rps).toFixed(3)}x req/s, ${(cpuUs[1] / cpuUs[0]).toFixed(3)}x CPU/req`);
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
