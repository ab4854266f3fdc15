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
import { StoreUnavailableError, type KeyValueStore } from './kv.ts';
import { createMemoryKv } from './memory-kv.ts';

export interface ReplayStore {
  /**
   * Records `key` until `expiresAtSeconds` (epoch seconds). Resolves true when the key was new
   * (the proof may be accepted), false when it was seen and has not expired (a replay).
   * Rejects with {@link ReplayStoreUnavailableError} when it cannot tell: full, or (a shared
   * store) unreachable. The caller must then refuse the proof: an unknown answer is not "new".
   * Must be atomic: two concurrent calls with one key never both resolve true (a KV's setIfAbsent).
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

/**
 * A replay store on any {@link KeyValueStore}: one atomic `setIfAbsent` per proof of an empty
 * marker named `jti:<key>` (the sealed KV's kind; `namespace` '' for a KV that holds nothing
 * else), living until the proof expires. A store that cannot tell (full, unreachable) rejects
 * with {@link ReplayStoreUnavailableError}.
 */
export function replayStoreOn(kv: KeyValueStore, options: { now?: () => number; namespace?: string } = {}): ReplayStore {
  const now = options.now ?? Date.now;
  const namespace = options.namespace ?? 'jti:';
  return {
    remember(key, expiresAtSeconds) {
      return kv.setIfAbsent(namespace === '' ? key : namespace + key, '', expiresAtSeconds * 1000 - now()).catch((err: unknown) => {
        throw err instanceof StoreUnavailableError ? new ReplayStoreUnavailableError(err.reason) : err;
      });
    },
  };
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
 * A per-process store, bounded: {@link replayStoreOn} a memory KV (state/memory-kv.ts), which
 * refuses rather than forgets an unexpired key when full. Only proofs that passed every other
 * check are recorded (signature, `htm`, `htu`, `iat`, `ath`), so filling the store takes that many
 * fresh signed proofs inside one proof lifetime (`proofMaxAgeSeconds + clockSkewSeconds`); size
 * `maxEntries` above the peak proof rate times that lifetime.
 */
export function createMemoryReplayStore(options: MemoryReplayStoreOptions): MemoryReplayStore {
  const seconds = options.now ?? (() => Date.now() / 1000);
  const now = () => seconds() * 1000;
  const kv = createMemoryKv({ maxEntries: options.maxEntries, now });
  const store = replayStoreOn(kv, { now, namespace: '' });
  return {
    get size() {
      return kv.size;
    },
    remember: store.remember,
  };
}

/** Where {@link createSharedReplayStore} says that it falls back to this replica's store and stops. */
export interface FallbackLog {
  warn(detail: Record<string, unknown>, message: string): void;
  info(detail: Record<string, unknown>, message: string): void;
}

/** While the fallback goes on, a warning at most this often (with the count since the last one). */
export const FALLBACK_LOG_EVERY_MS = 60_000;

export interface SharedReplayStoreOptions {
  onUnavailable: 'fail-closed' | 'local';
  fallback: ReplayStore;
  /** Milliseconds since the epoch. */
  now?: () => number;
  /** One per proof checked against `fallback` instead of the shared store (the metric). */
  onFallback?: () => void;
  /** `local`: a warning when falling back starts (then at most once a {@link FALLBACK_LOG_EVERY_MS}), an info when the store answers again. */
  log?: FallbackLog;
}

/**
 * The replay store on the replicas' shared KV. Store down: `fail-closed` rejects with
 * {@link ReplayStoreUnavailableError} (`unreachable`), which each proof method answers with its own
 * reason (503 `dpop_replay_unavailable`, `httpsig_replay_unavailable`, with Retry-After); `local` uses this replica's own store (`fallback`),
 * counted (`onFallback`, per proof) and logged (`log`): a warning when it starts, one at most every
 * {@link FALLBACK_LOG_EVERY_MS} while it goes on (with the count since), an info once a proof is
 * recorded in the shared store again.
 */
export function createSharedReplayStore(kv: KeyValueStore, options: SharedReplayStoreOptions): ReplayStore {
  const now = options.now ?? Date.now;
  const shared = replayStoreOn(kv, { now });
  // The fallback in progress: since when, how many proofs, and what was logged of them.
  let outage: { since: number; count: number; loggedAt: number; unlogged: number } | undefined;

  function fellBack(err: unknown): void {
    options.onFallback?.();
    const t = now();
    const cause = err instanceof Error ? err.message.slice(0, 200) : 'the store failed';
    if (outage === undefined) {
      outage = { since: t, count: 1, loggedAt: t, unlogged: 0 };
      options.log?.warn(
        { onUnavailable: 'local', cause },
        "shared state store unavailable: DPoP replay checks use this replica's own store (sharedState.onUnavailable: local) until it answers; a proof accepted meanwhile may be accepted once by each other replica",
      );
      return;
    }
    outage.count++;
    outage.unlogged++;
    if (t - outage.loggedAt < FALLBACK_LOG_EVERY_MS) return;
    options.log?.warn(
      { onUnavailable: 'local', cause, fallbacks: outage.unlogged, fallbacksSinceStart: outage.count, seconds: Math.round((t - outage.since) / 1000) },
      `shared state store still unavailable: ${outage.unlogged} more replay check(s) used this replica's own store`,
    );
    outage.loggedAt = t;
    outage.unlogged = 0;
  }

  return {
    async remember(key, expiresAtSeconds) {
      let fresh: boolean;
      try {
        fresh = await shared.remember(key, expiresAtSeconds);
      } catch (err) {
        if (options.onUnavailable === 'fail-closed') throw new ReplayStoreUnavailableError('unreachable', `shared state store unavailable (onUnavailable: fail-closed): ${err instanceof Error ? err.message.slice(0, 120) : 'no answer'}`);
        fellBack(err);
        return options.fallback.remember(key, expiresAtSeconds);
      }
      if (outage !== undefined) {
        const { since, count } = outage;
        outage = undefined;
        options.log?.info({ fallbacks: count, seconds: Math.round((now() - since) / 1000) }, `shared state store answers again: DPoP replay checks use it again (${count} used this replica's own store meanwhile)`);
      }
      return fresh;
    },
  };
}
