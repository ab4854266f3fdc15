/**
 * The sealed envelope over any {@link KeyValueStore}: entries authenticated with a key from
 * `sharedState.secretFile`, so a value written by anybody without it (another client of the
 * store, a moved entry) is refused and counted, never believed. It is a KeyValueStore itself.
 *
 * Names are `kind + ":" + value` (`token:<the token>`, `jti:<replay key>`). Stored keys never hold
 * the value: `keyPrefix + kind + ":" + base64url(HMAC-SHA256(k, name))`. Stored values are
 * `base64url(HMAC-SHA256(k, storedKey + "\n" + value)) + "." + value`: the MAC covers the key, so
 * an entry moved under another token's key fails authentication too.
 */
import { createHmac, hkdfSync, timingSafeEqual } from 'node:crypto';
import type { KeyValueStore, StoreRole } from './kv.ts';

export const MIN_SECRET_BYTES = 32;

/** Sub-keys from the one secret (HKDF), so the MAC key and the nonce key are never the same bytes. */
export function deriveKey(secret: Buffer, purpose: 'entries' | 'dpop-nonce'): Buffer {
  return Buffer.from(hkdfSync('sha256', secret, 'cnfguard shared state', purpose, 32));
}

/** The DPoP nonce HMAC key every replica derives alike from `sharedState.secretFile`. */
export function sharedNonceKey(secret: Buffer): Buffer {
  return deriveKey(secret, 'dpop-nonce');
}

export interface SealedKvOptions {
  /** The secret file's bytes (at least {@link MIN_SECRET_BYTES}). */
  secret: Buffer;
  keyPrefix: string;
  /** One per value that failed authentication. */
  onForged?: () => void;
}

export interface SealedKv extends KeyValueStore {
  /** The stored key of a name (`kind:value`). */
  key(name: string): string;
  /** The stored form of `value` under the stored key `storedKey`. */
  seal(storedKey: string, value: string): string;
  /** The value of an authentic stored form, or undefined (counted as forged). */
  open(storedKey: string, stored: string): string | undefined;
  /** The inner store's, when it has them. */
  role(): StoreRole;
  connect(): void;
  close(): void;
}

export function sealKv(inner: KeyValueStore, options: SealedKvOptions): SealedKv {
  if (options.secret.length < MIN_SECRET_BYTES) throw new Error(`the shared-state secret must be at least ${MIN_SECRET_BYTES} bytes`);
  const macKey = deriveKey(options.secret, 'entries');
  const mac = (text: string) => createHmac('sha256', macKey).update(text);

  const key = (name: string): string => {
    const colon = name.indexOf(':');
    return `${options.keyPrefix}${name.slice(0, colon + 1)}${mac(name).digest('base64url')}`;
  };
  const seal = (storedKey: string, value: string): string => `${mac(`${storedKey}\n${value}`).digest('base64url')}.${value}`;
  const open = (storedKey: string, stored: string): string | undefined => {
    const dot = stored.indexOf('.');
    const value = dot < 0 ? '' : stored.slice(dot + 1);
    const given = Buffer.from(dot < 0 ? '' : stored.slice(0, dot), 'base64url');
    const expected = mac(`${storedKey}\n${value}`).digest();
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
      options.onForged?.();
      return undefined;
    }
    return value;
  };

  return {
    key,
    seal,
    open,
    get up() {
      return inner.up;
    },
    role: () => inner.role?.() ?? (inner.up ? 'primary' : 'down'),
    connect: () => inner.connect?.(),
    close: () => inner.close?.(),
    async get(name) {
      const storedKey = key(name);
      const stored = await inner.get(storedKey);
      return stored === undefined ? undefined : open(storedKey, stored);
    },
    set(name, value, ttlMs) {
      const storedKey = key(name);
      return inner.set(storedKey, seal(storedKey, value), ttlMs);
    },
    setIfAbsent(name, value, ttlMs) {
      const storedKey = key(name);
      return inner.setIfAbsent(storedKey, seal(storedKey, value), ttlMs);
    },
  };
}
