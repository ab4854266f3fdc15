/**
 * The introspection cache: what the authorization server says about a token, through a bounded cache with
 * single-flight. The cache holds claims, never decisions: binding, expiry and policy are checked
 * again on every request. Keys are SHA-256 of the token, so no raw token is kept in memory longer
 * than its request, and concurrent first requests for one token make one introspection call.
 *
 * Active and inactive answers live in separate LRUs: anybody can make up inactive tokens, so
 * they must not be able to push real ones out. Cache misses that would call the AS take from the
 * introspection budget (per peer and in total); hits and joined in-flight calls never do.
 */
import { hash } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { IntrospectionBudget } from './budget.ts';
import type { Introspect } from './client.ts';
import { GuardError } from '../oauth/errors.ts';
import { INACTIVE, type TokenInfo } from './token-info.ts';

export interface TokenCacheOptions {
  maxEntries: number;
  maxTtlSeconds: number;
  negativeTtlSeconds: number;
  /** Inactive answers kept (their own LRU, so they never evict active ones). Default 10 000; 0 keeps none. */
  negativeMaxEntries?: number;
  /** Bounds the AS calls that cache misses cause; none when absent. */
  budget?: IntrospectionBudget;
  /** How long past its lifetime a cached active answer may serve while the AS fails; 0 is never. */
  staleIfErrorSeconds?: number;
  /** Milliseconds since the epoch; injected so TTL rules are tested without waiting. */
  now?: () => number;
  onHit?: () => void;
  onMiss?: () => void;
  onStale?: () => void;
}

interface Entry {
  info: TokenInfo;
  expiresAtMs: number;
}

export function tokenCacheKey(token: string): string {
  return hash('sha256', token, 'base64url');
}

/**
 * How long an answer may be reused: an active token until min(exp, now + maxTtl); an inactive
 * one for negativeTtl. Zero means "do not cache".
 */
export function cacheLifetimeMs(info: TokenInfo, nowMs: number, options: Pick<TokenCacheOptions, 'maxTtlSeconds' | 'negativeTtlSeconds'>): number {
  if (!info.active) return Math.max(0, options.negativeTtlSeconds * 1000);
  const cap = options.maxTtlSeconds * 1000;
  const untilExp = info.exp === undefined ? cap : info.exp * 1000 - nowMs;
  return Math.max(0, Math.min(cap, untilExp));
}

export interface LookupContext {
  /** The peer's address (the socket's remote address); its budget pays for a cache miss. */
  readonly peer?: string | undefined;
  /**
   * The thumbprint of a client certificate that chains to tls.clientCa: when present, its own
   * budget pays instead of the peer's, so clients behind one address (a NAT, a node, a mesh hop)
   * are not starved by junk from certificate-less callers at the same address.
   */
  readonly certificate?: string | undefined;
}

export interface TokenIntrospector {
  /**
   * The token's claims, from the cache or the AS. Rejects with a GuardError:
   * `introspection_unavailable` or `introspection_misconfigured` (503), or, without calling the
   * AS, `introspection_rate_limited` (429, the peer's budget) or `introspection_budget_exhausted`
   * (503, the total budget).
   */
  lookup(token: string, context?: LookupContext): Promise<TokenInfo>;
  /** Active answers cached. */
  readonly size: number;
  /** Inactive answers cached. */
  readonly negativeSize: number;
  clear(): void;
}

export function createCachedIntrospector(introspect: Introspect, options: TokenCacheOptions): TokenIntrospector {
  const now = options.now ?? Date.now;
  const cache = options.maxEntries > 0 ? new LRUCache<string, Entry>({ max: options.maxEntries }) : undefined;
  // key -> until when (ms) the token is known inactive. The expiry is checked here, by the same
  // rule as active entries (lru-cache's own ttl debounces its clock with timers); expired entries
  // are deleted when met and otherwise pushed out by newer ones.
  const negativeMax = options.negativeMaxEntries ?? 10_000;
  const negative = negativeMax > 0 && options.negativeTtlSeconds > 0 ? new LRUCache<string, number>({ max: negativeMax }) : undefined;
  const budget = options.budget;
  const inFlight = new Map<string, Promise<TokenInfo>>();

  const staleWindowMs = (options.staleIfErrorSeconds ?? 0) * 1000;

  async function fetchAndStore(key: string, token: string, previous: Entry | undefined): Promise<TokenInfo> {
    try {
      // Through a promise, so even a synchronous throw settles after the in-flight entry exists.
      const info = await Promise.resolve().then(() => introspect(token));
      const t = now();
      const lifetime = cacheLifetimeMs(info, t, options);
      if (info.active) {
        if (cache !== undefined && lifetime > 0) cache.set(key, { info, expiresAtMs: t + lifetime });
        negative?.delete(key);
      } else {
        // A revoked token: its old active answer must not come back as a stale-if-error fallback.
        cache?.delete(key);
        if (negative !== undefined && lifetime > 0) negative.set(key, t + lifetime);
      }
      return info;
    } catch (err) {
      // stale-if-error: an expired *active* answer may stand in while the AS is failing, within
      // the window; the decision still re-checks exp, so a token never outlives its own expiry.
      if (staleWindowMs > 0 && previous?.info.active === true && err instanceof GuardError && err.reason === 'introspection_unavailable' && now() - previous.expiresAtMs <= staleWindowMs) {
        options.onStale?.();
        return previous.info;
      }
      throw err;
    } finally {
      inFlight.delete(key);
    }
  }

  return {
    lookup(token, context) {
      const key = tokenCacheKey(token);
      const entry = cache?.get(key);
      if (entry !== undefined && entry.expiresAtMs > now()) {
        options.onHit?.();
        return Promise.resolve(entry.info);
      }
      // An expired active entry stays (until replaced or evicted) as the stale-if-error fallback.
      if (negative !== undefined) {
        const inactiveUntil = negative.get(key);
        if (inactiveUntil !== undefined) {
          if (inactiveUntil > now()) {
            options.onHit?.();
            return Promise.resolve(INACTIVE);
          }
          negative.delete(key);
        }
      }
      options.onMiss?.();
      let pending = inFlight.get(key);
      if (pending === undefined) {
        // Only a call that would reach the AS pays; joining one in flight is free.
        const refusal = budget?.admit(context?.certificate === undefined ? context?.peer : `cert:${context.certificate}`);
        if (refusal !== undefined) return Promise.reject(refusal);
        pending = fetchAndStore(key, token, entry);
        inFlight.set(key, pending);
      }
      return pending;
    },
    get size() {
      return cache?.size ?? 0;
    },
    get negativeSize() {
      return negative?.size ?? 0;
    },
    clear() {
      cache?.clear();
      negative?.clear();
    },
  };
}
