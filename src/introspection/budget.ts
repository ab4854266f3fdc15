/**
 * How many introspection calls unauthenticated traffic may cause: a token bucket per peer and one
 * for the whole process. Only cache misses that would call the AS take from it (the cache decides
 * that), so a flood of made-up tokens is refused here, before it can use up the AS's own rate
 * limit for every legitimate client, while cached tokens are never touched.
 *
 * Per peer: IPv4 addresses and IPv6 /64 prefixes (one host usually owns a whole /64, so
 * per-address buckets would be free to multiply). The peer table is a bounded LRU: a peer pushed
 * out starts again with a full burst, which is why the total bucket exists. Behind a front proxy
 * every request has the proxy's address unless the caller passes the forwarded client's.
 */
import { isIPv6 } from 'node:net';
import { lazyLru } from '../lru.ts';
import { GuardError } from '../oauth/reasons.ts';

/**
 * A token bucket: holds up to `burst` tokens, refilled at `ratePerSecond`. Time is passed in
 * (milliseconds), so it is tested without waiting and reads the clock once per decision.
 */
export class TokenBucket {
  readonly ratePerSecond: number;
  readonly burst: number;
  #tokens: number;
  #updatedMs: number;

  constructor(ratePerSecond: number, burst: number, nowMs: number) {
    this.ratePerSecond = ratePerSecond;
    this.burst = burst;
    this.#tokens = burst;
    this.#updatedMs = nowMs;
  }

  /** Refills for the time since the last call; 0 when a token is there, else the milliseconds until one is. */
  waitMs(nowMs: number): number {
    const elapsed = nowMs - this.#updatedMs;
    if (elapsed > 0) {
      this.#tokens = Math.min(this.burst, this.#tokens + (elapsed * this.ratePerSecond) / 1000);
      this.#updatedMs = nowMs;
    }
    if (this.#tokens >= 1) return 0;
    return this.ratePerSecond > 0 ? Math.ceil(((1 - this.#tokens) * 1000) / this.ratePerSecond) : Infinity;
  }

  /** Takes one token; call after `waitMs` returned 0. */
  take(): void {
    this.#tokens -= 1;
  }

  get tokens(): number {
    return this.#tokens;
  }
}

export interface IntrospectionBudgetOptions {
  /** Calls a second per peer; 0 turns the per-peer bucket off. */
  perPeerPerSecond: number;
  perPeerBurst: number;
  /** Calls a second for the whole process; 0 turns the total bucket off. */
  totalPerSecond: number;
  totalBurst: number;
  /** Peers remembered (LRU). Default 10 000. */
  maxPeers?: number;
  /** Milliseconds since the epoch. */
  now?: () => number;
  onRefused?: (scope: 'peer' | 'total') => void;
}

export interface IntrospectionBudget {
  /**
   * Takes one call from the peer's bucket and the total one, or takes nothing and returns the
   * refusal: `introspection_rate_limited` (429) for the peer, `introspection_budget_exhausted`
   * (503) in total, each with Retry-After.
   */
  admit(peer: string | undefined): GuardError | undefined;
}

/** The budget key of a peer address: an IPv4 address (IPv4-mapped IPv6 included) or an IPv6 /64. */
export function peerKey(address: string): string {
  const bare = address.startsWith('[') && address.endsWith(']') ? address.slice(1, -1) : address;
  if (!isIPv6(bare)) return bare;
  const unzoned = bare.split('%')[0] ?? bare;
  const lastColon = unzoned.lastIndexOf(':');
  // ::ffff:192.0.2.1 and other embedded IPv4 forms: the IPv4 address is the peer.
  if (unzoned.includes('.', lastColon)) return unzoned.slice(lastColon + 1);
  const [head = '', tail] = unzoned.split('::');
  const left = head === '' ? [] : head.split(':');
  const right = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups = tail === undefined ? left : [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right];
  return `${groups
    .slice(0, 4)
    .map((g) => Number.parseInt(g, 16).toString(16))
    .join(':')}::/64`;
}

const retryAfter = (waitMs: number) => Math.max(1, Math.ceil(waitMs / 1000));

export function createIntrospectionBudget(options: IntrospectionBudgetOptions): IntrospectionBudget {
  const now = options.now ?? Date.now;
  const total = options.totalPerSecond > 0 ? new TokenBucket(options.totalPerSecond, options.totalBurst, now()) : undefined;
  const peers = options.perPeerPerSecond > 0 ? lazyLru<string, TokenBucket>(options.maxPeers ?? 10_000) : undefined;

  return {
    admit(peer) {
      const t = now();
      let bucket: TokenBucket | undefined;
      if (peers !== undefined && peer !== undefined) {
        const key = peerKey(peer);
        bucket = peers.get(key);
        if (bucket === undefined) {
          bucket = new TokenBucket(options.perPeerPerSecond, options.perPeerBurst, t);
          peers.set(key, bucket);
        }
        const wait = bucket.waitMs(t);
        if (wait > 0) {
          options.onRefused?.('peer');
          return new GuardError('introspection_rate_limited', { detail: 'per-peer introspection budget exceeded: not calling the AS', retryAfterSeconds: retryAfter(wait) });
        }
      }
      if (total !== undefined) {
        const wait = total.waitMs(t);
        if (wait > 0) {
          options.onRefused?.('total');
          return new GuardError('introspection_budget_exhausted', { detail: 'total introspection budget exceeded: not calling the AS', retryAfterSeconds: retryAfter(wait) });
        }
        total.take();
      }
      bucket?.take();
      return undefined;
    },
  };
}
