/**
 * Shared state on a Redis Cluster of three primaries on loopback (test/fixtures/redis-ha.ts), two
 * cnfguard replicas and a real AS: tokens and DPoP jtis land on every primary (keys spread over the
 * hash slots, no command spans two), a token one replica introspected is served to the other from
 * the cluster, and a proof one replica accepted is refused by the other.
 */
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { generateKeyPair, generateProof } from 'dpop';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ask, startRedisCluster, type RedisCluster } from '../fixtures/redis-ha.ts';
import { findRedisServer } from '../fixtures/redis.ts';
import { baseConfig, metricOf, startDeployment, startGuard, type Deployment, type Guard } from '../fixtures/stack.ts';
import { waitFor } from '../fixtures/wait.ts';

const available = findRedisServer() !== undefined;
if (!available) console.warn('redis-server not found: cluster tests skipped (scripts/install-test-deps.sh installs it)');

const HTU = 'https://127.0.0.1/replicated';
let d: Deployment;
let cluster: RedisCluster;
let guards: Guard[] = [];

/** The keys of one kind each primary holds. */
async function keysPerNode(kind: 'token' | 'jti'): Promise<number[]> {
  return Promise.all(cluster.nodes.map(async (node) => ((await ask(node.port, 'KEYS', `cnfguard:${kind}:*`)) as string[]).length));
}

describe.skipIf(!available)('shared state on a Redis Cluster (three primaries)', () => {
  beforeAll(async () => {
    [d, cluster] = await Promise.all([startDeployment(), startRedisCluster()]);
    const secretFile = join(d.pki.dir, 'shared-secret');
    await writeFile(secretFile, randomBytes(32), { mode: 0o600 });
    const config = baseConfig(d.pki, d.as, d.upstream, { sharedState: { cluster: { nodes: [cluster.seeds[0]] }, secretFile, timeoutMs: 500 }, methods: ['mtls', 'dpop'] });
    guards = await Promise.all([startGuard(d.pki, config), startGuard(d.pki, config)]);
    // Isolated this takes well under a second; under the whole suite on 2 cores it has taken ~10 s
    // (ioredis's slot-cache refreshes timing out and being retried): the bound is generous, and a
    // timeout says what each replica's store reported.
    await waitFor(async () => (await Promise.all(guards.map((g) => metricOf(g, /^cnfguard_shared_state_role\{role="primary"\}/)))).every((v) => v === 1), 'both replicas on the cluster', { timeoutMs: 30_000 }).catch(async (err: Error) => {
      const statuses = await Promise.all(guards.map(async (g) => (await fetch(`${g.started.adminUrl}/status`)).text()));
      throw new Error(`${err.message}; status: ${statuses.join(' | ')}`);
    });
  }, 60_000);

  afterAll(async () => {
    await Promise.all(guards.map((g) => g.stop()));
    await cluster?.cleanup();
    await d?.stop();
  });

  it('tokens introspected by one replica are served to the other from every primary, with one AS call each', async () => {
    const [a, b] = guards as [Guard, Guard];
    const agent = new Agent({ connect: { ca: d.pki.certs.ca.cert, cert: d.pki.certs.clients.client1.cert, key: d.pki.certs.clients.client1.key } });
    try {
      const tokens = await Promise.all(Array.from({ length: 24 }, () => d.tokenFor('client1')));
      const send = async (guard: Guard, token: string) => {
        const res = await request(`${guard.started.url}/a`, { headers: { authorization: `Bearer ${token}` }, dispatcher: agent });
        await res.body.dump();
        return res.statusCode;
      };
      const before = d.as.introspectionCalls();
      for (const token of tokens) expect(await send(a, token)).toBe(200);
      // The tier's write does not hold the request: wait until every entry is in the cluster.
      await waitFor(async () => (await keysPerNode('token')).reduce((x, y) => x + y, 0) === tokens.length, 'every token entry written');
      for (const token of tokens) expect(await send(b, token)).toBe(200);
      expect(d.as.introspectionCalls() - before, 'one AS call per token, for both replicas').toBe(tokens.length);
      expect(await metricOf(b, /^cnfguard_token_cache_hits_total\{tier="shared"\}/)).toBe(tokens.length);
      const spread = await keysPerNode('token');
      console.log('token entries per cluster primary:', spread);
      expect(spread.every((n) => n > 0), 'every primary holds some').toBe(true);
    } finally {
      await agent.close();
    }
  });

  it('jtis spread over the primaries, and a proof one replica accepted is refused by the other', async () => {
    const [a, b] = guards as [Guard, Guard];
    const key = await generateKeyPair('ES256');
    const token = await d.as.issueToken({ clientId: 'plain-app', caCert: d.pki.certs.ca.cert, dpopProof: (htu, htm) => generateProof(key, htu, htm) });
    const agent = new Agent({ connect: { ca: d.pki.certs.ca.cert } });
    const send = async (guard: Guard, proof: string) => {
      const res = await request(`${guard.started.url}/replicated`, { headers: { authorization: `DPoP ${token}`, dpop: proof, host: '127.0.0.1' }, dispatcher: agent });
      await res.body.dump();
      return res;
    };
    try {
      const proofs = await Promise.all(Array.from({ length: 24 }, () => generateProof(key, HTU, 'GET', undefined, token)));
      for (const [i, proof] of proofs.entries()) expect((await send(i % 2 === 0 ? a : b, proof)).statusCode).toBe(200);
      const spread = await keysPerNode('jti');
      console.log('jti markers per cluster primary:', spread);
      expect(spread.reduce((x, y) => x + y, 0)).toBe(proofs.length);
      expect(spread.every((n) => n > 0), 'every primary holds some').toBe(true);
      for (const [i, proof] of proofs.entries()) {
        const replayed = await send(i % 2 === 0 ? b : a, proof);
        expect(replayed.statusCode).toBe(401);
        expect(String(replayed.headers['www-authenticate'])).toContain('DPoP error="invalid_dpop_proof"');
      }
    } finally {
      await agent.close();
    }
  });
});
