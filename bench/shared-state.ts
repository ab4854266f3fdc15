// node bench/shared-state.ts: what `sharedState` (Redis or Valkey, issue 14) costs and saves, in one
// run against a real redis-server, the demo oidc-provider AS and the fixed-body bench upstream,
// every cnfguard in its own process (default config apart from `sharedState`).
// 1. Cache-hit throughput with sharedState against without: rounds alternating the two, 32
//    keep-alive mTLS connections (autocannon), each cnfguard pinned to CPU 0 when taskset is there.
//    Goal >= 0.97x.
// 2. A cold token sent to REPLICAS replicas at once: AS calls per token (goal: at most one per
//    replica), and sent to one replica first, then to the others (goal: one in total).
// 3. Latency of a second-tier hit (this replica's first sight of a token another replica
//    introspected) over a local hit, p50 and p99, sequential over keep-alive mTLS connections.
// 4. and 5. (issue 31, bench/lib/shared-state-ha.ts): cache-hit throughput with `sentinel` against
//    `url` (goal >= 0.97x; both loaded at once, so other work on the machine weighs on both alike:
//    bench/lib/shared-state-ha-hit.ts, HA_* knobs there), and what `replayDurability: replica`
//    costs per DPoP request.
// Loopback only; bounded counts (ROUNDS, SECONDS, TOKENS). PARTS=4,5 runs only those (default: all).
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { startAuthorizationServer } from '../demo/authorization-server.ts';
import { startRedis } from '../test/fixtures/redis.ts';
import { createPki } from '../test/fixtures/stack.ts';
import { spawnChild, type ChildServer } from './lib/children.ts';
import { writeGuardConfig } from './lib/guard-config.ts';
import { percentile, runLoad } from './lib/load.ts';
import { hasTaskset, machineInfo, pinProcess } from './lib/machine.ts';
import { haBench } from './lib/shared-state-ha.ts';
import { median } from './lib/table.ts';

const ROUNDS = Number(process.env.ROUNDS ?? 5);
const SECONDS = Number(process.env.SECONDS ?? 4);
const TOKENS = Number(process.env.TOKENS ?? 200);
const REPLICAS = 3;
const PARTS = new Set((process.env.PARTS ?? '1,2,3,4,5').split(','));
const CONNECTIONS = 32;
const HERE = import.meta.dirname;

const pinning = machineInfo(false).cores >= 2 && hasTaskset();
if (pinning) pinProcess(process.pid, '1');
console.log('machine', JSON.stringify(machineInfo(pinning)));
const redis = await startRedis();
if (redis === undefined) throw new Error('no redis-server: run scripts/install-test-deps.sh');
const pki = await createPki();
const as = await startAuthorizationServer({ tls: pki.certs.server });
const upstream = await spawnChild({ name: 'upstream', script: join(HERE, 'servers', 'upstream.ts'), cpu: pinning ? '1' : undefined });
const secretFile = join(pki.dir, 'shared-secret');
writeFileSync(secretFile, randomBytes(32), { mode: 0o600 });
const client = pki.certs.clients.client1;
const children: ChildServer[] = [];

// The replicas of 2. and 3. see hundreds of new tokens a second from one client, past the default
// per-peer introspection budget (50/s, burst 100), which would answer 429: it is off for them.
const NO_BUDGET = { introspection: { url: as.introspectionUrl, clientId: 'rs', clientSecret: 'rs-secret', ca: pki.files.ca, timeoutMs: 2000, probeAtStartup: false, budget: { perPeerPerSecond: 0 } } };

async function startGuard(name: string, shared: boolean, cpu: string | undefined, extra: Record<string, unknown> = {}, nodeFlags: string[] = []): Promise<ChildServer> {
  const file = writeGuardConfig(pki, as, upstream.ready.url, name, { ...(shared && { sharedState: { url: redis!.url, secretFile } }), ...extra });
  const child = await spawnChild({ name, script: join(HERE, 'servers', 'guard.ts'), args: [file], nodeFlags, cpu, stdout: 'ignore' });
  children.push(child);
  return child;
}

const issue = () => as.issueToken({ clientCert: client, caCert: pki.certs.ca.cert });
const dispatcher = new Agent({ connect: { ca: pki.certs.ca.cert, cert: client.cert, key: client.key, servername: 'localhost' }, connections: 8 });
async function timed(url: string, token: string): Promise<number> {
  const started = performance.now();
  const res = await request(`${url}/x`, { dispatcher, headers: { authorization: `Bearer ${token}` } });
  await res.body.dump();
  if (res.statusCode !== 200) throw new Error(`status ${res.statusCode}`);
  return performance.now() - started;
}

try {
  if (PARTS.has('1')) await cacheHitWithAndWithout();
  if (PARTS.has('2') || PARTS.has('3')) await acrossReplicas();
  if (PARTS.has('4') || PARTS.has('5')) {
    const startHa = (name: string, cpu: string | undefined, extra: Record<string, unknown>, nodeFlags?: string[]) => startGuard(name, false, cpu, extra, nodeFlags);
    await haBench({ pki, as, secretFile, upstreamPid: upstream.pid, pinning, rounds: ROUNDS, seconds: SECONDS, connections: CONNECTIONS, parts: { cacheHit: PARTS.has('4'), durability: PARTS.has('5') }, startGuard: startHa });
  }
} finally {
  await dispatcher.close();
  await Promise.all(children.map((c) => c.stop()));
  await upstream.stop();
  await as.stop();
  await redis.cleanup();
  await pki.cleanup();
}

async function cacheHitWithAndWithout(): Promise<void> {
  // 1. Cache-hit throughput, one cnfguard at a time on CPU 0.
  const local = await startGuard('local-only', false, pinning ? '0' : undefined);
  const shared = await startGuard('shared', true, pinning ? '0' : undefined);
  const token = await issue();
  const load = (target: ChildServer) => runLoad({ url: target.ready.url, token, cert: client.cert, key: client.key, connections: CONNECTIONS, durationSeconds: SECONDS, path: '/x', serverPids: () => [target.pid], sidePids: () => [upstream.pid] });
  await load(local);
  await load(shared);
  const rps = { local: [] as number[], shared: [] as number[] };
  for (let round = 1; round <= ROUNDS; round++) {
    for (const kind of round % 2 === 1 ? (['local', 'shared'] as const) : (['shared', 'local'] as const)) {
      const result = await load(kind === 'local' ? local : shared);
      if (result.non2xx + result.errors > 0) throw new Error(`${kind}: ${result.non2xx} non-2xx, ${result.errors} errors`);
      rps[kind].push(result.rps);
      console.log(`  round ${round} ${kind.padEnd(6)} ${result.rps} req/s  p50 ${result.p50Ms} ms  p99 ${result.p99Ms} ms  server CPU ${result.serverCpuPct ?? '-'}%  others ${result.foreignCpuPct ?? '-'}%`);
    }
  }
  console.log(`cache hit, ${CONNECTIONS} connections, ${ROUNDS} rounds x ${SECONDS} s: with sharedState ${median(rps.shared)} req/s / without ${median(rps.local)} req/s = ${(median(rps.shared) / median(rps.local)).toFixed(3)}x (goal >= 0.97x)`);
  await Promise.all([local.stop(), shared.stop()]);
}

async function acrossReplicas(): Promise<void> {
  // 2. and 3.: REPLICAS replicas sharing the store, unpinned.
  const replicas = await Promise.all(Array.from({ length: REPLICAS }, (_, i) => startGuard(`replica-${i}`, true, undefined, NO_BUDGET)));
  const urls = replicas.map((r) => r.ready.url);
  const burst: number[] = [];
  const sequential: number[] = [];
  for (let i = 0; i < 20; i++) {
    const cold = await issue();
    const before = as.introspectionCalls();
    await Promise.all(urls.map((url) => timed(url, cold)));
    burst.push(as.introspectionCalls() - before);
    const next = await issue();
    const start = as.introspectionCalls();
    await timed(urls[0] as string, next);
    for (const url of urls.slice(1)) await timed(url, next);
    sequential.push(as.introspectionCalls() - start);
  }
  const count = (xs: number[]) => Object.entries(xs.reduce<Record<number, number>>((m, x) => ({ ...m, [x]: (m[x] ?? 0) + 1 }), {})).map(([calls, n]) => `${calls} call(s) x${n}`).join(', ');
  console.log(`cold token at ${REPLICAS} replicas at once, 20 tokens: AS calls per token ${count(burst)}; max ${Math.max(...burst)} (goal <= ${REPLICAS})`);
  console.log(`cold token at one replica, then the others, 20 tokens: AS calls per token ${count(sequential)} (goal 1)`);

  const secondTier: number[] = [];
  const localHit: number[] = [];
  const tokens = await Promise.all(Array.from({ length: TOKENS }, () => issue()));
  for (const t of tokens) {
    await timed(urls[0] as string, t); // introspected by replica 0, written to the store
    secondTier.push(await timed(urls[1] as string, t)); // replica 1: local miss, store hit
    localHit.push(await timed(urls[1] as string, t)); // replica 1: local hit
  }
  const sorted = (xs: number[]) => Float64Array.from(xs).sort();
  const [st, lh] = [sorted(secondTier), sorted(localHit)];
  console.log(`latency over ${TOKENS} tokens (sequential, keep-alive mTLS): local hit p50 ${percentile(lh, 50).toFixed(3)} ms p99 ${percentile(lh, 99).toFixed(3)} ms; second-tier hit p50 ${percentile(st, 50).toFixed(3)} ms p99 ${percentile(st, 99).toFixed(3)} ms`);
  console.log(`  added by a second-tier hit: p50 +${(percentile(st, 50) - percentile(lh, 50)).toFixed(3)} ms, p99 +${(percentile(st, 99) - percentile(lh, 99)).toFixed(3)} ms`);
}
