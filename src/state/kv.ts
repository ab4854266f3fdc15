/**
 * The one interface shared and local state sits on: a key-value store with per-entry lifetimes.
 * Values are strings; what they mean (a sealed answer, a replay marker) is the caller's. Adapters:
 * Redis or Valkey (redis-kv.ts), one process's memory (memory-kv.ts), a cluster worker asking
 * the primary's memory (cluster-state.ts). The sealed envelope (sealed-kv.ts) wraps any of them
 * and is one itself.
 *
 * Who holds which cache (each built in app.ts and handed to its user, never a module global):
 * - validated answers, introspection (active LRU + negative LRU): introspection/answer-cache.ts, used by
 *   introspection/cache.ts (which adds single-flight, budget, stale-if-error);
 * - validated answers, JWT: a second introspection/answer-cache.ts, used by validation/validator.ts;
 * - JWKS: validation/jwt.ts createJwksCache;
 * - DPoP replay: state/replay-store.ts on a memory KV, the shared KV, or the cluster primary's;
 * - shared tier (introspection answers across replicas): introspection/shared-tier.ts on the sealed KV.
 * Not yet built in composition: the intern tables of introspection/token-info.ts (bounded, shared
 * claim values, no token) and proof/dpop.ts's verified-header and `htu` caches (the proof
 * registry's to inject).
 */

export interface KeyValueStore {
  /** The value, or undefined when absent or expired. Rejects when the store cannot answer. */
  get(key: string): Promise<string | undefined>;
  /** Writes `value` for `ttlMs` milliseconds. Rejects when the store cannot take it. */
  set(key: string, value: string, ttlMs: number): Promise<void>;
  /**
   * Writes `value` for `ttlMs` only when `key` holds no live value; true when it wrote. Atomic:
   * two concurrent calls for one key never both resolve true (Redis: `SET key value NX PX ttl`).
   * Rejects ({@link StoreUnavailableError} `full` or `unreachable`) when it cannot tell.
   */
  setIfAbsent(key: string, value: string, ttlMs: number): Promise<boolean>;
  /** Whether calls are expected to work now (false: callers skip optional reads and writes). */
  readonly up: boolean;
  /** What a store behind a connection is doing (for /status and metrics); absent on memory stores. */
  role?(): StoreRole;
  /** Starts connecting, for a store behind a connection; never waits and never fails. */
  connect?(): void;
  close?(): void;
}

/**
 * A shared store's state: `primary` (a primary is reachable: reads and writes work), `failover`
 * (Sentinel or Cluster: the primary was lost moments ago and a new one is being found and
 * followed), `down` (no primary, and none expected soon).
 */
export type StoreRole = 'primary' | 'failover' | 'down';

/** The store cannot answer: refused (`full`) or not reached (`unreachable`). Never "absent". */
export class StoreUnavailableError extends Error {
  readonly reason: 'full' | 'unreachable';
  constructor(reason: 'full' | 'unreachable', message = `store ${reason}`) {
    super(message);
    this.name = 'StoreUnavailableError';
    this.reason = reason;
  }
}
