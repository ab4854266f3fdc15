import { describe, expect, it } from 'vitest';
import { createMemoryReplayStore, createSharedReplayStore, FALLBACK_LOG_EVERY_MS, replayKey, ReplayStoreUnavailableError } from '../../src/state/replay-store.ts';
import { StoreUnavailableError, type KeyValueStore } from '../../src/state/kv.ts';
import { createMemoryKv } from '../../src/state/memory-kv.ts';
import { manualClock } from '../fixtures/clock.ts';
import { createNonceSource } from '../../src/proof/nonce.ts';

describe('memory replay store', () => {
  it('says true once, false while the key lives, true again after it expired', async () => {
    let t = 1000;
    const store = createMemoryReplayStore({ maxEntries: 1000, now: () => t });
    expect(await store.remember('k', 1010)).toBe(true);
    expect(await store.remember('k', 1010)).toBe(false);
    t = 1009.9;
    expect(await store.remember('k', 1020)).toBe(false);
    t = 1010;
    expect(await store.remember('k', 1020)).toBe(true);
  });

  it('answers two concurrent calls with one key once', async () => {
    const store = createMemoryReplayStore({ maxEntries: 1000, now: () => 0 });
    expect(await Promise.all([store.remember('k', 10), store.remember('k', 10)])).toEqual([true, false]);
  });

  it('when full of live entries, refuses new keys instead of forgetting old ones', async () => {
    let t = 0;
    const store = createMemoryReplayStore({ maxEntries: 1000, now: () => t });
    for (let i = 0; i < 1000; i++) expect(await store.remember(`k${i}`, 100 + (i % 7))).toBe(true);
    await expect(store.remember('new', 200)).rejects.toBeInstanceOf(ReplayStoreUnavailableError);
    await expect(store.remember('new', 200)).rejects.toMatchObject({ reason: 'full' });
    // Every old key is still remembered.
    expect(await store.remember('k0', 100)).toBe(false);
    expect(await store.remember('k999', 100)).toBe(false);
    t = 103;
    expect(await store.remember('new', 200)).toBe(true);
    expect(store.size).toBeLessThanOrEqual(1000);
  });

  it('drops expired entries as new ones come, so its size follows the live set', async () => {
    let t = 0;
    const store = createMemoryReplayStore({ maxEntries: 100_000, now: () => t });
    for (let i = 0; i < 5000; i++) {
      t = i;
      await store.remember(`k${i}`, i + 10);
    }
    expect(store.size).toBeLessThan(50);
  });

  it('keys by a hash of the proof key and the jti', () => {
    expect(replayKey('jkt', 'jti')).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(replayKey('jkt', 'jti')).not.toBe(replayKey('jkt2', 'jti'));
    expect(replayKey('a', 'b\0c')).not.toBe(replayKey('a\0b', 'c'));
  });
});

describe('shared replay store, onUnavailable: local', () => {
  it('logs the fallback: a warning when it starts, one a minute while it lasts (with the count since), an info when the store answers again', async () => {
    const clock = manualClock();
    const memory = createMemoryKv({ maxEntries: 100, now: clock.now });
    let down = false;
    const kv: KeyValueStore = {
      get up() {
        return !down;
      },
      get: (key) => memory.get(key),
      set: (key, value, ttlMs) => memory.set(key, value, ttlMs),
      setIfAbsent: (key, value, ttlMs) => (down ? Promise.reject(new StoreUnavailableError('unreachable', 'shared state deadline')) : memory.setIfAbsent(key, value, ttlMs)),
    };
    const lines: { level: string; detail: Record<string, unknown>; message: string }[] = [];
    let counted = 0;
    const store = createSharedReplayStore(kv, {
      onUnavailable: 'local',
      fallback: createMemoryReplayStore({ maxEntries: 100, now: () => clock.now() / 1000 }),
      now: clock.now,
      onFallback: () => counted++,
      log: { warn: (detail, message) => lines.push({ level: 'warn', detail, message }), info: (detail, message) => lines.push({ level: 'info', detail, message }) },
    });
    const exp = () => Math.floor(clock.now() / 1000) + 300;
    expect(await store.remember('a', exp())).toBe(true);
    expect(lines).toEqual([]);
    down = true;
    for (let i = 0; i < 5; i++) {
      expect(await store.remember(`down-${i}`, exp())).toBe(true);
      clock.advance(10_000);
    }
    expect(counted).toBe(5);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ level: 'warn', detail: { onUnavailable: 'local', cause: 'replay store unreachable' } });
    expect(lines[0]?.message).toContain("this replica's own store");
    clock.advance(FALLBACK_LOG_EVERY_MS);
    expect(await store.remember('down-late', exp())).toBe(true);
    expect(lines).toHaveLength(2);
    expect(lines[1]).toMatchObject({ level: 'warn', detail: { fallbacks: 5, fallbacksSinceStart: 6 } });
    down = false;
    expect(await store.remember('back', exp())).toBe(true);
    expect(await store.remember('back-2', exp())).toBe(true);
    expect(lines).toHaveLength(3);
    expect(lines[2]).toMatchObject({ level: 'info', detail: { fallbacks: 6 } });
    // A second outage is a new start: warned again at once.
    down = true;
    expect(await store.remember('again', exp())).toBe(true);
    expect(lines.map((line) => line.level)).toEqual(['warn', 'warn', 'info', 'warn']);
  });
});

describe('nonce source', () => {
  it('rotates every period and accepts the current and the previous nonce only', () => {
    let t = 6000;
    const source = createNonceSource({ rotationSeconds: 60, now: () => t });
    const n0 = source.current();
    expect(n0).toMatch(/^[A-Za-z0-9_-]{22}$/);
    expect(source.accepts(n0)).toBe(true);
    expect(source.freshFor(n0)).toBeUndefined();
    t += 59;
    expect(source.current()).toBe(n0);
    t += 1;
    const n1 = source.current();
    expect(n1).not.toBe(n0);
    expect(source.accepts(n0)).toBe(true);
    expect(source.freshFor(n0)).toBe(n1);
    expect(source.freshFor(undefined)).toBe(n1);
    t += 60;
    expect(source.accepts(n0)).toBe(false);
    expect(source.accepts(n1)).toBe(true);
  });

  it('accepts nothing that is not its own', () => {
    const key = Buffer.alloc(32, 7);
    const a = createNonceSource({ key, rotationSeconds: 60, now: () => 6000 });
    const b = createNonceSource({ rotationSeconds: 60, now: () => 6000 });
    const c = createNonceSource({ key, rotationSeconds: 60, now: () => 6000 });
    expect(b.accepts(a.current())).toBe(false);
    expect(c.accepts(a.current())).toBe(true); // one key from shared state: every replica agrees
    for (const junk of ['', 'x', 'A'.repeat(22), `${a.current()}=`, a.current().toLowerCase() === a.current() ? 'B'.repeat(22) : a.current().toLowerCase()]) {
      expect(a.accepts(junk)).toBe(false);
    }
  });

  it('refuses a short key and a bad period', () => {
    expect(() => createNonceSource({ key: Buffer.alloc(16), rotationSeconds: 60, now: () => 0 })).toThrow(RangeError);
    expect(() => createNonceSource({ rotationSeconds: 0, now: () => 0 })).toThrow(RangeError);
  });
});
