import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { createIntrospectionBudget } from '../../src/introspection/budget.ts';
import type { Introspect } from '../../src/introspection/client.ts';
import { INACTIVE, type TokenInfo } from '../../src/introspection/token-info.ts';
import { GuardError } from '../../src/edge/render.ts';
import { createCachedIntrospector, type TokenCacheOptions } from '../../src/introspection/cache.ts';
import { cacheLifetimeMs, tokenCacheKey } from '../../src/introspection/answer-cache.ts';

const T0 = 1_750_000_000_000; // ms

function active(overrides: Partial<TokenInfo> = {}): TokenInfo {
  return { ...INACTIVE, active: true, subject: 'alice', clientId: 'app', scope: 'read', tokenType: 'Bearer', ...overrides };
}

interface Deferred<T> {
  promise: Promise<T>;
  resolve(value: T): void;
  reject(reason: unknown): void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (reason: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** A fake AS: answers from `answer(token)`, records every call, and a settable clock. */
function setup(answer: (token: string) => TokenInfo | Promise<TokenInfo>, options: Partial<TokenCacheOptions> = {}) {
  const clock = { ms: T0 };
  const calls: string[] = [];
  const counters = { hits: 0, misses: 0 };
  const introspect: Introspect = async (token) => {
    calls.push(token);
    return answer(token);
  };
  const introspector = createCachedIntrospector(introspect, {
    maxEntries: 100,
    maxTtlSeconds: 300,
    negativeTtlSeconds: 5,
    now: () => clock.ms,
    onHit: () => counters.hits++,
    onMiss: () => counters.misses++,
    ...options,
  });
  return { introspector, clock, calls, counters };
}

describe('createCachedIntrospector', () => {
  it('answers a second lookup within the TTL from the cache', async () => {
    const info = active();
    const { introspector, clock, calls, counters } = setup(() => info);
    expect(await introspector.lookup('tok')).toBe(info);
    clock.ms += 1000;
    expect(await introspector.lookup('tok')).toBe(info);
    expect(calls).toEqual(['tok']);
    expect(counters).toEqual({ hits: 1, misses: 1 });
    expect(introspector.size).toBe(1);
  });

  it('caches each token separately', async () => {
    const { introspector, calls } = setup((token) => active({ subject: token }));
    expect((await introspector.lookup('a')).subject).toBe('a');
    expect((await introspector.lookup('b')).subject).toBe('b');
    expect((await introspector.lookup('a')).subject).toBe('a');
    expect(calls).toEqual(['a', 'b']);
  });

  it.each<[string, number | undefined, number, number]>([
    // [name, exp (seconds from T0), maxTtlSeconds, expected lifetime in ms]
    ['exp before maxTtl', 10, 300, 10_000],
    ['maxTtl before exp', 3600, 300, 300_000],
    ['no exp: maxTtl', undefined, 300, 300_000],
    ['exp equal to maxTtl', 60, 60, 60_000],
  ])('keeps an active token for min(exp - now, maxTtl): %s', async (_name, expIn, maxTtlSeconds, lifetime) => {
    const info = active({ exp: expIn === undefined ? undefined : T0 / 1000 + expIn });
    const { introspector, clock, calls } = setup(() => info, { maxTtlSeconds });
    await introspector.lookup('tok');
    clock.ms = T0 + lifetime - 1;
    await introspector.lookup('tok');
    expect(calls).toHaveLength(1);
    clock.ms = T0 + lifetime;
    await introspector.lookup('tok');
    expect(calls).toHaveLength(2);
  });

  it('never serves an answer past its exp, even when the entry was fetched later', async () => {
    const exp = T0 / 1000 + 100;
    const { introspector, clock, calls } = setup(() => active({ exp }));
    clock.ms = T0 + 90_000;
    await introspector.lookup('tok');
    clock.ms = T0 + 99_999;
    await introspector.lookup('tok');
    expect(calls).toHaveLength(1);
    clock.ms = T0 + 100_000;
    await introspector.lookup('tok');
    expect(calls).toHaveLength(2);
  });

  it('refetches an expired entry and caches the new answer', async () => {
    let version = 0;
    const { introspector, clock, calls } = setup(() => active({ scope: `v${++version}` }), { maxTtlSeconds: 10 });
    expect((await introspector.lookup('tok')).scope).toBe('v1');
    clock.ms += 10_000;
    expect((await introspector.lookup('tok')).scope).toBe('v2');
    clock.ms += 5_000;
    expect((await introspector.lookup('tok')).scope).toBe('v2');
    expect(calls).toHaveLength(2);
  });

  it('does not cache an answer whose exp has already passed', async () => {
    const { introspector, calls } = setup(() => active({ exp: T0 / 1000 - 1 }));
    await introspector.lookup('tok');
    await introspector.lookup('tok');
    expect(calls).toHaveLength(2);
    expect(introspector.size).toBe(0);
  });

  it('caches an inactive answer for negativeTtlSeconds only', async () => {
    const { introspector, clock, calls } = setup(() => INACTIVE, { negativeTtlSeconds: 5, maxTtlSeconds: 300 });
    expect(await introspector.lookup('tok')).toBe(INACTIVE);
    clock.ms = T0 + 4_999;
    await introspector.lookup('tok');
    expect(calls).toHaveLength(1);
    clock.ms = T0 + 5_000;
    await introspector.lookup('tok');
    expect(calls).toHaveLength(2);
  });

  it('does not cache inactive answers when negativeTtlSeconds is 0', async () => {
    const { introspector, calls } = setup(() => INACTIVE, { negativeTtlSeconds: 0 });
    await introspector.lookup('tok');
    await introspector.lookup('tok');
    expect(calls).toHaveLength(2);
  });

  it('does not cache active answers when maxTtlSeconds is 0', async () => {
    const { introspector, calls } = setup(() => active(), { maxTtlSeconds: 0 });
    await introspector.lookup('tok');
    await introspector.lookup('tok');
    expect(calls).toHaveLength(2);
  });

  it('does not cache errors', async () => {
    let fail = true;
    const { introspector, calls } = setup(() => {
      if (fail) throw new GuardError('introspection_unavailable', { detail: 'timeout' });
      return active();
    });
    await expect(introspector.lookup('tok')).rejects.toMatchObject({ reason: 'introspection_unavailable' });
    fail = false;
    await expect(introspector.lookup('tok')).resolves.toMatchObject({ active: true });
    expect(calls).toHaveLength(2);
  });

  it('does not cache an error thrown synchronously by the introspect function', async () => {
    let fail = true;
    const calls: string[] = [];
    const introspect: Introspect = (token) => {
      calls.push(token);
      if (fail) throw new GuardError('introspection_unavailable', { detail: 'sync' });
      return Promise.resolve(active());
    };
    const introspector = createCachedIntrospector(introspect, { maxEntries: 10, maxTtlSeconds: 300, negativeTtlSeconds: 5, now: () => T0 });
    await expect(introspector.lookup('tok')).rejects.toBeInstanceOf(GuardError);
    fail = false;
    await expect(introspector.lookup('tok')).resolves.toMatchObject({ active: true });
    expect(calls).toHaveLength(2);
  });

  it('makes one call for 20 concurrent lookups of one token', async () => {
    const answer = deferred<TokenInfo>();
    const { introspector, calls, counters } = setup(() => answer.promise);
    const lookups = Array.from({ length: 20 }, () => introspector.lookup('tok'));
    const info = active();
    answer.resolve(info);
    const results = await Promise.all(lookups);
    expect(calls).toEqual(['tok']);
    for (const result of results) expect(result).toBe(info);
    expect(counters.misses).toBe(20);
    // And the answer is cached afterwards.
    await introspector.lookup('tok');
    expect(calls).toHaveLength(1);
  });

  it('shares a rejection among concurrent lookups, and the next lookup retries', async () => {
    const first = deferred<TokenInfo>();
    let call = 0;
    const { introspector, calls } = setup(() => (++call === 1 ? first.promise : active()));
    const lookups = Array.from({ length: 20 }, () => introspector.lookup('tok'));
    const failure = new GuardError('introspection_unavailable', { detail: 'connection refused' });
    first.reject(failure);
    const settled = await Promise.allSettled(lookups);
    for (const result of settled) expect(result).toEqual({ status: 'rejected', reason: failure });
    expect(calls).toHaveLength(1);
    await expect(introspector.lookup('tok')).resolves.toMatchObject({ active: true });
    expect(calls).toHaveLength(2);
  });

  it('does not merge concurrent lookups of different tokens', async () => {
    const pending = new Map<string, Deferred<TokenInfo>>();
    const { introspector, calls } = setup((token) => {
      const d = deferred<TokenInfo>();
      pending.set(token, d);
      return d.promise;
    });
    const a = introspector.lookup('a');
    const b = introspector.lookup('b');
    await Promise.resolve();
    await Promise.resolve();
    pending.get('a')?.resolve(active({ subject: 'a' }));
    pending.get('b')?.resolve(active({ subject: 'b' }));
    expect((await a).subject).toBe('a');
    expect((await b).subject).toBe('b');
    expect(calls.sort()).toEqual(['a', 'b']);
  });

  it('bounds the cache to maxEntries, evicting the least recently used', async () => {
    const { introspector, calls } = setup((token) => active({ subject: token }), { maxEntries: 2 });
    await introspector.lookup('a');
    await introspector.lookup('b');
    await introspector.lookup('a'); // a is now more recent than b
    await introspector.lookup('c'); // evicts b
    expect(introspector.size).toBe(2);
    expect(calls).toEqual(['a', 'b', 'c']);
    await introspector.lookup('a');
    expect(calls).toEqual(['a', 'b', 'c']);
    await introspector.lookup('b');
    expect(calls).toEqual(['a', 'b', 'c', 'b']);
  });

  it('disables caching with maxEntries 0', async () => {
    const { introspector, calls, counters } = setup(() => active(), { maxEntries: 0 });
    await introspector.lookup('tok');
    await introspector.lookup('tok');
    await introspector.lookup('tok');
    expect(calls).toHaveLength(3);
    expect(introspector.size).toBe(0);
    expect(counters).toEqual({ hits: 0, misses: 3 });
  });

  it('clear() forgets every entry', async () => {
    const { introspector, calls } = setup(() => active());
    await introspector.lookup('tok');
    introspector.clear();
    expect(introspector.size).toBe(0);
    await introspector.lookup('tok');
    expect(calls).toHaveLength(2);
  });
});

describe('tokenCacheKey', () => {
  it.each(['tok', 'eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln', 'a'.repeat(4096)])('is a 43-character base64url SHA-256, never the token (%#)', (token) => {
    const key = tokenCacheKey(token);
    expect(key).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(key).toBe(createHash('sha256').update(token).digest('base64url'));
    expect(key).not.toContain(token);
  });

  it('differs between tokens', () => {
    expect(tokenCacheKey('a')).not.toBe(tokenCacheKey('b'));
  });
});

describe('cacheLifetimeMs', () => {
  const options = { maxTtlSeconds: 300, negativeTtlSeconds: 5 };
  const now = T0;
  it.each<[string, TokenInfo, typeof options, number]>([
    ['inactive: negative TTL', INACTIVE, options, 5_000],
    ['inactive, negative TTL 0', INACTIVE, { ...options, negativeTtlSeconds: 0 }, 0],
    ['active, no exp: max TTL', active(), options, 300_000],
    ['active, exp in 10 s', active({ exp: now / 1000 + 10 }), options, 10_000],
    ['active, exp in 10.5 s', active({ exp: now / 1000 + 10.5 }), options, 10_500],
    ['active, exp beyond max TTL', active({ exp: now / 1000 + 10_000 }), options, 300_000],
    ['active, exp now', active({ exp: now / 1000 }), options, 0],
    ['active, exp in the past', active({ exp: now / 1000 - 60 }), options, 0],
    ['active, max TTL 0', active(), { ...options, maxTtlSeconds: 0 }, 0],
    ['active, fractional max TTL', active(), { ...options, maxTtlSeconds: 0.5 }, 500],
  ])('%s', (_name, info, opts, expected) => {
    expect(cacheLifetimeMs(info, now, opts)).toBe(expected);
  });
});

describe('inactive answers in their own LRU', () => {
  it('a flood of 10x maxEntries junk tokens evicts no active entry: every one still hits', async () => {
    const maxEntries = 100;
    const { introspector, calls, counters } = setup((token) => (token.startsWith('good-') ? active({ subject: token }) : INACTIVE), { maxEntries, negativeMaxEntries: 50 });
    const good = Array.from({ length: maxEntries }, (_, i) => `good-${i}`);
    for (const token of good) await introspector.lookup(token);
    for (let i = 0; i < 10 * maxEntries; i++) await expect(introspector.lookup(`junk-${i}`)).resolves.toBe(INACTIVE);
    expect(introspector.size).toBe(maxEntries);
    expect(introspector.negativeSize).toBe(50);
    const before = { calls: calls.length, hits: counters.hits };
    for (const token of good) expect((await introspector.lookup(token)).subject).toBe(token);
    expect(calls.length).toBe(before.calls);
    expect(counters.hits - before.hits).toBe(maxEntries);
  });

  it('a repeated junk token is answered from the negative cache until negativeTtlSeconds, then asked again', async () => {
    const { introspector, clock, calls } = setup(() => INACTIVE, { negativeTtlSeconds: 5 });
    await introspector.lookup('junk');
    clock.ms = T0 + 4_999;
    expect(await introspector.lookup('junk')).toBe(INACTIVE);
    expect(calls).toHaveLength(1);
    expect(introspector.negativeSize).toBe(1);
    clock.ms = T0 + 5_000;
    await introspector.lookup('junk');
    expect(calls).toHaveLength(2);
  });

  it('keeps no inactive answer with negativeMaxEntries 0', async () => {
    const { introspector, calls } = setup(() => INACTIVE, { negativeMaxEntries: 0 });
    await introspector.lookup('junk');
    await introspector.lookup('junk');
    expect(calls).toHaveLength(2);
    expect(introspector.negativeSize).toBe(0);
  });

  it('a token found revoked loses its active entry, so stale-if-error cannot bring it back', async () => {
    let answer: TokenInfo | Error = active();
    const { introspector, clock } = setup(
      () => {
        if (answer instanceof Error) throw answer;
        return answer;
      },
      { maxTtlSeconds: 10, negativeTtlSeconds: 1, staleIfErrorSeconds: 600 },
    );
    await introspector.lookup('tok');
    clock.ms += 10_000;
    answer = INACTIVE;
    expect(await introspector.lookup('tok')).toBe(INACTIVE);
    expect(introspector.size).toBe(0);
    clock.ms += 1_000;
    answer = new GuardError('introspection_unavailable', { detail: 'down' });
    await expect(introspector.lookup('tok')).rejects.toMatchObject({ reason: 'introspection_unavailable' });
  });

  it('clear() forgets inactive answers too', async () => {
    const { introspector, calls } = setup(() => INACTIVE);
    await introspector.lookup('junk');
    introspector.clear();
    await introspector.lookup('junk');
    expect(calls).toHaveLength(2);
  });
});

describe('introspection budget in the cache', () => {
  const budgetOptions = { perPeerPerSecond: 1, perPeerBurst: 3, totalPerSecond: 1, totalBurst: 10 };

  it('only misses that call the AS pay; hits, negative hits and joined in-flight calls are free', async () => {
    const clock = { ms: T0 };
    const pending = deferred<TokenInfo>();
    let refusals = 0;
    const { introspector, calls } = setup((token) => (token === 'slow' ? pending.promise : token.startsWith('junk') ? INACTIVE : active()), {
      now: () => clock.ms,
      budget: createIntrospectionBudget({ ...budgetOptions, now: () => clock.ms, onRefused: () => refusals++ }),
    });
    const peer = { peer: '192.0.2.1' };
    await introspector.lookup('good', peer); // 1
    await introspector.lookup('junk', peer); // 2
    const joined = Array.from({ length: 10 }, () => introspector.lookup('slow', peer)); // 3, once
    for (let i = 0; i < 100; i++) {
      await introspector.lookup('good', peer);
      await introspector.lookup('junk', peer);
    }
    pending.resolve(active());
    await Promise.all(joined);
    expect(calls).toEqual(['good', 'junk', 'slow']);
    expect(refusals).toBe(0);
    await expect(introspector.lookup('junk-new', peer)).rejects.toMatchObject({ reason: 'introspection_rate_limited', status: 429, retryAfterSeconds: 1 });
    expect(calls).toHaveLength(3);
    expect(refusals).toBe(1);
    // Another peer still has its budget; the old one-argument call pays only the total.
    await expect(introspector.lookup('junk-other', { peer: '192.0.2.2' })).resolves.toBe(INACTIVE);
    await expect(introspector.lookup('junk-nopeer')).resolves.toBe(INACTIVE);
    expect(calls).toHaveLength(5);
  });

  it('past the total budget every peer gets 503 with Retry-After, without an AS call, and a refusal is not cached', async () => {
    const clock = { ms: T0 };
    const { introspector, calls } = setup(() => INACTIVE, {
      now: () => clock.ms,
      budget: createIntrospectionBudget({ perPeerPerSecond: 100, perPeerBurst: 100, totalPerSecond: 0.5, totalBurst: 2, now: () => clock.ms }),
    });
    await introspector.lookup('a', { peer: '192.0.2.1' });
    await introspector.lookup('b', { peer: '192.0.2.2' });
    await expect(introspector.lookup('c', { peer: '192.0.2.3' })).rejects.toMatchObject({ reason: 'introspection_budget_exhausted', status: 503, retryAfterSeconds: 2 });
    expect(calls).toEqual(['a', 'b']);
    clock.ms += 2_000;
    await expect(introspector.lookup('c', { peer: '192.0.2.3' })).resolves.toBe(INACTIVE);
    expect(calls).toEqual(['a', 'b', 'c']);
  });
});
