/**
 * Part 4 of bench/shared-state.ts (issue 31): cache-hit throughput of a cnfguard whose
 * `sharedState` is `sentinel` against one whose `sharedState` is `url` (the same primary of the
 * Sentinel set), rounds alternating, 32 keep-alive mTLS connections, each cnfguard pinned to CPU 0
 * when taskset is there (everything else of the bench on CPU 1). Goal >= 0.97x.
 *
 * What it prints, so that a figure can be judged and not only read:
 * - per round, each side's req/s and server CPU per request (µs, from /proc), the ratio of the
 *   pair, and what the bench's own other processes (redis primary, replica, sentinels, upstream)
 *   used meanwhile; at the end the medians of the per-round ratios;
 * - where every process of the bench may run (its CPU list), once;
 * - the commands the primary and each sentinel served during each side's rounds (INFO
 *   commandstats): a cache hit sends none, so both sides should show only the set's own chatter.
 * Both sides are loaded at once (each by its own 32 connections), so whatever else the machine runs
 * weighs on both alike and the ratio is that of their CPU cost per request (the scheduler gives
 * each half of CPU 0); HA_MODE=alternate loads one at a time instead (rounds alternating), which
 * on a shared machine measures mostly who got the CPU when. A round where a side served fewer
 * than MIN_ROUND_REQUESTS is not counted (up to twice the rounds are run). Both at once, a round
 * takes half the time, so it runs 2 x ROUNDS rounds.
 * HA_SIDES=url,url or sentinel,sentinel runs it A/A (the noise and any position bias of the bench);
 * sentinel,url starts the sentinel one first. HA_B_EXTRA='{"logLevel":"warn"}' (JSON, top-level
 * config keys) gives the second side a known difference, to see that the bench detects one.
 * HA_PROFILE_DIR=DIR runs both under --cpu-prof.
 */
import type { SentinelSet } from '../../test/fixtures/redis-ha.ts';
import { ask, MASTER_NAME } from '../../test/fixtures/redis-ha.ts';
import type { HaBenchContext } from './shared-state-ha-context.ts';
import type { ChildServer } from './children.ts';
import { census, cpuBetween, cpuSnapshot, type CensusEntry } from './census.ts';
import { runLoad, type LoadResult } from './load.ts';
import { median } from './table.ts';

type Kind = 'url' | 'sentinel';

const WARMUP_REQUESTS = 20_000;
const MIN_ROUND_REQUESTS = 1000;

/**
 * Commands a node served so far: `cmdstat_NAME:calls=N` of INFO commandstats as NAME -> N; a
 * sentinel has no commandstats, so its `total_commands_processed` as `commands` (INFO included).
 */
async function commandCalls(port: number): Promise<Map<string, number>> {
  const text = String(await ask(port, 'INFO', 'commandstats'));
  const calls = new Map([...text.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)].map((m) => [m[1] as string, Number(m[2])]));
  if (calls.size > 0) return calls;
  const total = /^total_commands_processed:(\d+)/m.exec(String(await ask(port, 'INFO', 'stats')))?.[1];
  return new Map([['commands', Number(total ?? 0)]]);
}

export async function cacheHit(ctx: HaBenchContext, set: SentinelSet): Promise<void> {
  const client = ctx.pki.certs.clients.client1;
  const kinds = (process.env.HA_SIDES ?? 'url,sentinel').split(',') as [Kind, Kind];
  if (kinds.length !== 2 || !kinds.every((k) => k === 'url' || k === 'sentinel')) throw new Error('HA_SIDES: two of url, sentinel (e.g. url,sentinel)');
  const labels = kinds[0] === kinds[1] ? [`${kinds[0]}-a`, `${kinds[1]}-b`] : [...kinds];
  const sharedState = (kind: Kind) => (kind === 'url' ? { url: set.primary.url, secretFile: ctx.secretFile } : { sentinel: { masterName: MASTER_NAME, nodes: set.sentinelNodes }, secretFile: ctx.secretFile });
  const profileDir = process.env.HA_PROFILE_DIR;
  const together = process.env.HA_MODE !== 'alternate';
  // Both at once, a round loads for SECONDS instead of twice SECONDS: twice the rounds in the same time.
  const rounds = together ? 2 * ctx.rounds : ctx.rounds;
  const cpu = ctx.pinning ? '0' : undefined;
  const sides: ChildServer[] = [];
  // A sensitivity check: HA_B_EXTRA='{"logLevel":"warn"}' gives the second side a known difference.
  const extraB = JSON.parse(process.env.HA_B_EXTRA ?? '{}') as Record<string, unknown>;
  for (const [i, kind] of kinds.entries()) sides.push(await ctx.startGuard(`ha-${labels[i]}`, cpu, { sharedState: sharedState(kind), ...(i === 1 && extraB) }, profileDir === undefined ? [] : ['--cpu-prof', '--cpu-prof-dir', profileDir, '--cpu-prof-name', `ha-${labels[i]}.cpuprofile`]));
  const procs: CensusEntry[] = census();
  console.log('  processes of the bench (pid, CPU list, name):');
  for (const p of procs) console.log(`    ${String(p.pid).padStart(7)}  cpus ${p.cpus.padEnd(4)} ${p.name}`);
  const token = await ctx.as.issueToken({ clientCert: client, caCert: ctx.pki.certs.ca.cert });
  const load = (target: ChildServer, amount?: number) => runLoad({ url: target.ready.url, token, cert: client.cert, key: client.key, connections: ctx.connections, durationSeconds: ctx.seconds, ...(amount !== undefined && { amount }), path: '/x', serverPids: () => [target.pid], sidePids: () => [ctx.upstreamPid] });
  // Warm-up by a count, not a duration: V8 optimises after so many calls, and on a busy machine a
  // 4 s warm-up may be a few thousand requests for one side and tens of thousands for the other.
  // Both at once: warmed up one after the other, the second side came out 1-2% ahead in A/A runs
  // (1.012x-1.024x in four); warmed up together, 1.001x-1.009x in four.
  await Promise.all(sides.map((side) => load(side, WARMUP_REQUESTS)));
  for (const [i, side] of sides.entries()) {
    const { resources } = await side.call<{ resources: string[] }>({ type: 'stats' });
    const counts = resources.reduce<Record<string, number>>((m, r) => ({ ...m, [r]: (m[r] ?? 0) + 1 }), {});
    console.log(`  ${labels[i]}: active resources after the warm-up ${Object.entries(counts).map(([r, n]) => `${r} x${n}`).join(', ')}`);
  }
  const storePorts = [set.primary.port, ...set.sentinelPorts];
  const storeNames = ['primary', ...set.sentinelPorts.map((_, i) => `sentinel-${i}`)];
  const rps: number[][] = [[], []];
  const cpuUs: number[][] = [[], []];
  const ratios = { rps: [] as number[], cpu: [] as number[] };
  // What the store served and the bench's other processes used, by who was under load meanwhile.
  const commands = new Map<string, Map<string, number>>();
  const others = new Map<string, Map<string, number>>();
  const add = (into: Map<string, Map<string, number>>, step: string, key: string, n: number) => {
    const m = into.get(step) ?? new Map<string, number>();
    into.set(step, m.set(key, (m.get(key) ?? 0) + n));
  };
  const served = [0, 0];
  /** Loads the sides `which` at once (one, or both together), and records each side's figures. */
  const step = async (round: number, which: number[]) => {
    const name = which.map((i) => labels[i]).join('+');
    const callsBefore = await Promise.all(storePorts.map(commandCalls));
    const cpuBefore = cpuSnapshot(procs);
    const results = await Promise.all(which.map((i) => load(sides[i] as ChildServer)));
    const used = cpuBetween(cpuBefore, cpuSnapshot(procs));
    const callsAfter = await Promise.all(storePorts.map(commandCalls));
    for (const [s, after] of callsAfter.entries()) {
      for (const [command, n] of after) {
        const delta = n - (callsBefore[s]?.get(command) ?? 0) - (command === 'info' ? 1 : command === 'commands' ? 2 : 0); // our own INFOs
        if (delta > 0) add(commands, name, `${storeNames[s]} ${command}`, delta);
      }
    }
    const loaded = new Set(which.map((i) => sides[i]?.pid));
    for (const p of procs) if (!loaded.has(p.pid)) add(others, name, p.name, used.get(p.pid) ?? 0);
    const redisCpu = procs.filter((p) => p.name.startsWith('redis')).reduce((sum, p) => sum + (used.get(p.pid) ?? 0), 0);
    for (const [k, i] of which.entries()) {
      const result = results[k] as LoadResult;
      if (result.non2xx + result.errors > 0) throw new Error(`${labels[i]}: ${result.non2xx} non-2xx, ${result.errors} errors`);
      const us = result.serverCpuSeconds === undefined ? Number.NaN : (result.serverCpuSeconds * 1e6) / result.requests;
      rps[i]?.push(result.rps);
      cpuUs[i]?.push(us);
      served[i] = (served[i] ?? 0) + result.requests;
      console.log(`  round ${round} ${labels[i]?.padEnd(10)} ${result.rps} req/s  p50 ${result.p50Ms} ms  p99 ${result.p99Ms} ms  server CPU ${us.toFixed(1)} us/req (${result.serverCpuPct}%)  redis set CPU ${((redisCpu / result.seconds) * 100).toFixed(1)}%  others ${result.foreignCpuPct ?? '-'}%`);
    }
  };
  let counted = 0;
  for (let round = 1; counted < rounds && round <= 2 * rounds; round++) {
    const order = round % 2 === 1 ? [0, 1] : [1, 0];
    if (together) await step(round, order);
    else for (const i of order) await step(round, [i]);
    const [a, b] = [rps[0]?.at(-1) as number, rps[1]?.at(-1) as number];
    // A round where the machine all but stopped one side (others took the CPU) has too few requests for a ratio.
    if (Math.min(a, b) * ctx.seconds < MIN_ROUND_REQUESTS) {
      for (const xs of [...rps, ...cpuUs]) xs.pop();
      console.log(`  round ${round}: not counted (fewer than ${MIN_ROUND_REQUESTS} requests on a side: the machine was taken by other work)`);
      continue;
    }
    counted++;
    ratios.rps.push(b / a);
    ratios.cpu.push((cpuUs[1]?.at(-1) as number) / (cpuUs[0]?.at(-1) as number));
    console.log(`  round ${round}: ${labels[1]} / ${labels[0]} req/s ${(b / a).toFixed(3)}, CPU per request ${(ratios.cpu.at(-1) as number).toFixed(3)}`);
  }
  for (const [name, seen] of commands) console.log(`  commands at the store while ${name} was loaded: ${[...seen].map(([k, n]) => `${k} ${n}`).join(', ') || 'none'}`);
  for (const [name, used] of others) console.log(`  CPU seconds of the bench's other processes while ${name} was loaded: ${[...used].map(([k, s]) => `${k} ${s.toFixed(2)}`).join(', ')}`);
  if (profileDir !== undefined) console.log(`  requests served in the measured rounds: ${labels[0]} ${served[0]}, ${labels[1]} ${served[1]}`);
  const fmt = (xs: number[]) => xs.map((x) => x.toFixed(3)).join(' ');
  console.log(`  per-round ratios ${labels[1]} / ${labels[0]}: req/s ${fmt(ratios.rps)}; CPU per request ${fmt(ratios.cpu)}`);
  console.log(
    `cache hit${together ? ' (both loaded at once, sharing CPU 0)' : ' (alternating)'}, ${ctx.connections} connections each, ${counted} rounds x ${ctx.seconds} s: ${labels[1]} ${median(rps[1] ?? [])} req/s / ${labels[0]} ${median(rps[0] ?? [])} req/s; median of per-round ratios ${median(ratios.rps).toFixed(3)}x (goal >= 0.97x); server CPU per request ${labels[1]} ${median(cpuUs[1] ?? []).toFixed(1)} us / ${labels[0]} ${median(cpuUs[0] ?? []).toFixed(1)} us, median of per-round ratios ${median(ratios.cpu).toFixed(3)}`,
  );
  await Promise.all(sides.map((s) => s.stop()));
}
