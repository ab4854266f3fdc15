/**
 * Are all replicas on one store using the same `sharedState.secretFile`? Keys in the store are
 * HMACs under the secret (sealed-kv.ts), so replicas with different secrets never read each other's
 * entries: no error, no `forged` count, just a deployment silently split in two (each side
 * introspects on its own, and a DPoP proof accepted on one side is accepted again on the other).
 *
 * Each replica writes, at connect and every {@link SECRET_CHECK_EVERY_MS}, one well-known key
 * (`keyPrefix + "secret-check"`, not a keyed name: every secret finds it) holding a fingerprint of
 * its secret, after reading what is there. Another fingerprint there means another replica (or
 * worker) has another secret. Since every replica overwrites it, each side of a split sees the
 * other's within about one interval.
 *
 * The fingerprint is `v1.` + HMAC-SHA256 of a fixed label under a key derived (HKDF, its own
 * purpose) from the secret, and the same under the secret with trailing CR, LF, tab and space
 * removed, so that the commonest split (a file written with `echo` on one side, `printf` or
 * `head -c` on the other; `secretFile` is read as bytes, newline included) is named as such.
 * Neither part reveals the secret or the keys that seal entries. Whoever can write to the store can
 * make replicas report a mismatch that is not there (noise, no more: nothing is decided on it).
 */
import { createHmac, hkdfSync } from 'node:crypto';
import type { KeyValueStore } from './kv.ts';

/** The check key's name after `keyPrefix`; no `:`, so it is never one of the sealed keys (`kind:mac`). */
export const SECRET_CHECK_NAME = 'secret-check';

/** How often a connected replica reads and writes the check key. */
export const SECRET_CHECK_EVERY_MS = 30_000;

/** The check key's lifetime, refreshed by every check (gone once no replica writes it). */
const SECRET_CHECK_TTL_MS = 10 * 60_000;

/** How long a mismatch seen stays reported (two intervals and a margin: a split is seen at least that often). */
const MISMATCH_REPORTED_MS = 2 * SECRET_CHECK_EVERY_MS + 10_000;

const LABEL = 'cnfguard shared state secret check v1';

function macOf(secret: Buffer): string {
  const key = Buffer.from(hkdfSync('sha256', secret, 'cnfguard shared state', 'secret-check', 32));
  return createHmac('sha256', key).update(LABEL).digest('base64url');
}

/** The secret without trailing CR, LF, tab and space bytes. */
function trimmedEnd(secret: Buffer): Buffer {
  let end = secret.length;
  while (end > 0 && [0x0a, 0x0d, 0x09, 0x20].includes(secret[end - 1] as number)) end--;
  return secret.subarray(0, end);
}

/** What the check key holds for `secret`: `v1.<mac under the secret>.<mac under it, trailing whitespace removed>`. */
export function secretFingerprint(secret: Buffer): string {
  return `v1.${macOf(secret)}.${macOf(trimmedEnd(secret))}`;
}

/**
 * Why another fingerprint differs from ours: `trailing-whitespace` (the secrets are the same but
 * for trailing newlines or spaces), `different` (other bytes), `unknown` (not a fingerprint this
 * version writes: another version, or another client of the store).
 */
export type SecretMismatch = 'trailing-whitespace' | 'different' | 'unknown';

export function mismatchOf(mine: string, theirs: string): SecretMismatch | undefined {
  if (theirs === mine) return undefined;
  const [version, , trimmed] = theirs.split('.');
  if (version !== 'v1' || trimmed === undefined) return 'unknown';
  return trimmed === mine.split('.')[2] ? 'trailing-whitespace' : 'different';
}

export type SecretCheckResult =
  /** No fingerprint, or ours (`lost`: none, though this replica wrote one less than its lifetime ago: the store lost its data). */
  | { readonly kind: 'same' | 'first' }
  | { readonly kind: 'lost' }
  | { readonly kind: 'mismatch'; readonly cause: SecretMismatch }
  /** The store did not answer. */
  | { readonly kind: 'unknown' };

export interface SecretCheck {
  /** Reads the check key, then writes this replica's fingerprint there. Never rejects. */
  check(): Promise<SecretCheckResult>;
  /** The last mismatch seen, while it is recent (about two intervals); undefined otherwise. */
  mismatch(): SecretMismatch | undefined;
}

export function createSecretCheck(options: { kv: KeyValueStore; keyPrefix: string; secret: Buffer; now?: () => number }): SecretCheck {
  const now = options.now ?? Date.now;
  const key = options.keyPrefix + SECRET_CHECK_NAME;
  const mine = secretFingerprint(options.secret);
  let lastMismatch: { at: number; cause: SecretMismatch } | undefined;
  let wroteAt: number | undefined;
  return {
    async check() {
      let seen: string | undefined;
      try {
        seen = await options.kv.get(key);
      } catch {
        return { kind: 'unknown' };
      }
      const t = now();
      let result: SecretCheckResult;
      if (seen === undefined) result = { kind: wroteAt !== undefined && t - wroteAt < SECRET_CHECK_TTL_MS ? 'lost' : 'first' };
      else {
        const cause = mismatchOf(mine, seen);
        result = cause === undefined ? { kind: 'same' } : { kind: 'mismatch', cause };
        if (cause !== undefined) lastMismatch = { at: t, cause };
      }
      try {
        await options.kv.set(key, mine, SECRET_CHECK_TTL_MS);
        wroteAt = t;
      } catch {
        // Written at the next check.
      }
      return result;
    },
    mismatch() {
      return lastMismatch !== undefined && now() - lastMismatch.at < MISMATCH_REPORTED_MS ? lastMismatch.cause : undefined;
    },
  };
}
