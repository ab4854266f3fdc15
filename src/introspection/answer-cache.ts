/**
 * The validated-answer cache: what a token was found to say (by introspection, or by a JWT check),
 * kept by the hash of the token until min(exp, now + maxTtl), so a repeat costs neither an AS call
 * nor a signature check. One module for both sources, one instance each (an introspection answer
 * never answers for a route that validates JWTs, nor the reverse). It holds claims, never
 * decisions: binding, expiry and policy are checked again on every request.
 *
 * Keys are SHA-256 of the token, so no raw token is kept longer than its request. Active and
 * inactive answers live in separate LRUs: anybody can make up inactive tokens, so they must not be
 * able to push real ones out. Expiry is checked here against the injected clock (lru-cache's own
 * ttl debounces its clock with timers); an expired active entry stays until replaced or evicted,
 * as the introspection cache's stale-if-error fallback.
 */
import { hash } from 'node:crypto';
import { lazyLru } from '../lru.ts';
import { INACTIVE, type TokenInfo } from './token-info.ts';

export interface AnswerLifetimeRules {
  maxTtlSeconds: number;
  negativeTtlSeconds: number;
}

export interface AnswerCacheOptions extends AnswerLifetimeRules {
  /** Active answers kept; 0 keeps none. */
  maxEntries: number;
  /** Inactive answers kept (their own LRU, so they never evict active ones). Default 10 000; 0 keeps none. */
  negativeMaxEntries?: number;
  /** Milliseconds since the epoch. */
  now?: () => number;
}

export interface AnswerEntry {
  info: TokenInfo;
  expiresAtMs: number;
}

export interface AnswerCache {
  /** A live answer (active, or {@link INACTIVE} from the negative cache), or undefined. */
  get(key: string): TokenInfo | undefined;
  /** The active entry held for `key` even when expired (the stale-if-error fallback). */
  held(key: string): AnswerEntry | undefined;
  /**
   * Keeps `info` for its lifetime (none: not kept); an inactive answer drops the active entry.
   * `untilMs` (epoch ms) caps the lifetime: an answer taken from the shared tier lives here no
   * longer than the shared entry it came from, so a revoked token is not accepted for longer than
   * `maxTtlSeconds` after the AS last said it was active, whichever replica asked.
   */
  put(key: string, info: TokenInfo, untilMs?: number): void;
  /** Active answers held. */
  readonly size: number;
  /** Inactive answers held. */
  readonly negativeSize: number;
  clear(): void;
}

export function tokenCacheKey(token: string): string {
  return hash('sha256', token, 'base64url');
}

/**
 * How long an answer may be reused: an active token until min(exp, now + maxTtl); an inactive
 * one for negativeTtl. Zero means "do not cache".
 */
export function cacheLifetimeMs(info: TokenInfo, nowMs: number, rules: AnswerLifetimeRules): number {
  if (!info.active) return Math.max(0, rules.negativeTtlSeconds * 1000);
  const cap = rules.maxTtlSeconds * 1000;
  const untilExp = info.exp === undefined ? cap : info.exp * 1000 - nowMs;
  return Math.max(0, Math.min(cap, untilExp));
}

export function createAnswerCache(options: AnswerCacheOptions): AnswerCache {
  const now = options.now ?? Date.now;
  // No LRU at all when nothing is to be kept; lazyLru's memory grows with the entries (src/lru.ts).
  const active = options.maxEntries > 0 ? lazyLru<string, AnswerEntry>(options.maxEntries) : undefined;
  // key -> until when (ms) the token is known inactive.
  const negativeMax = options.negativeMaxEntries ?? 10_000;
  const negative = negativeMax > 0 && options.negativeTtlSeconds > 0 ? lazyLru<string, number>(negativeMax) : undefined;

  return {
    get(key) {
      const entry = active?.get(key);
      if (entry !== undefined && entry.expiresAtMs > now()) return entry.info;
      if (negative === undefined) return undefined;
      const inactiveUntil = negative.get(key);
      if (inactiveUntil === undefined) return undefined;
      if (inactiveUntil > now()) return INACTIVE;
      negative.delete(key);
      return undefined;
    },
    held(key) {
      return active?.peek(key);
    },
    put(key, info, untilMs) {
      const t = now();
      const lifetime = untilMs === undefined ? cacheLifetimeMs(info, t, options) : Math.max(0, Math.min(cacheLifetimeMs(info, t, options), untilMs - t));
      if (info.active) {
        if (active !== undefined && lifetime > 0) active.set(key, { info, expiresAtMs: t + lifetime });
        negative?.delete(key);
      } else {
        // A revoked token: its old active answer must not come back as a stale-if-error fallback.
        active?.delete(key);
        if (negative !== undefined && lifetime > 0) negative.set(key, t + lifetime);
      }
    },
    get size() {
      return active?.size ?? 0;
    },
    get negativeSize() {
      return negative?.size ?? 0;
    },
    clear() {
      active?.clear();
      negative?.clear();
    },
  };
}
