/**
 * DPoP replay protection (RFC 9449 §11.1): a proof is accepted once. The verifier asks the store
 * to remember a key derived from the proof; the store answers whether it was new.
 *
 * The key is `replayKey(jkt, jti)`: SHA-256 over the proof key's thumbprint and the `jti`, in
 * base64url. Why this key:
 * - hashed, so a client-chosen `jti` of any length costs a fixed 43 bytes, and the store (also
 *   a shared Redis one) never holds client text;
 * - scoped to the proof key, so nobody can burn another client's `jti` by sending a proof of
 *   their own with the same value (their proof has another `jkt`);
 * - not scoped to `htu`: a replay is the same signed proof, so the same `htu`; leaving `htu` out
 *   is stricter than RFC 9449's "per target URI" (a jti is single-use across all routes and
 *   replicas) and costs a conforming client nothing, since its jtis are random anyway.
 */
import { hash } from 'node:crypto';

export interface ReplayStore {
  /**
   * Records `key` until `expiresAtSeconds` (epoch seconds). Resolves true when the key was new
   * (the proof may be accepted), false when it was seen and has not expired (a replay).
   * Rejects with {@link ReplayStoreUnavailableError} when it cannot tell: full, or (a shared
   * store) unreachable. The caller must then refuse the proof: an unknown answer is not "new".
   * Must be atomic: two concurrent calls with one key never both resolve true (Redis: SET NX EX).
   */
  remember(key: string, expiresAtSeconds: number): Promise<boolean>;
}

/** The store cannot answer; the request fails closed (503), never as "unseen". */
export class ReplayStoreUnavailableError extends Error {
  readonly reason: 'full' | 'unreachable';
  constructor(reason: 'full' | 'unreachable', message = `replay store ${reason}`) {
    super(message);
    this.name = 'ReplayStoreUnavailableError';
    this.reason = reason;
  }
}

/** The store key of a proof: base64url(SHA-256(len(jkt) ":" jkt jti)); the length prefix keeps the pair unambiguous. */
export function replayKey(jkt: string, jti: string): string {
  // One-shot hash: no Hash object per proof (the same bytes as update() calls, UTF-8).
  return hash('sha256', `${jkt.length}:${jkt}${jti}`, 'base64url');
}

export interface MemoryReplayStoreOptions {
  /** Most unexpired keys held; at the limit new proofs are refused rather than old ones forgotten. */
  maxEntries: number;
  /** Epoch seconds; injected for tests. */
  now?: () => number;
}

export interface MemoryReplayStore extends ReplayStore {
  readonly size: number;
}

/**
 * A per-process store, bounded. Entries live in insertion order (a Map); every call first drops
 * a few expired entries from the old end, so expired keys go at the rate new ones come.
 *
 * When full of entries that have not expired, it refuses (rejects with `full`) instead of
 * evicting: forgetting an unexpired `jti` would reopen a replay window for exactly that proof,
 * silently, while refusing is visible (503, logged, counted) and ends once entries expire,
 * within `proofMaxAgeSeconds + clockSkewSeconds`. Only proofs that passed every other check are
 * recorded (signature, `htm`, `htu`, `iat`, `ath`), so filling the store takes that many fresh
 * signed proofs inside one proof lifetime; size `maxEntries` above the peak proof rate times that
 * lifetime. (This is why lru-cache, which evicts its least recently used entry when full, is not
 * used here.)
 */
export function createMemoryReplayStore(options: MemoryReplayStoreOptions): MemoryReplayStore {
  const now = options.now ?? (() => Date.now() / 1000);
  const entries = new Map<string, number>();
  // After a full sweep freed nothing: no entry expires before this, so no sweep until then
  // (a flood against a full store costs O(1) per proof, not a scan each).
  let fullUntil = -Infinity;

  /** Drops expired entries among the oldest `limit`; returns the earliest expiry left among them. */
  function sweep(limit: number, at: number): number {
    let looked = 0;
    let earliest = Infinity;
    for (const [key, expiresAt] of entries) {
      if (looked++ >= limit) break;
      if (expiresAt <= at) entries.delete(key);
      else earliest = Math.min(earliest, expiresAt);
    }
    return earliest;
  }

  return {
    get size() {
      return entries.size;
    },
    remember(key, expiresAtSeconds) {
      const at = now();
      sweep(4, at);
      const seen = entries.get(key);
      if (seen !== undefined && seen > at) return Promise.resolve(false);
      if (seen !== undefined) entries.delete(key);
      if (entries.size >= options.maxEntries) {
        if (at >= fullUntil) fullUntil = sweep(entries.size, at);
        if (entries.size >= options.maxEntries) return Promise.reject(new ReplayStoreUnavailableError('full'));
      }
      entries.set(key, expiresAtSeconds);
      fullUntil = Math.min(fullUntil, expiresAtSeconds);
      return Promise.resolve(true);
    },
  };
}
