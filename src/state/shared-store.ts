/**
 * Shared state across replicas (Redis or Valkey): one ioredis client, entries authenticated with a
 * key from `sharedState.secretFile`, and a per-call deadline so a slow or dead store never holds a
 * request. ioredis because it is maintained, speaks Cluster and Sentinel, and has what failing fast
 * needs: `commandTimeout`, `enableOfflineQueue: false`, `maxRetriesPerRequest` and a `retryStrategy`
 * for capped reconnect backoff (a store that comes back is used again without a restart).
 *
 * Keys never hold a token: `keyPrefix + kind + ":" + base64url(HMAC-SHA256(k, kind + ":" + value))`.
 * Values are `base64url(HMAC-SHA256(k, key + "\n" + json)) + "." + json`: the MAC covers the key
 * name, so an entry moved under another token's key fails authentication too.
 */
import { createHmac, hkdfSync, timingSafeEqual } from 'node:crypto';
import { createRequire } from 'node:module';
import type { Redis } from 'ioredis';
import type { Introspect } from '../introspection/client.ts';
import { tokenInfoFromAnswer, type TokenInfo } from '../introspection/token-info.ts';
import { GuardError } from '../oauth/errors.ts';
import { cacheLifetimeMs } from '../introspection/cache.ts';
import type { ReplayStore } from '../proof/replay-store.ts';

export const MIN_SECRET_BYTES = 32;

export type SharedStateErrorKind = 'timeout' | 'unavailable' | 'forged' | 'local_fallback';

export interface SharedStoreOptions {
  url: string;
  keyPrefix: string;
  /** The secret file's bytes (at least {@link MIN_SECRET_BYTES}). */
  secret: Buffer;
  /** PEM CA for rediss:// (else the system's trust). */
  ca?: string | undefined;
  timeoutMs: number;
  onUp?: (up: boolean) => void;
  onError?: (kind: SharedStateErrorKind) => void;
  /** Rate-limited by the caller; never gets a token or a secret. */
  warn?: (message: string, detail: Record<string, unknown>) => void;
}

/** Sub-keys from the one secret (HKDF), so the MAC key and the nonce key are never the same bytes. */
export function deriveKey(secret: Buffer, purpose: 'entries' | 'dpop-nonce'): Buffer {
  return Buffer.from(hkdfSync('sha256', secret, 'cnfguard shared state', purpose, 32));
}

/** The DPoP nonce HMAC key every replica derives alike from `sharedState.secretFile`. */
export function sharedNonceKey(secret: Buffer): Buffer {
  return deriveKey(secret, 'dpop-nonce');
}

/**
 * ioredis (a CommonJS package of ~40 modules) loads only when a config has `sharedState`: it is a
 * tenth of `cnfguard run`'s start-up otherwise spent for nothing.
 */
const requireLazily = createRequire(import.meta.url);
function redisClass(): typeof Redis {
  return (requireLazily('ioredis') as { Redis: typeof Redis }).Redis;
}

export class SharedStore {
  readonly redis: Redis;
  readonly timeoutMs: number;
  private readonly prefix: string;
  private readonly macKey: Buffer;
  private readonly options: SharedStoreOptions;
  private isUp = false;

  constructor(options: SharedStoreOptions) {
    if (options.secret.length < MIN_SECRET_BYTES) throw new Error(`the shared-state secret must be at least ${MIN_SECRET_BYTES} bytes`);
    this.options = options;
    this.prefix = options.keyPrefix;
    this.macKey = deriveKey(options.secret, 'entries');
    this.timeoutMs = options.timeoutMs;
    const tls = options.url.startsWith('rediss:') ? { ...(options.ca !== undefined && { ca: options.ca }) } : undefined;
    const RedisClient = redisClass();
    this.redis = new RedisClient(options.url, {
      lazyConnect: true,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      commandTimeout: options.timeoutMs,
      connectTimeout: Math.max(1000, options.timeoutMs),
      retryStrategy: (times) => Math.min(50 * 2 ** Math.min(times, 6), 2000),
      ...(tls !== undefined && { tls }),
    });
    this.redis.on('ready', () => this.setUp(true));
    this.redis.on('close', () => this.setUp(false));
    this.redis.on('error', (err: Error) => {
      this.setUp(false);
      options.warn?.('shared state store error', { error: err.message });
    });
  }

  get up(): boolean {
    return this.isUp;
  }

  private setUp(up: boolean): void {
    if (up === this.isUp) return;
    this.isUp = up;
    this.options.onUp?.(up);
  }

  /** Starts connecting; never waits and never fails (the store may come up later). */
  connect(): void {
    this.options.onUp?.(false);
    this.redis.connect().catch(() => undefined);
  }

  close(): void {
    this.redis.disconnect();
  }

  key(kind: 'token' | 'jti', value: string): string {
    return `${this.prefix}${kind}:${createHmac('sha256', this.macKey).update(`${kind}:${value}`).digest('base64url')}`;
  }

  seal(key: string, json: string): string {
    return `${createHmac('sha256', this.macKey).update(`${key}\n${json}`).digest('base64url')}.${json}`;
  }

  /** The JSON of an authentic value, or undefined (counted as forged). */
  open(key: string, value: string): string | undefined {
    const dot = value.indexOf('.');
    const json = dot < 0 ? '' : value.slice(dot + 1);
    const given = Buffer.from(dot < 0 ? '' : value.slice(0, dot), 'base64url');
    const expected = createHmac('sha256', this.macKey).update(`${key}\n${json}`).digest();
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
      this.options.onError?.('forged');
      return undefined;
    }
    return json;
  }

  /** Runs one command under the per-call deadline; rejects (counted) on timeout or store error. */
  async call<T>(command: (redis: Redis) => Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error('shared state deadline')), this.timeoutMs);
    });
    try {
      return await Promise.race([command(this.redis), deadline]);
    } catch (err) {
      this.options.onError?.((err as Error).message.includes('timed out') || (err as Error).message === 'shared state deadline' ? 'timeout' : 'unavailable');
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }
}

/** What the token cache gets from the store on a local miss. */
export interface SharedTier {
  get(token: string): Promise<TokenInfo | undefined>;
  set(token: string, info: TokenInfo, lifetimeMs: number): void;
}

interface SharedEntry {
  v: 1;
  /** Milliseconds since the epoch. */
  until: number;
  /** Whether `a` is the whole answer (claims kept) or only the registered members. */
  c: boolean;
  a: Record<string, unknown>;
}

function answerOf(info: TokenInfo): Record<string, unknown> {
  if (!info.active) return { active: false };
  if (Object.keys(info.claims).length > 0) return { ...info.claims };
  const answer: Record<string, unknown> = { active: true, aud: [...info.aud] };
  const members: [string, unknown][] = [
    ['sub', info.subject],
    ['client_id', info.clientId],
    ['scope', info.scope],
    ['token_type', info.tokenType],
    ['exp', info.exp],
    ['nbf', info.nbf],
    ['iss', info.iss],
    ['cnf', info.cnf],
  ];
  for (const [name, value] of members) if (value !== undefined) answer[name] = value;
  return answer;
}

/**
 * The second tier of the token cache. `get` never rejects: a store error or timeout is a miss
 * (counted by the store) and the caller goes on to the AS. `set` does not wait.
 */
export function createSharedTokenTier(store: SharedStore, options: { keepClaims: boolean; now?: () => number; onHit?: () => void }): SharedTier {
  const now = options.now ?? Date.now;
  return {
    async get(token) {
      if (!store.up) return undefined;
      const key = store.key('token', token);
      let value: string | null;
      try {
        value = await store.call((redis) => redis.get(key));
      } catch {
        return undefined;
      }
      if (value === null) return undefined;
      const json = store.open(key, value);
      if (json === undefined) return undefined;
      try {
        const entry = JSON.parse(json) as SharedEntry;
        if (entry.v !== 1 || !(entry.until > now())) return undefined;
        if (options.keepClaims && !entry.c && entry.a.active === true) return undefined;
        const info = tokenInfoFromAnswer(entry.a, { keepClaims: options.keepClaims });
        options.onHit?.();
        return info;
      } catch {
        return undefined;
      }
    },
    set(token, info, lifetimeMs) {
      if (!store.up || lifetimeMs <= 0) return;
      const key = store.key('token', token);
      const entry: SharedEntry = { v: 1, until: now() + lifetimeMs, c: Object.keys(info.claims).length > 0, a: answerOf(info) };
      store.call((redis) => redis.set(key, store.seal(key, JSON.stringify(entry)), 'PX', Math.ceil(lifetimeMs))).catch(() => undefined);
    },
  };
}

/**
 * `introspect` with the shared tier in front of it. The token cache calls this only on a local miss
 * (inside its single-flight), so its hit path never touches the store. Answers from the AS are
 * written with the cache's TTL rules; answers from the store are not written back.
 */
export function withSharedTier(introspect: Introspect, tier: SharedTier, rules: { maxTtlSeconds: number; negativeTtlSeconds: number; now?: () => number }): Introspect {
  const now = rules.now ?? Date.now;
  return async (token) => {
    const shared = await tier.get(token);
    if (shared !== undefined) return shared;
    const info = await introspect(token);
    tier.set(token, info, cacheLifetimeMs(info, now(), rules));
    return info;
  };
}

/**
 * DPoP jti replay store on the shared store: one atomic `SET key 1 NX PX ttl`. Store down:
 * `fail-closed` throws `shared_state_unavailable` (503, Retry-After); `local` uses a per-replica
 * store, counted and logged (the caller rate-limits `warn`).
 */
export class RedisReplayStore implements ReplayStore {
  private readonly store: SharedStore;
  private readonly onUnavailable: 'fail-closed' | 'local';
  private readonly fallback: ReplayStore;
  private readonly now: () => number;
  private readonly onFallback: (() => void) | undefined;
  /** `fallback`: this replica's own store, used under `onUnavailable: local` while the shared one is down. */
  constructor(store: SharedStore, options: { onUnavailable: 'fail-closed' | 'local'; fallback: ReplayStore; now?: () => number; onFallback?: () => void }) {
    this.store = store;
    this.onUnavailable = options.onUnavailable;
    this.now = options.now ?? Date.now;
    this.fallback = options.fallback;
    this.onFallback = options.onFallback;
  }
  async remember(jti: string, expiresAtSeconds: number): Promise<boolean> {
    const ttl = Math.max(1, Math.ceil(expiresAtSeconds * 1000 - this.now()));
    const key = this.store.key('jti', jti);
    try {
      const answer = await this.store.call((redis) => redis.set(key, '1', 'PX', ttl, 'NX'));
      return answer === 'OK';
    } catch {
      if (this.onUnavailable === 'fail-closed') throw new GuardError('shared_state_unavailable', { retryAfterSeconds: 1, detail: 'replay store unreachable' });
      this.onFallback?.();
      return this.fallback.remember(jti, expiresAtSeconds);
    }
  }
}
