/**
 * src/lru.ts: the caches are bounded by entry count with least-recently-used eviction, as
 * lru-cache's `max` bounds them, but allocate as they fill instead of all at construction.
 */
import { expect, it } from 'vitest';
import { lazyLru } from '../../src/lru.ts';

it('keeps at most maxEntries, evicting the least recently used', () => {
  const cache = lazyLru<string, number>(3);
  for (const [i, key] of ['a', 'b', 'c'].entries()) cache.set(key, i);
  expect(cache.get('a')).toBe(0); // a is now the most recent: b goes first
  cache.set('d', 3);
  expect(cache.size).toBe(3);
  expect(cache.has('b')).toBe(false);
  cache.set('e', 4);
  expect([...cache.keys()].sort()).toEqual(['a', 'd', 'e']);
});

it('allocates nothing up front for its bound', () => {
  const before = process.memoryUsage.rss();
  // lru-cache's `max: 1_000_000` would allocate and fill ~23 MB here.
  const caches = [lazyLru<string, number>(1_000_000), lazyLru<string, number>(1_000_000)];
  const grownMb = (process.memoryUsage.rss() - before) / 1048576;
  expect(caches.every((cache) => cache.size === 0)).toBe(true);
  expect(grownMb).toBeLessThan(4);
});
