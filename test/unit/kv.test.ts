/**
 * The key-value contract (state/kv.ts), one table of cases run against both adapters: the memory
 * one on a clock the test moves, and the Redis one against a real redis-server (test/fixtures/
 * redis.ts), where expiry is waited for with a bounded poll. Then the sealed envelope over either:
 * a value written without the key, tampered with, or moved under another name is refused.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StoreUnavailableError, type KeyValueStore } from '../../src/state/kv.ts';
import { createMemoryKv, type MemoryKv } from '../../src/state/memory-kv.ts';
import { RedisKv } from '../../src/state/redis-kv.ts';
import { sealKv } from '../../src/state/sealed-kv.ts';
import { manualClock } from '../fixtures/clock.ts';
import { findRedisServer, startRedis, type RedisServer } from '../fixtures/redis.ts';
import { waitFor } from '../fixtures/wait.ts';

/** What the table needs from an adapter besides the KV itself. */
interface Harness {
  kv: KeyValueStore;
  /** A lifetime the case lets pass ({@link expire}). */
  shortTtlMs: number;
  /** Lets `ms` pass but one millisecond (memory: the clock; Redis: nothing, the TTL is long). */
  almost(ms: number): void;
  /** Until `key`, written with {@link shortTtlMs}, is gone: the clock moved past it, or a bounded poll. */
  expire(key: string): Promise<void>;
}

const LONG = 60_000;

function memoryHarness(maxEntries = 1000): Harness & { kv: MemoryKv; clock: ReturnType<typeof manualClock> } {
  const clock = manualClock();
  const kv = createMemoryKv({ maxEntries, now: clock.now });
  return {
    kv,
    clock,
    shortTtlMs: 1000,
    almost: (ms) => clock.advance(ms - 1),
    expire: () => Promise.resolve(clock.advance(1000)),
  };
}

const redisAvailable = findRedisServer() !== undefined;
let redis: RedisServer | undefined;
let redisKv: RedisKv | undefined;

function redisHarness(): Harness {
  const kv = redisKv as RedisKv;
  return {
    kv,
    shortTtlMs: 40,
    almost: () => undefined,
    expire: (key) => waitFor(async () => (await kv.get(key)) === undefined, `${key} to expire in redis`).then(() => undefined),
  };
}

/** Each case on its own keys, so adapters that outlive a case (Redis) start clean. */
const fresh = (name: string) => `${name}-${randomBytes(6).toString('hex')}`;

const contract: [string, (h: Harness) => Promise<void>][] = [
  [
    'get of a key never written is undefined',
    async ({ kv }) => {
      expect(await kv.get(fresh('absent'))).toBeUndefined();
    },
  ],
  [
    'set then get gives the value, byte for byte; set again overwrites',
    async ({ kv }) => {
      const key = fresh('k');
      const value = 'a.b\nc:é\u{1F511}';
      await kv.set(key, value, LONG);
      expect(await kv.get(key)).toBe(value);
      await kv.set(key, 'second', LONG);
      expect(await kv.get(key)).toBe('second');
    },
  ],
  [
    'setIfAbsent writes once: true, then false with the first value kept',
    async ({ kv }) => {
      const key = fresh('nx');
      expect(await kv.setIfAbsent(key, 'first', LONG)).toBe(true);
      expect(await kv.setIfAbsent(key, 'second', LONG)).toBe(false);
      expect(await kv.get(key)).toBe('first');
    },
  ],
  [
    'setIfAbsent over a value written by set is false',
    async ({ kv }) => {
      const key = fresh('nx-set');
      await kv.set(key, 'v', LONG);
      expect(await kv.setIfAbsent(key, 'w', LONG)).toBe(false);
      expect(await kv.get(key)).toBe('v');
    },
  ],
  [
    'ten concurrent setIfAbsent for one key: exactly one true',
    async ({ kv }) => {
      const key = fresh('race');
      const answers = await Promise.all(Array.from({ length: 10 }, (_, i) => kv.setIfAbsent(key, String(i), LONG)));
      expect(answers.filter(Boolean)).toHaveLength(1);
    },
  ],
  [
    'an empty value is a value: get gives it back, setIfAbsent sees it, set replaces it',
    async ({ kv }) => {
      const key = fresh('empty');
      expect(await kv.setIfAbsent(key, '', LONG)).toBe(true);
      expect(await kv.get(key)).toBe('');
      expect(await kv.setIfAbsent(key, 'x', LONG)).toBe(false);
      await kv.set(key, 'y', LONG);
      expect(await kv.get(key)).toBe('y');
      await kv.set(key, '', LONG);
      expect(await kv.get(key)).toBe('');
    },
  ],
  [
    'keys are independent',
    async ({ kv }) => {
      const [a, b] = [fresh('a'), fresh('b')];
      expect(await kv.setIfAbsent(a, '1', LONG)).toBe(true);
      expect(await kv.setIfAbsent(b, '2', LONG)).toBe(true);
      expect([await kv.get(a), await kv.get(b)]).toEqual(['1', '2']);
    },
  ],
  [
    'a value lives until its TTL and not after: get is undefined, setIfAbsent writes again',
    async (h) => {
      const key = fresh('ttl');
      expect(await h.kv.setIfAbsent(key, 'v', h.shortTtlMs)).toBe(true);
      await h.expire(key);
      expect(await h.kv.get(key)).toBeUndefined();
      expect(await h.kv.setIfAbsent(key, 'again', LONG)).toBe(true);
      expect(await h.kv.get(key)).toBe('again');
    },
  ],
  [
    'a value set with a TTL is there just before it ends',
    async (h) => {
      const key = fresh('alive');
      await h.kv.set(key, 'v', LONG);
      h.almost(LONG);
      expect(await h.kv.get(key)).toBe('v');
      expect(await h.kv.setIfAbsent(key, 'w', LONG)).toBe(false);
    },
  ],
  [
    'set renews the lifetime of a key',
    async (h) => {
      const key = fresh('renew');
      await h.kv.set(key, 'short', h.shortTtlMs);
      await h.kv.set(key, 'long', LONG);
      h.almost(h.shortTtlMs + 1);
      expect(await h.kv.get(key)).toBe('long');
    },
  ],
];

const SECRET = randomBytes(32);

function sealedContract(inner: () => KeyValueStore) {
  const setup = () => {
    const forged: number[] = [];
    const kv = inner();
    const sealed = sealKv(kv, { secret: SECRET, keyPrefix: 'test:', onForged: () => forged.push(1) });
    return { kv, sealed, forged };
  };
  const name = () => `token:${fresh('secret-token')}`;

  it('round-trips, and stores neither the name in its key nor a bare value', async () => {
    const { kv, sealed, forged } = setup();
    const n = name();
    await sealed.set(n, '{"active":true}', LONG);
    expect(await sealed.get(n)).toBe('{"active":true}');
    const storedKey = sealed.key(n);
    expect(storedKey).toMatch(/^test:token:[A-Za-z0-9_-]{43}$/);
    expect(storedKey).not.toContain(n.slice('token:'.length));
    expect(await kv.get(storedKey)).not.toBe('{"active":true}');
    expect(await sealed.setIfAbsent(n, 'other', LONG)).toBe(false);
    expect(forged).toHaveLength(0);
  });

  it('refuses a value written without the key (and counts it)', async () => {
    const { kv, sealed, forged } = setup();
    const n = name();
    await kv.set(sealed.key(n), '{"active":true}', LONG);
    expect(await sealed.get(n)).toBeUndefined();
    await kv.set(sealed.key(n), `${randomBytes(32).toString('base64url')}.{"active":true}`, LONG);
    expect(await sealed.get(n)).toBeUndefined();
    const other = sealKv(kv, { secret: randomBytes(32), keyPrefix: 'test:' });
    await kv.set(sealed.key(n), other.seal(sealed.key(n), '{"active":true}'), LONG);
    expect(await sealed.get(n)).toBeUndefined();
    expect(forged).toHaveLength(3);
  });

  it('refuses a sealed value tampered with, or moved under another name', async () => {
    const { kv, sealed, forged } = setup();
    const [n, m] = [name(), name()];
    await sealed.set(n, '{"active":false}', LONG);
    const stored = (await kv.get(sealed.key(n))) as string;
    await kv.set(sealed.key(n), stored.replace('false', 'true '), LONG);
    expect(await sealed.get(n)).toBeUndefined();
    await kv.set(sealed.key(m), stored, LONG);
    expect(await sealed.get(m)).toBeUndefined();
    expect(forged).toHaveLength(2);
  });
}

describe('KV contract: memory adapter (injected clock)', () => {
  it.each(contract)('%s', async (_name, run) => {
    await run(memoryHarness());
  });
});

describe.skipIf(!redisAvailable)('KV contract: Redis adapter (real redis-server)', () => {
  beforeAll(async () => {
    redis = await startRedis();
    redisKv = new RedisKv({ url: (redis as RedisServer).url, timeoutMs: 2000 });
    redisKv.connect();
    await waitFor(() => redisKv?.up, 'the Redis KV to be up');
  });
  afterAll(async () => {
    redisKv?.close();
    await redis?.cleanup();
  });

  it.each(contract)('%s', async (_name, run) => {
    await run(redisHarness());
  });

  describe('sealed envelope over it', () => {
    sealedContract(() => redisKv as RedisKv);
  });

  it('a client ioredis ended on its own (as a failover can) is connected again; close() ends it for good', async () => {
    const kv = new RedisKv({ url: (redis as RedisServer).url, timeoutMs: 500 });
    kv.connect();
    await waitFor(() => kv.up, 'the Redis KV to be up');
    // What ioredis does after a failover's disconnect meets a connect in flight: status `end`, no retry.
    const ended = new Promise((resolve) => kv.redis.once('end', resolve));
    kv.redis.disconnect();
    await ended;
    expect(kv.up).toBe(false);
    await waitFor(() => kv.up, 'the ended client to be connected again', { timeoutMs: 5000 });
    expect(await kv.setIfAbsent('ended-then-back', '1', LONG)).toBe(true);
    const closed = new Promise((resolve) => kv.redis.once('end', resolve));
    kv.close();
    await closed;
    expect(kv.up).toBe(false);
  });

  it('a store that is gone: calls reject (counted), up is false, nothing is "absent"', async () => {
    const stopped = (await startRedis()) as RedisServer;
    const errors: string[] = [];
    const kv = new RedisKv({ url: stopped.url, timeoutMs: 500, onError: (kind) => errors.push(kind) });
    kv.connect();
    await waitFor(() => kv.up, 'the second Redis KV to be up');
    await stopped.cleanup();
    await waitFor(() => !kv.up, 'the Redis KV to see its store gone');
    await expect(kv.get('k')).rejects.toThrow();
    await expect(kv.setIfAbsent('k', 'v', LONG)).rejects.toThrow();
    expect(errors).toEqual(['unavailable', 'unavailable']);
    kv.close();
  });
});

describe('memory adapter: bounded', () => {
  it('full of live entries, it refuses new keys (full) rather than forget one; room again once they expire', async () => {
    const h = memoryHarness(3);
    for (const key of ['a', 'b', 'c']) expect(await h.kv.setIfAbsent(key, '1', 1000)).toBe(true);
    await expect(h.kv.setIfAbsent('d', '1', 1000)).rejects.toSatisfy((e) => e instanceof StoreUnavailableError && e.reason === 'full');
    await expect(h.kv.set('d', '1', 1000)).rejects.toSatisfy((e) => e instanceof StoreUnavailableError && e.reason === 'full');
    // Every held key still answers, and an overwrite takes no new room.
    expect(await h.kv.setIfAbsent('a', '2', 1000)).toBe(false);
    await h.kv.set('b', '2', 1000);
    expect(await h.kv.get('b')).toBe('2');
    h.clock.advance(1000);
    expect(await h.kv.setIfAbsent('d', '1', 1000)).toBe(true);
    expect(h.kv.size).toBeLessThanOrEqual(3);
  });
});

describe('sealed envelope over the memory adapter', () => {
  sealedContract(() => createMemoryKv({ maxEntries: 100 }));

  it('refuses a secret shorter than 32 bytes', () => {
    expect(() => sealKv(createMemoryKv({ maxEntries: 1 }), { secret: randomBytes(31), keyPrefix: '' })).toThrow(/at least 32 bytes/);
  });
});
