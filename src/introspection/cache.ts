/**
 * The introspection cache: what the authorization server says about a token, through the
 * validated-answer cache (introspection/answer-cache.ts: keyed by the token's hash, active and inactive
 * answers apart) with single-flight, so concurrent first requests for one token make one
 * introspection call. Cache misses that would call the AS take from the introspection budget (per
 * peer and in total); hits and joined in-flight calls never do.
 */
import type { IntrospectionBudget } from './budget.ts';
import type { Introspect } from './client.ts';
import { GuardError } from '../oauth/reasons.ts';
import type { TokenInfo } from './token-info.ts';
import { createAnswerCache, tokenCacheKey, type AnswerCache, type AnswerEntry } from './answer-cache.ts';

/**
 * An answer that may be reused only until `untilMs` (epoch ms): one the shared tier held, whose
 * entry ends then. Kept locally no longer than that, so a replica that reads an entry near its
 * end does not start a fresh `maxTtlSeconds` of its own (a revoked token would otherwise be
 * accepted for up to twice `maxTtlSeconds` after the AS last called it active).
 */
export interface BoundedAnswer {
  readonly info: TokenInfo;
  readonly untilMs: number;
}

/** What the cache asks on a miss: the AS (a {@link TokenInfo}), or the shared tier in front of it. */
export type AnswerSource = (token: string) => Promise<TokenInfo | BoundedAnswer>;

function isBounded(answer: TokenInfo | BoundedAnswer): answer is BoundedAnswer {
  return 'untilMs' in answer;
}

export interface TokenCacheOptions {
  maxEntries: number;
  maxTtlSeconds: number;
  negativeTtlSeconds: number;
  /** Inactive answers kept (their own LRU, so they never evict active ones). Default 10 000; 0 keeps none. */
  negativeMaxEntries?: number;
  /** The answer cache, built in composition; else one is made from the options above. */
  answers?: AnswerCache;
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

export function createCachedIntrospector(introspect: Introspect | AnswerSource, options: TokenCacheOptions): TokenIntrospector {
  const now = options.now ?? Date.now;
  const answers = options.answers ?? createAnswerCache(options);
  const budget = options.budget;
  const inFlight = new Map<string, Promise<TokenInfo>>();

  const staleWindowMs = (options.staleIfErrorSeconds ?? 0) * 1000;

  async function fetchAndStore(key: string, token: string, previous: AnswerEntry | undefined): Promise<TokenInfo> {
    try {
      // Through a promise, so even a synchronous throw settles after the in-flight entry exists.
      const answer = await Promise.resolve().then(() => introspect(token));
      if (!isBounded(answer)) {
        answers.put(key, answer);
        return answer;
      }
      answers.put(key, answer.info, answer.untilMs);
      return answer.info;
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
      const answer = answers.get(key);
      if (answer !== undefined) {
        options.onHit?.();
        return Promise.resolve(answer);
      }
      options.onMiss?.();
      let pending = inFlight.get(key);
      if (pending === undefined) {
        // Only a call that would reach the AS pays; joining one in flight is free.
        const refusal = budget?.admit(context?.certificate === undefined ? context?.peer : `cert:${context.certificate}`);
        if (refusal !== undefined) return Promise.reject(refusal);
        // An expired active entry stays (until replaced or evicted) as the stale-if-error fallback.
        pending = fetchAndStore(key, token, staleWindowMs > 0 ? answers.held(key) : undefined);
        inFlight.set(key, pending);
      }
      return pending;
    },
    get size() {
      return answers.size;
    },
    get negativeSize() {
      return answers.negativeSize;
    },
    clear() {
      answers.clear();
    },
  };
}
