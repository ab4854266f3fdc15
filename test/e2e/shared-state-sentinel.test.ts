/**
 * Shared state on Redis Sentinel, the primary killed mid-run (SIGKILL), on real processes: a
 * primary, a replica and three redis-sentinel processes (test/fixtures/redis-ha.ts), a real AS,
 * and four cnfguard replicas under steady traffic with a certificate-bound token and DPoP proofs:
 * two with `replayDurability: replica`, two with `primary`, so one failover shows both.
 *
 * How a lost write is made deterministic: before the kill, the replica is frozen (SIGSTOP) and the
 * primary drops its replication link (`CLIENT KILL TYPE replica`), so nothing written from then on
 * can reach the replica (frozen, it cannot reconnect; the link is gone, nothing is in flight).
 * Each group then sends WINDOW DPoP proofs; then the primary is killed and the replica thawed, and
 * the sentinels promote it without those writes. Replaying every proof a group accepted, after
 * the failover: `primary` accepted the WINDOW proofs of the window (the markers died with the old
 * primary, so each is accepted a second time); `replica` refused them (503: no replica acknowledged
 * the write), so it has nothing to replay. The old primary is then started again as a replica of
 * the new one (as an operator or orchestrator would): with one replica, `replica` durability has
 * no second copy to wait for until it is back.
 */
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { generateKeyPair, generateProof } from 'dpop';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ask, MASTER_NAME, sentinelAvailable, startSentinelSet, type SentinelSet } from '../fixtures/redis-ha.ts';
import { findRedisServer, startRedis, type RedisServer } from '../fixtures/redis.ts';
import { baseConfig, metricOf, startDeployment, startGuard, type Deployment, type Guard } from '../fixtures/stack.ts';
import { waitFor } from '../fixtures/wait.ts';

const available = findRedisServer() !== undefined && sentinelAvailable();
if (!available) console.warn('redis-server or redis-sentinel not found: sentinel tests skipped (scripts/install-test-deps.sh installs them)');

const WINDOW = 4;
const HTU = 'https://127.0.0.1/replicated';
type Durability = 'replica' | 'primary';

let d: Deployment;
let set: SentinelSet;
let restarted: RedisServer | undefined;
const groups: Record<Durability, Guard[]> = { replica: [], primary: [] };

describe.skipIf(!available)('shared state on Redis Sentinel: the primary killed mid-run', () => {
  beforeAll(async () => {
    [d, set] = await Promise.all([startDeployment(), startSentinelSet()]);
    const secretFile = join(d.pki.dir, 'shared-secret');
    await writeFile(secretFile, randomBytes(32), { mode: 0o600 });
    const start = (replayDurability: Durability) =>
      startGuard(
        d.pki,
        baseConfig(d.pki, d.as, d.upstream, {
          // Each group its own key space, so one group's markers never answer for the other's.
          sharedState: { sentinel: { masterName: MASTER_NAME, nodes: set.sentinelNodes }, secretFile, keyPrefix: `${replayDurability}:`, onUnavailable: 'fail-closed', timeoutMs: 300, replayDurability },
          methods: ['mtls', 'dpop'],
        }),
      );
    [groups.replica, groups.primary] = await Promise.all([Promise.all([start('replica'), start('replica')]), Promise.all([start('primary'), start('primary')])]);
    const all = [...groups.replica, ...groups.primary];
    await waitFor(async () => (await Promise.all(all.map((g) => metricOf(g, /^cnfguard_shared_state_role\{role="primary"\}/)))).every((v) => v === 1), 'every replica on the primary', { timeoutMs: 10_000 });
  }, 60_000);

  afterAll(async () => {
    await Promise.all([...groups.replica, ...groups.primary].map((g) => g.stop()));
    await restarted?.cleanup();
    await set?.cleanup();
    await d?.stop();
  });

  it('introspection flows, PoP follows onUnavailable, the shared path comes back; replays: 0 with replica, the lost window with primary', async () => {
    const mtlsAgent = new Agent({ connect: { ca: d.pki.certs.ca.cert, cert: d.pki.certs.clients.client1.cert, key: d.pki.certs.clients.client1.key } });
    const dpopAgent = new Agent({ connect: { ca: d.pki.certs.ca.cert } });
    const key = await generateKeyPair('ES256');
    const [dpopToken, ...boundTokens] = await Promise.all([
      d.as.issueToken({ clientId: 'plain-app', caCert: d.pki.certs.ca.cert, dpopProof: (htu, htm) => generateProof(key, htu, htm) }),
      ...Array.from({ length: 40 }, () => d.tokenFor('client1')),
    ]);
    let nextToken = 0;
    // A fresh bound token per mTLS request: each is a local miss, so introspection (shared tier, else the AS) is on every request's path.
    const bound = (): string => boundTokens[nextToken++ % boundTokens.length] as string;
    const log: { at: number; group: Durability; kind: 'mtls' | 'dpop'; status: number; phase: string }[] = [];
    const accepted: Record<Durability, { proof: string; by: number; phase: string }[]> = { replica: [], primary: [] };
    let phase = 'steady';

    const sendDpop = async (group: Durability, i: number, proof?: string): Promise<number> => {
      const guard = groups[group][i % 2] as Guard;
      const res = await request(`${guard.started.url}/replicated`, { headers: { authorization: `DPoP ${dpopToken}`, dpop: proof ?? (await generateProof(key, HTU, 'GET', undefined, dpopToken)), host: '127.0.0.1' }, dispatcher: dpopAgent });
      await res.body.dump();
      return res.statusCode;
    };
    const round = async (i: number): Promise<void> => {
      for (const group of ['replica', 'primary'] as const) {
        const guard = groups[group][i % 2] as Guard;
        const res = await request(`${guard.started.url}/a`, { headers: { authorization: `Bearer ${bound()}` }, dispatcher: mtlsAgent });
        await res.body.dump();
        log.push({ at: performance.now(), group, kind: 'mtls', status: res.statusCode, phase });
        const proof = await generateProof(key, HTU, 'GET', undefined, dpopToken);
        const status = await sendDpop(group, i, proof);
        log.push({ at: performance.now(), group, kind: 'dpop', status, phase });
        if (status === 200) accepted[group].push({ proof, by: i % 2, phase });
      }
    };

    let i = 0;
    try {
      for (; i < 6; i++) await round(i);
      // Which requests did not pass, if any (a 503 here is the store, before anything was killed).
      expect(log.filter((e) => e.status !== 200).map((e) => [e.group, e.kind, e.status]), 'steady: every request passes').toEqual([]);

      // The partition: replica frozen, link dropped; what the primary takes now exists only there.
      set.replica.pause();
      await ask(set.primary.port, 'CLIENT', 'KILL', 'TYPE', 'replica');
      phase = 'window';
      for (let w = 0; w < WINDOW; w++, i++) await round(i);

      const killedAt = performance.now();
      await set.primary.stop();
      set.replica.resume();
      phase = 'failover';
      // Steady traffic until the sentinels name the replica, then the old primary comes back as its replica.
      let failoverRoleSeen = false;
      await waitFor(
        async () => {
          await round(i++);
          failoverRoleSeen ||= (await metricOf(groups.primary[0] as Guard, /^cnfguard_shared_state_role\{role="failover"\}/)) === 1;
          return (await set.primaryPort()) === set.replica.port;
        },
        'the sentinels to promote the replica',
        { timeoutMs: 15_000, intervalMs: 1 },
      );
      const promotedAt = performance.now();
      restarted = await startRedis({ port: set.primary.port, args: ['--replicaof', '127.0.0.1', String(set.replica.port)] });
      // ...until both groups pass DPoP again on both replicas, through the shared store.
      await waitFor(
        async () => {
          await round(i++);
          const last = log.slice(-8);
          return last.length === 8 && last.every((e) => e.status === 200);
        },
        'both groups passing again',
        // ~2-3 s when run alone; under the whole suite on 2 cores it has once run past 15 s (cause
        // not found): the bound is generous, and a timeout says which replica and what its store reported.
        { timeoutMs: 30_000, intervalMs: 1 },
      ).catch(async (err: Error) => {
        // Say which replica did not come back, what its store reported, and the client's last words about it.
        const all = [...groups.replica, ...groups.primary];
        const roles = await Promise.all(all.map(async (g) => (await fetch(`${g.started.adminUrl}/status`)).text()));
        const storeLogs = all.map((g, n) => `guard ${n}: ${g.logs.lines.filter((line) => line.includes('shared state')).slice(-6).join(' / ')}`);
        const sentinelViews = await Promise.all(set.sentinelNodes.map(async (node) => String(await ask(Number(node.split(':')[1]), 'SENTINEL', 'get-master-addr-by-name', MASTER_NAME).catch((e: Error) => e.message))));
        throw new Error(`${err.message}; last requests: ${JSON.stringify(log.slice(-8).map((e) => [e.group, e.kind, e.status]))}; replication: ${String(await ask(set.replica.port, 'INFO', 'replication')).replace(/\r\n/g, ' ')}; sentinels name: ${sentinelViews.join(' | ')}; store logs: ${storeLogs.join(' || ')}; status: ${roles.join(' | ')}`);
      });
      phase = 'after';
      for (let n = 0; n < 2; n++) await round(i++);

      // Every accepted proof, sent again to the other replica of its group.
      const replaysAccepted: Record<Durability, number> = { replica: 0, primary: 0 };
      const replayedByPhase: Record<string, number> = {};
      for (const group of ['replica', 'primary'] as const) {
        for (const { proof, by, phase: when } of accepted[group]) {
          if ((await sendDpop(group, by + 1, proof)) !== 200) continue;
          replaysAccepted[group]++;
          replayedByPhase[`${group}/${when}`] = (replayedByPhase[`${group}/${when}`] ?? 0) + 1;
        }
      }

      const report = Object.fromEntries(
        (['replica', 'primary'] as const).map((group) => {
          const mine = log.filter((e) => e.group === group);
          const firstPass = mine.find((e) => e.kind === 'dpop' && e.status === 200 && e.at > killedAt);
          return [
            group,
            {
              requests: mine.length,
              dpopFailoverMs: Math.round((firstPass?.at ?? NaN) - killedAt),
              promotedAfterMs: Math.round(promotedAt - killedAt),
              window503: mine.filter((e) => e.phase === 'window' && e.status === 503).length,
              failover503: mine.filter((e) => e.phase === 'failover' && e.status === 503).length,
              mtlsNot200: mine.filter((e) => e.kind === 'mtls' && e.status !== 200).length,
              replaysAccepted: replaysAccepted[group],
            },
          ];
        }),
      );
      console.log('sentinel failover, seen from the requests:', JSON.stringify(report), 'replays accepted by phase:', JSON.stringify(replayedByPhase));

      // Introspection flowed throughout: every bound-token request passed, in both groups.
      expect(log.filter((e) => e.kind === 'mtls' && e.status !== 200)).toEqual([]);
      // PoP followed onUnavailable (fail-closed): nothing but 200 or 503.
      expect(log.filter((e) => e.kind === 'dpop' && e.status !== 200 && e.status !== 503)).toEqual([]);
      // `replica`: the window was refused (no replica acknowledged), and nothing is accepted twice.
      expect(accepted.replica.filter((a) => a.phase === 'window')).toEqual([]);
      expect(replaysAccepted.replica).toBe(0);
      // `primary`: the window was accepted on the old primary alone, and the failover forgot exactly it.
      expect(accepted.primary.filter((a) => a.phase === 'window').length).toBe(WINDOW);
      expect(replaysAccepted.primary).toBe(WINDOW);
      expect(replayedByPhase).toEqual({ 'primary/window': WINDOW });
      expect(failoverRoleSeen, 'the role said failover while there was no primary').toBe(true);
      // The shared path is back without a restart: the role says so, and the counters saw it.
      // Polled: once in a loop of runs, a replica that had passed again read not-primary here (a
      // reconnect after the first; cause not pinned down): the point is that it comes back unaided.
      for (const [n, guard] of [...groups.replica, ...groups.primary].entries()) {
        await waitFor(async () => (await metricOf(guard, /^cnfguard_shared_state_role\{role="primary"\}/)) === 1, `replica ${n}'s store role back to primary`, { timeoutMs: 10_000 });
      }
      // Each window write was unacknowledged: WAIT said 0, or (a slow machine) the call's deadline came first.
      const unacked = async (guard: Guard) => (await metricOf(guard, /^cnfguard_shared_state_errors_total\{kind="replica_unacked"\}/)) + (await metricOf(guard, /^cnfguard_shared_state_errors_total\{kind="timeout"\}/));
      expect((await unacked(groups.replica[0] as Guard)) + (await unacked(groups.replica[1] as Guard))).toBeGreaterThanOrEqual(WINDOW);
    } finally {
      await mtlsAgent.close();
      await dpopAgent.close();
    }
  }, 60_000);
});
