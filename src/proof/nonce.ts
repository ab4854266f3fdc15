/**
 * Server-issued DPoP nonces (RFC 9449 §8, §9), stateless: the nonce of period `n` (time divided
 * by `rotationSeconds`) is HMAC-SHA256(key, label ‖ n), truncated to 128 bits, base64url. A proof
 * carrying the nonce of the current or the previous period is accepted, so a nonce lives between
 * one and two periods and a client that just got one is never refused at a boundary.
 *
 * The key is random per process by default, so each replica has its own nonces; with shared
 * state it comes from the shared secret, and every replica then issues and accepts the same
 * nonces with no store round trip. Cluster workers without shared state get the primary's key
 * when they start (src/cluster-state.ts), so every worker accepts what any of them issued.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

export interface NonceSourceOptions {
  /** At least 32 bytes. Default: random, per process. */
  key?: Uint8Array;
  rotationSeconds: number;
  /** Epoch seconds. */
  now: () => number;
}

export interface NonceSource {
  /** The nonce to hand out now (a `use_dpop_nonce` answer's `DPoP-Nonce`). */
  current(): string;
  /** Whether `nonce` was issued by this source for the current or the previous period. Constant time per candidate. */
  accepts(nonce: string): boolean;
  /**
   * After a success: the nonce to send as `DPoP-Nonce` when the one the proof carried is not the
   * current one (rotation happened since it was issued), otherwise undefined.
   */
  freshFor(presented: string | undefined): string | undefined;
}

const LABEL = 'cnfguard dpop nonce v1\0';

export function createNonceSource(options: NonceSourceOptions): NonceSource {
  if (!Number.isInteger(options.rotationSeconds) || options.rotationSeconds <= 0) throw new RangeError('rotationSeconds must be a positive integer');
  const key = options.key ?? randomBytes(32);
  if (key.length < 32) throw new RangeError('a nonce key needs at least 32 bytes');
  let cached: { period: number; current: Buffer; previous: Buffer } | undefined;

  function nonceOf(period: number): Buffer {
    const counter = Buffer.alloc(8);
    counter.writeBigUInt64BE(BigInt(period));
    return createHmac('sha256', key).update(LABEL).update(counter).digest().subarray(0, 16);
  }

  function now(): { current: Buffer; previous: Buffer } {
    const period = Math.max(1, Math.floor(options.now() / options.rotationSeconds));
    if (cached?.period !== period) {
      const previous = cached?.period === period - 1 ? cached.current : nonceOf(period - 1);
      cached = { period, current: nonceOf(period), previous };
    }
    return cached;
  }

  function equals(text: string, expected: Buffer): boolean {
    // 16 bytes are exactly 22 base64url characters; anything else cannot be ours.
    if (text.length !== 22 || !/^[A-Za-z0-9_-]+$/.test(text)) return false;
    const presented = Buffer.from(text, 'base64url');
    return presented.length === expected.length && timingSafeEqual(presented, expected) && presented.toString('base64url') === text;
  }

  return {
    current: () => now().current.toString('base64url'),
    accepts(nonce) {
      const { current, previous } = now();
      // Both compared, so the time does not tell which period matched.
      const a = equals(nonce, current);
      const b = equals(nonce, previous);
      return a || b;
    },
    freshFor(presented) {
      const { current } = now();
      return presented !== undefined && equals(presented, current) ? undefined : current.toString('base64url');
    },
  };
}
