/**
 * The shared-state secret check (state/secret-check.ts): replicas on one store with different
 * `secretFile`s see each other's fingerprint, both sides, and a trailing newline is named as such.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { createMemoryKv } from '../../src/state/memory-kv.ts';
import { createSecretCheck, mismatchOf, SECRET_CHECK_EVERY_MS, secretFingerprint } from '../../src/state/secret-check.ts';
import { deriveKey } from '../../src/state/sealed-kv.ts';
import { manualClock } from '../fixtures/clock.ts';

describe('shared-state secret check', () => {
  it('two replicas with the same secret agree; one whose file has a trailing newline is found by both sides, named as such', async () => {
    const clock = manualClock();
    const kv = createMemoryKv({ maxEntries: 100, now: clock.now });
    const secret = randomBytes(32);
    const replica = (bytes: Buffer) => createSecretCheck({ kv, keyPrefix: 'cnfguard:', secret: bytes, now: clock.now });
    const [a, b, withNewline] = [replica(secret), replica(Buffer.from(secret)), replica(Buffer.concat([secret, Buffer.from('\n')]))];
    expect(await a.check()).toEqual({ kind: 'first' });
    expect(await b.check()).toEqual({ kind: 'same' });
    expect(a.mismatch()).toBeUndefined();
    // The echo-written replica connects: it sees the others' fingerprint at once...
    expect(await withNewline.check()).toEqual({ kind: 'mismatch', cause: 'trailing-whitespace' });
    // ...and they see its own at their next check.
    clock.advance(SECRET_CHECK_EVERY_MS);
    expect(await a.check()).toEqual({ kind: 'mismatch', cause: 'trailing-whitespace' });
    expect(a.mismatch()).toBe('trailing-whitespace');
    expect(withNewline.mismatch()).toBe('trailing-whitespace');
    // Fixed (the odd replica restarted with the right file): the report ends after about two intervals.
    for (let i = 0; i < 3; i++) {
      clock.advance(SECRET_CHECK_EVERY_MS);
      expect(await b.check()).toEqual({ kind: 'same' });
      expect(await a.check()).toEqual({ kind: 'same' });
    }
    expect(a.mismatch()).toBeUndefined();
  });

  it('other bytes are `different`, a value it does not write is `unknown`; the fingerprint holds neither the secret nor the entry key', () => {
    const secret = randomBytes(32);
    const mine = secretFingerprint(secret);
    expect(mismatchOf(mine, secretFingerprint(Buffer.from(secret)))).toBeUndefined();
    expect(mismatchOf(mine, secretFingerprint(Buffer.concat([secret, Buffer.from('\r\n')])))).toBe('trailing-whitespace');
    expect(mismatchOf(mine, secretFingerprint(randomBytes(32)))).toBe('different');
    expect(mismatchOf(mine, 'garbage')).toBe('unknown');
    for (const bytes of [secret, deriveKey(secret, 'entries'), deriveKey(secret, 'dpop-nonce')]) {
      for (const encoding of ['base64url', 'base64', 'hex'] as const) expect(mine).not.toContain(bytes.toString(encoding).slice(0, 16));
    }
  });

  it('a check key gone while this replica keeps writing it means the store lost its data', async () => {
    const clock = manualClock();
    let kv = createMemoryKv({ maxEntries: 100, now: clock.now });
    const check = createSecretCheck({ kv: { get: (k) => kv.get(k), set: (k, v, ttl) => kv.set(k, v, ttl), setIfAbsent: (k, v, ttl) => kv.setIfAbsent(k, v, ttl), up: true }, keyPrefix: 'p:', secret: randomBytes(32), now: clock.now });
    expect(await check.check()).toEqual({ kind: 'first' });
    clock.advance(SECRET_CHECK_EVERY_MS);
    expect(await check.check()).toEqual({ kind: 'same' });
    kv = createMemoryKv({ maxEntries: 100, now: clock.now }); // a restart without persistence, or FLUSHALL
    clock.advance(SECRET_CHECK_EVERY_MS);
    expect(await check.check()).toEqual({ kind: 'lost' });
    expect(await check.check()).toEqual({ kind: 'same' });
  });
});
