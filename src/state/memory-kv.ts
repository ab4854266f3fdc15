/**
 * A key-value store in this process's memory, bounded. Entries live in insertion order (a Map);
 * every write first drops a few expired entries from the old end, so expired keys go at the rate
 * new ones come.
 *
 * When full of entries that have not expired, a write is refused ({@link StoreUnavailableError}
 * `full`) instead of evicting one: forgetting an unexpired DPoP `jti` would reopen a replay window
 * for exactly that proof, silently, while refusing is visible (503, logged, counted) and ends once
 * entries expire. (This is why lru-cache, which evicts its least recently used entry, is not used.)
 *
 * An entry is its expiry in one Map, and its value in another only when not empty: a replay
 * marker (the empty value) costs one Map entry, as in the replay store before this KV (~120 bytes
 * a key, measured by bench/dpop.ts).
 */
import { StoreUnavailableError, type KeyValueStore } from './kv.ts';

export interface MemoryKvOptions {
  /** Most unexpired entries held; at the limit writes of new keys are refused. */
  maxEntries: number;
  /** Milliseconds since the epoch; injected for tests. */
  now?: () => number;
}

export interface MemoryKv extends KeyValueStore {
  readonly size: number;
}

export function createMemoryKv(options: MemoryKvOptions): MemoryKv {
  const now = options.now ?? Date.now;
  /** key -> expiry (ms since the epoch), in insertion order. */
  const entries = new Map<string, number>();
  /** key -> value, for values other than the empty one. */
  const values = new Map<string, string>();
  const drop = (key: string): void => {
    entries.delete(key);
    if (values.size > 0) values.delete(key);
  };
  // After a full sweep freed nothing: no entry expires before this, so no sweep until then
  // (a flood against a full store costs O(1) per write, not a scan each).
  let fullUntil = -Infinity;

  /** Drops expired entries among the oldest `limit`; returns the earliest expiry left among them. */
  function sweep(limit: number, at: number): number {
    let looked = 0;
    let earliest = Infinity;
    for (const [key, expiresAt] of entries) {
      if (looked++ >= limit) break;
      if (expiresAt <= at) drop(key);
      else earliest = Math.min(earliest, expiresAt);
    }
    return earliest;
  }

  /** Whether `key` holds a live value, dropping an expired one. */
  function live(key: string, at: number): boolean {
    const expiresAt = entries.get(key);
    if (expiresAt === undefined) return false;
    if (expiresAt > at) return true;
    drop(key);
    return false;
  }

  /** Makes room for one new key, or throws `full`. */
  function admit(at: number): void {
    if (entries.size < options.maxEntries) return;
    if (at >= fullUntil) fullUntil = sweep(entries.size, at);
    if (entries.size >= options.maxEntries) throw new StoreUnavailableError('full');
  }

  function write(key: string, value: string, ttlMs: number, at: number): void {
    const expiresAt = at + ttlMs;
    entries.set(key, expiresAt);
    if (value !== '') values.set(key, value);
    fullUntil = Math.min(fullUntil, expiresAt);
  }

  return {
    up: true,
    get size() {
      return entries.size;
    },
    get(key) {
      return Promise.resolve(live(key, now()) ? (values.get(key) ?? '') : undefined);
    },
    set(key, value, ttlMs) {
      const at = now();
      sweep(4, at);
      // An overwrite takes no new room; it moves to the young end, as its expiry is the latest.
      if (!live(key, at)) {
        try {
          admit(at);
        } catch (err) {
          return Promise.reject(err as Error);
        }
      } else drop(key);
      write(key, value, ttlMs, at);
      return Promise.resolve();
    },
    setIfAbsent(key, value, ttlMs) {
      const at = now();
      sweep(4, at);
      if (live(key, at)) return Promise.resolve(false);
      try {
        admit(at);
      } catch (err) {
        return Promise.reject(err as Error);
      }
      write(key, value, ttlMs, at);
      return Promise.resolve(true);
    },
  };
}
