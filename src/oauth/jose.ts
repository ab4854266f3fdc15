/**
 * jose, loaded on first use: only configs with `jwt:` or a `dpop` route need it, and loading its
 * ~45 modules is a tenth of `cnfguard run`'s start-up otherwise. jose is ESM; Node 24 loads it
 * synchronously through require (it has no top-level await), so callers stay synchronous.
 */
import { createRequire } from 'node:module';
import type * as Jose from 'jose';
import type { createLocalJWKSet, JSONWebKeySet } from 'jose';

const requireLazily = createRequire(import.meta.url);
let loaded: typeof Jose | undefined;

export function jose(): typeof Jose {
  loaded ??= requireLazily('jose') as typeof Jose;
  return loaded;
}

/** A key lookup over a JWKS cache's current keys, rebuilt only when the cache holds a new key set. */
export function localKeySet(source: { readonly keys: JSONWebKeySet | undefined }): () => ReturnType<typeof createLocalJWKSet> | undefined {
  let keySet: { keys: JSONWebKeySet; get: ReturnType<typeof createLocalJWKSet> } | undefined;
  return () => {
    const keys = source.keys;
    if (keys === undefined) return undefined;
    if (keySet?.keys !== keys) keySet = { keys, get: jose().createLocalJWKSet(keys) };
    return keySet.get;
  };
}

/** A JWKS held and refreshed by someone else (validation/jwt.ts createJwksCache): what a verifier needs of it. */
export interface JwksCache {
  /** The current key set; undefined until a fetch succeeded. */
  readonly keys: JSONWebKeySet | undefined;
  /**
   * Fetches now unless one ran within the cooldown; keeps the old keys when it fails. Resolves
   * whether the fetch succeeded. A fetch that brings the same keys leaves {@link keys} the same
   * object, so a verifier can tell a changed key set by identity.
   */
  refresh(force?: boolean): Promise<boolean>;
  /**
   * When the keys are older than the refresh age (`jwt.refreshSeconds`), starts a fetch in the
   * background (within the cooldown) and returns it; the caller goes on with the keys it has.
   * Undefined when no fetch was started.
   */
  refreshIfStale(): Promise<boolean> | undefined;
  /** Calls `listener` after every fetch that no longer holds a key held before (withdrawn, or re-keyed under its kid). */
  onKeysDropped(listener: () => void): void;
  /** Whether the last fetch attempt failed. */
  readonly failing: boolean;
}
