/**
 * The shared tier sits behind the local cache: a local hit never reaches it (same code path as
 * without sharedState), and config validation of `sharedState`.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { effectiveConfigYaml, loadConfigObject, type ConfigError } from '../../src/config/load.ts';
import { INACTIVE, type TokenInfo } from '../../src/introspection/token-info.ts';
import { createCachedIntrospector } from '../../src/introspection/cache.ts';
import { createSharedTokenTier, withSharedTier, type SharedTier } from '../../src/introspection/shared-tier.ts';
import { createMemoryKv } from '../../src/state/memory-kv.ts';
import { sealKv } from '../../src/state/sealed-kv.ts';
import { manualClock } from '../fixtures/clock.ts';
import { generateDevCertificates } from '../../src/tls/dev-certs.ts';
import { minimalConfig } from '../fixtures/config.ts';

const ACTIVE: TokenInfo = { ...INACTIVE, active: true, exp: Math.floor(Date.now() / 1000) + 3600 };
const rules = { maxEntries: 1000, maxTtlSeconds: 300, negativeTtlSeconds: 5 };

describe('shared tier', () => {
  it('a local hit does not touch the store; misses consult it, AS answers are written with the TTL rules', async () => {
    const calls = { get: 0, set: [] as number[] };
    const tier: SharedTier = {
      get: () => (calls.get++, Promise.resolve(undefined)),
      set: (_token, _info, ms) => void calls.set.push(ms),
    };
    const plain = createCachedIntrospector(() => Promise.resolve(ACTIVE), rules);
    const tiered = createCachedIntrospector(withSharedTier(() => Promise.resolve(ACTIVE), tier, rules), rules);
    await tiered.lookup('t');
    await plain.lookup('t');
    expect(calls).toEqual({ get: 1, set: [300_000] });
    const time = async (cache: typeof plain) => {
      const t0 = performance.now();
      for (let i = 0; i < 200_000; i++) await cache.lookup('t');
      return ((performance.now() - t0) * 1e6) / 200_000;
    };
    const [a, b, c, e] = [await time(plain), await time(tiered), await time(plain), await time(tiered)];
    console.log(`local hit: ${Math.min(a, c).toFixed(0)} ns without the shared tier, ${Math.min(b, e).toFixed(0)} ns with it (200k lookups each, best of 2)`);
    expect(calls.get).toBe(1);
    // An inactive answer is shared for negativeTtlSeconds.
    const inactive = withSharedTier(() => Promise.resolve(INACTIVE), tier, rules);
    await inactive('x');
    expect(calls.set.at(-1)).toBe(5000);
  });

  it('an answer from the shared tier lives locally no longer than its shared entry: a revoked token is refused maxTtl after the AS last called it active', async () => {
    const clock = manualClock();
    const ttl = { maxEntries: 1000, maxTtlSeconds: 20, negativeTtlSeconds: 5, now: clock.now };
    // One store (the sealed envelope over a memory KV on the same clock), two replicas' caches.
    const store = sealKv(createMemoryKv({ maxEntries: 100, now: clock.now }), { secret: randomBytes(32), keyPrefix: 'cnfguard:' });
    let revoked = false;
    const as = { calls: 0 };
    const introspect = () => (as.calls++, Promise.resolve(revoked ? INACTIVE : ACTIVE));
    const replica = () => createCachedIntrospector(withSharedTier(introspect, createSharedTokenTier(store, { keepClaims: false, now: clock.now }), ttl), ttl);
    const [one, two] = [replica(), replica()];
    expect((await one.lookup('T')).active).toBe(true); // t0: the AS says active; the shared entry ends at t0 + 20 s
    revoked = true;
    clock.advance(18_600);
    expect((await two.lookup('T')).active).toBe(true); // from the shared entry, 1.4 s before it ends
    expect(as.calls).toBe(1);
    clock.advance(1_300);
    expect((await two.lookup('T')).active).toBe(true); // t0 + 19.9 s: still inside the window the docs promise
    clock.advance(200);
    // t0 + 20.1 s: the entry ended in the store and in replica two's cache alike; the AS is asked,
    // and its inactive answer, shared, reaches replica one too.
    expect((await two.lookup('T')).active).toBe(false);
    expect(as.calls).toBe(2);
    expect((await one.lookup('T')).active).toBe(false);
    expect(as.calls).toBe(2);
  });

  it('sharedState is validated: redis:// or rediss://, a secret file of at least 32 bytes', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cnfguard-shared-'));
    const certs = generateDevCertificates();
    writeFileSync(join(dir, 's.crt'), certs.server.cert);
    writeFileSync(join(dir, 's.key'), certs.server.key);
    writeFileSync(join(dir, 'short'), 'too short');
    writeFileSync(join(dir, 'good'), randomBytes(32));
    const base = minimalConfig({ tls: { cert: join(dir, 's.crt'), key: join(dir, 's.key') } });
    const problems = (sharedState: unknown) => {
      try {
        loadConfigObject({ ...base, sharedState }, 'test');
        return [];
      } catch (err) {
        return (err as ConfigError).problems.map((p) => p.path);
      }
    };
    expect(problems({ url: 'http://x', secretFile: join(dir, 'good') })).toEqual(['sharedState.url']);
    expect(problems({ url: 'redis://x', secretFile: join(dir, 'short') })).toEqual(['sharedState.secretFile']);
    expect(problems({ url: 'redis://x', secretFile: join(dir, 'missing') })).toEqual(['sharedState.secretFile']);
    const loaded = loadConfigObject({ ...base, sharedState: { url: 'rediss://x:6380', secretFile: join(dir, 'good') } }, 'test');
    expect(loaded.settings.sharedState).toMatchObject({ keyPrefix: 'cnfguard:', onUnavailable: 'fail-closed', timeoutMs: 200 });
    expect(loaded.sharedState?.secret.length).toBe(32);
    // `check` prints the effective config: the store's password is masked like the client secret.
    const withPassword = loadConfigObject({ ...base, sharedState: { url: 'rediss://cnfguard:store-pass-0001@x:6380/2', secretFile: join(dir, 'good') } }, 'test');
    const shown = effectiveConfigYaml(withPassword);
    expect(shown).not.toContain('store-pass-0001');
    expect(shown).toContain('rediss://cnfguard:********@x:6380/2');
    expect(withPassword.settings.sharedState?.url).toBe('rediss://cnfguard:store-pass-0001@x:6380/2');
  });
});
