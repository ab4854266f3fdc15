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
import { GuardError } from '../oauth/reasons.ts';
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

/**
 * The replay store on the replicas' shared KV. Store down: `fail-closed` throws
 * `shared_state_unavailable` (503, Retry-After); `local` uses this replica's own store (`fallback`),
 * counted and logged (the caller rate-limits `warn`).
 */
export function createSharedReplayStore(
  kv: KeyValueStore,
  options: { onUnavailable: 'fail-closed' | 'local'; fallback: ReplayStore; now?: () => number; onFallback?: () => void },
): ReplayStore {
  const shared = replayStoreOn(kv, options.now === undefined ? {} : { now: options.now });
  return {
    async remember(key, expiresAtSeconds) {
      try {
        return await shared.remember(key, expiresAtSeconds);
      } catch {
        if (options.onUnavailable === 'fail-closed') throw new GuardError('shared_state_unavailable', { retryAfterSeconds: 1, detail: 'replay store unreachable' });
        options.onFallback?.();
        return options.fallback.remember(key, expiresAtSeconds);
      }
    },
  };
}
