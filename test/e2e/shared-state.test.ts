/**
 * Shared state across replicas against a real redis-server: three cnfguard apps share one store
 * and one real AS (oidc-provider); outages are a killed (SIGKILL) or frozen (SIGSTOP) server.
 */
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { generateKeyPair, generateProof } from 'dpop';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisKv } from '../../src/state/redis-kv.ts';
import { createMemoryReplayStore, createSharedReplayStore, ReplayStoreUnavailableError } from '../../src/state/replay-store.ts';
import { sealKv, type SealedKv } from '../../src/state/sealed-kv.ts';
import { findRedisServer, startRedis, type RedisServer } from '../fixtures/redis.ts';
import { baseConfig, curl, metricOf, startDeployment, startGuard, type Deployment, type Guard } from '../fixtures/stack.ts';

const localReplayStore = () => createMemoryReplayStore({ maxEntries: 1000 });

const available = findRedisServer() !== undefined;
if (!available) console.warn('redis-server not found: shared-state tests skipped (scripts/install-test-deps.sh installs it)');

const TIMEOUT_MS = 150;
let d: Deployment;
let redis: RedisServer;
let secretFile: string;
let secret: Buffer;
let guards: Guard[] = [];

async function waitFor(check: () => Promise<boolean> | boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** The sealed KV over a Redis KV, as the app builds it, with the raw client for writing forgeries. */
function storeFor(url: string, ca?: string): SealedKv & { redis: RedisKv['redis'] } {
  const kv = new RedisKv({ url, ca, timeoutMs: TIMEOUT_MS });
  kv.connect();
  return Object.assign(sealKv(kv, { secret, keyPrefix: 'cnfguard:' }), { redis: kv.redis });
}

describe.skipIf(!available)('shared state (real redis-server)', () => {
  beforeAll(async () => {
    d = await startDeployment();
    redis = (await startRedis()) as RedisServer;
    secret = randomBytes(32);
    secretFile = join(d.pki.dir, 'shared-secret');
    await writeFile(secretFile, secret, { mode: 0o600 });
    const shared = { url: redis.url, secretFile, onUnavailable: 'fail-closed', timeoutMs: TIMEOUT_MS };
    // DPoP beside mTLS, with nonces: both the replay store and the nonce key are shared.
    guards = await Promise.all([0, 1, 2].map(() => startGuard(d.pki, baseConfig(d.pki, d.as, d.upstream, { sharedState: shared, methods: ['mtls', 'dpop'], dpop: { nonce: true } }))));
    await waitFor(async () => (await Promise.all(guards.map((g) => metricOf(g, /^cnfguard_shared_state_up /)))).every((v) => v === 1));
  });
  afterAll(async () => {
    await Promise.all(guards.map((g) => g.stop()));
    await redis?.cleanup();
    await d?.stop();
  });

  it('a token introspected by replica A is served by B and C with no AS call', async () => {
    const tokens = await Promise.all([0, 1, 2, 3, 4].map(() => d.tokenFor('client1')));
    const before = d.as.introspectionCalls();
    for (const token of tokens) {
      for (const guard of guards) expect((await curl(d.pki, `${guard.started.url}/a`, { cert: d.pki.files.client1, token })).status).toBe(200);
    }
    const calls = d.as.introspectionCalls() - before;
    console.log(`AS introspection calls for ${tokens.length} tokens x ${guards.length} replicas: ${calls} (without sharing: ${tokens.length * guards.length})`);
    expect(calls).toBe(tokens.length);
    expect(await metricOf(guards[1] as Guard, /^cnfguard_token_cache_hits_total\{tier="shared"\}/)).toBeGreaterThanOrEqual(tokens.length);
    // The binding is still checked on a shared hit.
    const stolen = await d.tokenFor('client1');
    await curl(d.pki, `${(guards[0] as Guard).started.url}/a`, { cert: d.pki.files.client1, token: stolen });
    expect((await curl(d.pki, `${(guards[2] as Guard).started.url}/a`, { cert: d.pki.files.client2, token: stolen })).status).toBe(401);
    const readyz = await (await fetch(`${(guards[0] as Guard).started.adminUrl}/readyz`)).text();
    expect(readyz).toBe('ready\nshared_state: up\n');
    for (const guard of guards) expect(guard.logs.text()).not.toContain(stolen);
  });

  it('a forged entry (written without the key) is ignored and counted; it cannot make a token active', async () => {
    const store = storeFor(redis.url);
    await waitFor(() => store.up);
    const token = 'not-a-token-the-as-knows';
    const key = store.key(`token:${token}`);
    const json = JSON.stringify({ v: 1, until: Date.now() + 60_000, c: false, a: { active: true, aud: [] } });
    await store.redis.set(key, `${randomBytes(32).toString('base64url')}.${json}`, 'PX', 60_000);
    // Moved from another token's key: authentic for that key, not for this one.
    const guard = guards[0] as Guard;
    const forgedBefore = await metricOf(guard, /^cnfguard_shared_state_errors_total\{kind="forged"\}/);
    expect((await curl(d.pki, `${guard.started.url}/a`, { cert: d.pki.files.client1, token })).status).toBe(401);
    const moved = 'another-unknown-token';
    await store.redis.set(store.key(`token:${moved}`), store.seal(key, json), 'PX', 60_000);
    expect((await curl(d.pki, `${guard.started.url}/a`, { cert: d.pki.files.client1, token: moved })).status).toBe(401);
    expect(await metricOf(guard, /^cnfguard_shared_state_errors_total\{kind="forged"\}/)).toBe(forgedBefore + 2);
    store.close();
  });

  it('replay: a jti accepted once is refused from another replica instance', async () => {
    const a = createSharedReplayStore(storeFor(redis.url), { onUnavailable: 'fail-closed', fallback: localReplayStore() });
    const bStore = storeFor(redis.url);
    const b = createSharedReplayStore(bStore, { onUnavailable: 'fail-closed', fallback: localReplayStore() });
    await waitFor(() => bStore.up);
    const jti = randomBytes(16).toString('base64url');
    const exp = Math.floor(Date.now() / 1000) + 60;
    expect(await a.remember(jti, exp)).toBe(true);
    expect(await b.remember(jti, exp)).toBe(false);
    expect(await a.remember(jti, exp)).toBe(false);
    bStore.close();
  });

  it('DPoP: a nonce from replica A works at B, and a proof B accepted is refused byte for byte at C', async () => {
    const key = await generateKeyPair('ES256');
    const token = await d.as.issueToken({ clientId: 'plain-app', caCert: d.pki.certs.ca.cert, dpopProof: (htu, htm) => generateProof(key, htu, htm) });
    const agent = new Agent({ connect: { ca: d.pki.certs.ca.cert } });
    const [a, b, c] = guards as [Guard, Guard, Guard];
    // Replicas behind one name: the client signs the URI it calls, the same for all of them.
    const htu = 'https://127.0.0.1/replicated';
    const send = async (guard: Guard, proof: string) => {
      const res = await request(`${guard.started.url}/replicated`, { headers: { authorization: `DPoP ${token}`, dpop: proof, host: '127.0.0.1' }, dispatcher: agent });
      await res.body.dump();
      return res;
    };
    try {
      const first = await send(a, await generateProof(key, htu, 'GET', undefined, token));
      expect(first.statusCode).toBe(401);
      const nonce = first.headers['dpop-nonce'] as string;
      const proof = await generateProof(key, htu, 'GET', nonce, token);
      expect((await send(b, proof)).statusCode).toBe(200);
      const replayed = await send(c, proof);
      expect(replayed.statusCode).toBe(401);
      expect(String(replayed.headers['www-authenticate'])).toContain('DPoP error="invalid_dpop_proof"');
    } finally {
      await agent.close();
    }
  });

  it('store frozen, then killed: requests still pass via the AS within the deadline; fail-closed vs local; back: used again', async () => {
    const guard = guards[1] as Guard;
    const failClosed = createSharedReplayStore(storeFor(redis.url), { onUnavailable: 'fail-closed', fallback: localReplayStore() });
    let fallbacks = 0;
    const localStore = storeFor(redis.url);
    const local = createSharedReplayStore(localStore, { onUnavailable: 'local', fallback: localReplayStore(), onFallback: () => fallbacks++ });
    await waitFor(() => localStore.up);
    const exp = Math.floor(Date.now() / 1000) + 60;
    const slowest: number[] = [];
    for (const outage of ['pause', 'kill'] as const) {
      if (outage === 'pause') redis.pause();
      else {
        redis.resume();
        await redis.stop();
      }
      let worst = 0;
      for (let i = 0; i < 3; i++) {
        const token = await d.tokenFor('client1');
        const t0 = performance.now();
        expect((await curl(d.pki, `${guard.started.url}/a`, { cert: d.pki.files.client1, token })).status).toBe(200);
        worst = Math.max(worst, performance.now() - t0);
      }
      slowest.push(worst);
      // Each proof method answers it with its own reason (dpop_replay_unavailable, httpsig_replay_unavailable).
      await expect(failClosed.remember(randomBytes(8).toString('hex'), exp)).rejects.toSatisfy((e) => e instanceof ReplayStoreUnavailableError && e.reason === 'unreachable');
      const jti = randomBytes(8).toString('hex');
      expect(await local.remember(jti, exp)).toBe(true);
      expect(await local.remember(jti, exp)).toBe(false);
    }
    console.log(`slowest request with the store frozen: ${slowest[0]?.toFixed(0)} ms, killed: ${slowest[1]?.toFixed(0)} ms (store deadline ${TIMEOUT_MS} ms, AS timeout 1500 ms)`);
    // Each request: at most one store deadline plus a real introspection (curl's own start-up included).
    for (const ms of slowest) expect(ms).toBeLessThan(TIMEOUT_MS + 1000);
    expect(fallbacks).toBe(4);
    await waitFor(async () => (await metricOf(guard, /^cnfguard_shared_state_up /)) === 0);
    expect(await (await fetch(`${guard.started.adminUrl}/readyz`)).text()).toBe('ready\nshared_state: down\n');

    await redis.start();
    await waitFor(async () => (await metricOf(guard, /^cnfguard_shared_state_up /)) === 1 && (await metricOf(guards[2] as Guard, /^cnfguard_shared_state_up /)) === 1, 8000);
    const token = await d.tokenFor('client1');
    const before = d.as.introspectionCalls();
    expect((await curl(d.pki, `${guard.started.url}/a`, { cert: d.pki.files.client1, token })).status).toBe(200);
    await new Promise((r) => setTimeout(r, 100)); // the write to the store does not hold the response
    expect((await curl(d.pki, `${(guards[2] as Guard).started.url}/a`, { cert: d.pki.files.client1, token })).status).toBe(200);
    expect(d.as.introspectionCalls() - before).toBe(1);
  });

  it('a replica whose secretFile differs by a trailing newline is not silent: an error naming the cause, counted', async () => {
    const [a] = guards as [Guard];
    expect(await metricOf(a, /^cnfguard_shared_state_errors_total\{kind="secret_mismatch"\}/)).toBe(0);
    // The same secret written with `echo` instead of `head -c`: another HMAC key, so no entry of the others is ever read.
    const echoed = join(d.pki.dir, 'shared-secret-echoed');
    await writeFile(echoed, Buffer.concat([secret, Buffer.from('\n')]), { mode: 0o600 });
    const odd = await startGuard(d.pki, baseConfig(d.pki, d.as, d.upstream, { sharedState: { url: redis.url, secretFile: echoed, onUnavailable: 'fail-closed', timeoutMs: 5000 }, methods: ['mtls', 'dpop'], dpop: { nonce: true } }));
    try {
      // At connect it reads the others' fingerprint (each replica wrote its own at connect).
      await waitFor(async () => (await metricOf(odd, /^cnfguard_shared_state_errors_total\{kind="secret_mismatch"\}/)) === 1);
      const line = odd.logs.entries().find((entry) => String(entry.msg).includes('different sharedState.secretFile'));
      expect(line).toMatchObject({ level: 'error', cause: 'trailing-whitespace' });
      expect(String(line?.msg)).toContain('trailing newline');
      expect(odd.logs.text()).not.toContain(secret.toString('base64url'));
      // And the admin says so where an operator looks first.
      expect(await (await fetch(`${odd.started.adminUrl}/readyz`)).text()).toContain('shared_state: up (secret mismatch: trailing-whitespace)');
      expect(((await (await fetch(`${odd.started.adminUrl}/status`)).json()) as { sharedState: unknown }).sharedState).toMatchObject({ state: 'up', secretMismatch: 'trailing-whitespace' });
      // Its timeoutMs above introspection.timeoutMs is lowered, and said (check prints the configured value).
      expect(odd.logs.entries().find((entry) => String(entry.msg).startsWith('sharedState.timeoutMs 5000 is more than introspection.timeoutMs'))).toMatchObject({ level: 'warn', configured: 5000 });
    } finally {
      await odd.stop();
    }
  });

  it('a full store (maxmemory, noeviction) is logged with its own error, not only counted', async () => {
    const full = (await startRedis()) as RedisServer;
    const warnings: { message: string; detail: Record<string, unknown> }[] = [];
    const errors: string[] = [];
    const kv = new RedisKv({ url: full.url, timeoutMs: TIMEOUT_MS, warn: (message, detail) => void warnings.push({ message, detail }), onError: (kind) => void errors.push(kind) });
    try {
      kv.connect();
      await waitFor(() => kv.up);
      await kv.redis.config('SET', 'maxmemory', '1'); // any write is now over the limit
      const replay = createSharedReplayStore(sealKv(kv, { secret, keyPrefix: 'cnfguard:' }), { onUnavailable: 'fail-closed', fallback: localReplayStore() });
      await expect(replay.remember('jti-on-a-full-store', Math.floor(Date.now() / 1000) + 60)).rejects.toBeInstanceOf(ReplayStoreUnavailableError);
      expect(errors).toEqual(['unavailable']);
      expect(warnings).toHaveLength(1);
      expect(warnings[0]?.message).toBe('shared state store is full (maxmemory reached): it refuses writes');
      expect(String(warnings[0]?.detail.error)).toMatch(/^OOM command not allowed/);
    } finally {
      kv.close();
      await full.cleanup();
    }
  });

  it('rediss:// with a CA from sharedState.ca-style trust', async () => {
    const tlsRedis = (await startRedis({ tls: d.pki.certs.server })) as RedisServer;
    try {
      const store = storeFor(tlsRedis.url, d.pki.certs.ca.cert);
      await waitFor(() => store.up);
      const replay = createSharedReplayStore(store, { onUnavailable: 'fail-closed', fallback: localReplayStore() });
      expect(await replay.remember('tls-jti', Math.floor(Date.now() / 1000) + 30)).toBe(true);
      expect(await replay.remember('tls-jti', Math.floor(Date.now() / 1000) + 30)).toBe(false);
      store.close();
    } finally {
      await tlsRedis.cleanup();
    }
  });
});
