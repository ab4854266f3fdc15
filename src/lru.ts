/**
 * LRU caches bounded to a number of entries that allocate as they fill (issue 32). lru-cache's
 * `max` preallocates its key, value and link arrays for `max` entries at construction: ~2.3 MB for
 * the 100k-token cache and ~4.5 MB for the caches a default `run` makes, resident while the server
 * idles with them empty. Bounded by lru-cache's own `maxSize` with every entry of size 1 instead,
 * the same least-recently-used eviction at the same count, its arrays grow with the entries (a full
 * cache then holds ~16 bytes an entry more: plain arrays instead of typed ones, and the sizes).
 */
import { LRUCache } from 'lru-cache';

const one = (): number => 1;

/** At most `maxEntries` entries, least recently used evicted first; memory as it fills. */
export function lazyLru<K extends NonNullable<unknown>, V extends NonNullable<unknown>>(maxEntries: number): LRUCache<K, V> {
  return new LRUCache<K, V>({ maxSize: maxEntries, sizeCalculation: one });
}
