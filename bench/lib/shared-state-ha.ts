/**
 * Parts 4 and 5 of bench/shared-state.ts (issue 31), on a Sentinel set of real processes (a
 * primary, a replica, three sentinels: test/fixtures/redis-ha.ts):
 * 4. Cache-hit throughput of a cnfguard whose `sharedState` is `sentinel` against one whose
 *    `sharedState` is `url` (the same primary): bench/lib/shared-state-ha-hit.ts.
 * 5. What `replayDurability: replica` costs per DPoP request: two cnfguards on the Sentinel set,
 *    `primary` and `replica`, the same load (fresh proofs signed before each round), throughput
 *    and latency side by side; and sequential latency over one keep-alive connection (p50, p99),
 *    where the added WAIT round trip shows undiluted.
 */
import { createPrivateKey, randomUUID, sign as cryptoSign, type JsonWebKey } from 'node:crypto';
import { generateKeyPair, generateProof } from 'dpop';
import { Agent, request } from 'undici';
import { accessTokenHash } from '../../src/proof/dpop.ts';
import { hostPort } from '../../src/config/shared-state-schema.ts';
import { RedisKv } from '../../src/state/redis-kv.ts';
import { MASTER_NAME, startSentinelSet, type SentinelSet } from '../../test/fixtures/redis-ha.ts';
import { percentile, runLoad } from './load.ts';
import type { ChildServer } from './children.ts';
import type { HaBenchContext } from './shared-state-ha-context.ts';
import { cacheHit } from './shared-state-ha-hit.ts';
import { median } from './table.ts';


export async function haBench(ctx: HaBenchContext): Promise<void> {
  const set = await startSentinelSet();
  try {
    if (ctx.parts.cacheHit) await cacheHit(ctx, set);
    if (ctx.parts.durability) await durabilityCost(ctx, set);
  } finally {
    await set.cleanup();
  }
}

/**
 * The store-level cost, without cnfguard around it: sequential replay writes (`setIfAbsent`) of a
 * Redis KV on the Sentinel set, `primary` against `replica`, in alternating blocks; the difference
 * of the medians is the WAIT round trip each DPoP request pays.
 */
async function storeLevelCost(set: SentinelSet): Promise<void> {
  const target = { kind: 'sentinel' as const, masterName: MASTER_NAME, nodes: set.sentinelNodes.map(hostPort) };
  const kvs = { primary: new RedisKv({ target, timeoutMs: 1000 }), replica: new RedisKv({ target, timeoutMs: 1000, replayDurability: 'replica' }) };
  const BLOCK = 500;
  const times = { primary: [] as number[], replica: [] as number[] };
  try {
    for (const kv of Object.values(kvs)) kv.connect();
    const deadline = performance.now() + 10_000;
    while (!(kvs.primary.up && kvs.replica.up)) {
      if (performance.now() > deadline) throw new Error('the store-level clients did not connect');
      await new Promise((r) => setTimeout(r, 20));
    }
    for (let block = 0; block < 8; block++) {
      const kind = block % 2 === 0 ? 'primary' : 'replica';
      for (let i = 0; i < BLOCK; i++) {
        const started = performance.now();
        await kvs[kind].setIfAbsent(`bench:${randomUUID()}`, '', 60_000);
        if (block >= 2) times[kind].push(performance.now() - started); // the first block of each warms up
      }
    }
  } finally {
    for (const kv of Object.values(kvs)) kv.close();
  }
  const at = (kind: 'primary' | 'replica', q: number) => percentile(Float64Array.from(times[kind]).sort(), q);
  console.log(
    `replay write at the store, ${times.primary.length} sequential each: primary p50 ${at('primary', 50).toFixed(3)} ms p99 ${at('primary', 99).toFixed(3)} ms; replica (SET NX + WAIT 1) p50 ${at('replica', 50).toFixed(3)} ms p99 ${at('replica', 99).toFixed(3)} ms; WAIT adds p50 +${(at('replica', 50) - at('primary', 50)).toFixed(3)} ms`,
  );
}

async function durabilityCost(ctx: HaBenchContext, set: SentinelSet): Promise<void> {
  await storeLevelCost(set);
  const client = ctx.pki.certs.clients.client1;
  const sentinel = { masterName: MASTER_NAME, nodes: set.sentinelNodes };
  const cpu = ctx.pinning ? '0' : undefined;
  const durable = { primary: undefined as ChildServer | undefined, replica: undefined as ChildServer | undefined };
  for (const replayDurability of ['primary', 'replica'] as const) {
    durable[replayDurability] = await ctx.startGuard(`ha-dpop-${replayDurability}`, cpu, { sharedState: { sentinel, secretFile: ctx.secretFile, replayDurability }, methods: ['dpop'] });
  }
  const key = await generateKeyPair('ES256', { extractable: true });
  const dpopToken = await ctx.as.issueToken({ clientId: 'plain-app', caCert: ctx.pki.certs.ca.cert, dpopProof: (htu, htm) => generateProof(key, htu, htm) });
  const jwk = (await crypto.subtle.exportKey('jwk', key.publicKey)) as JsonWebKey;
  const signingKey = createPrivateKey({ key: (await crypto.subtle.exportKey('jwk', key.privateKey)) as JsonWebKey, format: 'jwk' });
  const headerPart = Buffer.from(JSON.stringify({ typ: 'dpop+jwt', alg: 'ES256', jwk: { kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y } })).toString('base64url');
  const ath = accessTokenHash(dpopToken);
  const signProofs = (htu: string, count: number): string[] => {
    const iat = Math.floor(Date.now() / 1000);
    return Array.from({ length: count }, () => {
      const signed = `${headerPart}.${Buffer.from(JSON.stringify({ jti: randomUUID(), htm: 'GET', htu, iat, ath })).toString('base64url')}`;
      return `${signed}.${cryptoSign('sha256', Buffer.from(signed), { key: signingKey, dsaEncoding: 'ieee-p1363' }).toString('base64url')}`;
    });
  };
  const dpopLoad = (target: ChildServer) => {
    const pool = signProofs(`${target.ready.url}/x`, Math.max(1000, 20_000 * ctx.seconds));
    let next = 0;
    return runLoad({ url: target.ready.url, token: dpopToken, cert: client.cert, key: client.key, connections: ctx.connections, durationSeconds: ctx.seconds, path: '/x', serverPids: () => [target.pid], sidePids: () => [ctx.upstreamPid], headersPerRequest: () => ({ authorization: `DPoP ${dpopToken}`, dpop: pool[next++ % pool.length] as string }) });
  };
  const dpop = { primary: { rps: [] as number[], p50: [] as number[], p99: [] as number[], unacked: 0 }, replica: { rps: [] as number[], p50: [] as number[], p99: [] as number[], unacked: 0 } };
  for (const kind of ['primary', 'replica'] as const) await dpopLoad(durable[kind] as ChildServer);
  for (let round = 1; round <= ctx.rounds; round++) {
    for (const kind of round % 2 === 1 ? (['primary', 'replica'] as const) : (['replica', 'primary'] as const)) {
      const result = await dpopLoad(durable[kind] as ChildServer);
      // 503: the replay write was not acknowledged within the deadline (a replica too slow to answer WAIT); counted, not fatal.
      const unacked = result.statusCodes['503'] ?? 0;
      if (result.non2xx - unacked + result.errors > 0) throw new Error(`dpop ${kind}: ${result.non2xx} non-2xx, ${result.errors} errors ${JSON.stringify(result.statusCodes)}`);
      dpop[kind].unacked += unacked;
      dpop[kind].rps.push(Math.round((result.requests - result.non2xx) / result.seconds));
      dpop[kind].p50.push(result.p50Ms);
      dpop[kind].p99.push(result.p99Ms);
      console.log(`  round ${round} dpop ${kind.padEnd(8)} ${result.rps} req/s  p50 ${result.p50Ms} ms  p99 ${result.p99Ms} ms  server CPU ${result.serverCpuPct ?? '-'}%  503 ${unacked}`);
    }
  }
  const [p, r] = [dpop.primary, dpop.replica];
  console.log(`DPoP 503 (the replay store's answer, and under replica its acknowledgement, not in time) over all rounds: replica ${r.unacked}, primary ${p.unacked}`);
  console.log(
    `DPoP under load, ${ctx.connections} connections: replayDurability replica ${median(r.rps)} req/s (p50 ${median(r.p50)} ms, p99 ${median(r.p99)} ms) / primary ${median(p.rps)} req/s (p50 ${median(p.p50)} ms, p99 ${median(p.p99)} ms) = ${(median(r.rps) / median(p.rps)).toFixed(3)}x`,
  );
  // Sequential: one request at a time, one keep-alive connection, so each request waits for its own WAIT.
  const SEQUENTIAL = 1000;
  const dispatcher = new Agent({ connect: { ca: ctx.pki.certs.ca.cert }, connections: 1 });
  const sequential: Record<'primary' | 'replica', Float64Array> = { primary: new Float64Array(0), replica: new Float64Array(0) };
  try {
    for (const kind of ['primary', 'replica', 'primary', 'replica'] as const) {
      const target = durable[kind] as ChildServer;
      const proofs = signProofs(`${target.ready.url}/x`, SEQUENTIAL);
      const times = new Float64Array(SEQUENTIAL);
      for (const [i, proof] of proofs.entries()) {
        const started = performance.now();
        const res = await request(`${target.ready.url}/x`, { dispatcher, headers: { authorization: `DPoP ${dpopToken}`, dpop: proof } });
        await res.body.dump();
        if (res.statusCode !== 200 && res.statusCode !== 503) throw new Error(`sequential dpop ${kind}: status ${res.statusCode}`);
        times[i] = performance.now() - started;
      }
      sequential[kind] = times.sort(); // the second pass of each (the first warms up)
    }
  } finally {
    await dispatcher.close();
  }
  const at = (kind: 'primary' | 'replica', q: number) => percentile(sequential[kind], q);
  console.log(
    `DPoP sequential, ${SEQUENTIAL} requests: primary p50 ${at('primary', 50).toFixed(3)} ms p99 ${at('primary', 99).toFixed(3)} ms; replica p50 ${at('replica', 50).toFixed(3)} ms p99 ${at('replica', 99).toFixed(3)} ms; replayDurability replica adds p50 +${(at('replica', 50) - at('primary', 50)).toFixed(3)} ms, p99 +${(at('replica', 99) - at('primary', 99)).toFixed(3)} ms per DPoP request`,
  );
  await Promise.all([durable.primary?.stop(), durable.replica?.stop()]);
}
