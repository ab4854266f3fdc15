/**
 * The key-value store on Redis or Valkey: one ioredis client and a per-call deadline, so a slow or
 * dead store never holds a request. ioredis because it is maintained, speaks Cluster and Sentinel,
 * and has what failing fast needs: `commandTimeout`, `enableOfflineQueue: false`,
 * `maxRetriesPerRequest` and a `retryStrategy` for capped reconnect backoff (a store that comes
 * back is used again without a restart).
 */
import { createRequire } from 'node:module';
import type { Redis } from 'ioredis';
import type { KeyValueStore } from './kv.ts';

export type RedisErrorKind = 'timeout' | 'unavailable';

export interface RedisKvOptions {
  url: string;
  /** PEM CA for rediss:// (else the system's trust). */
  ca?: string | undefined;
  timeoutMs: number;
  onUp?: (up: boolean) => void;
  /** One per failed call. */
  onError?: (kind: RedisErrorKind) => void;
  /** Rate-limited by the caller; never gets a token or a secret. */
  warn?: (message: string, detail: Record<string, unknown>) => void;
}

/**
 * ioredis (a CommonJS package of ~40 modules) loads only when a config has `sharedState`: it is a
 * tenth of `cnfguard run`'s start-up otherwise spent for nothing.
 */
const requireLazily = createRequire(import.meta.url);
function redisClass(): typeof Redis {
  return (requireLazily('ioredis') as { Redis: typeof Redis }).Redis;
}

/** Redis needs a whole, positive PX. */
const px = (ttlMs: number): number => Math.max(1, Math.ceil(ttlMs));

export class RedisKv implements KeyValueStore {
  readonly redis: Redis;
  readonly timeoutMs: number;
  private readonly options: RedisKvOptions;
  private isUp = false;

  constructor(options: RedisKvOptions) {
    this.options = options;
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

  async get(key: string): Promise<string | undefined> {
    return (await this.call((redis) => redis.get(key))) ?? undefined;
  }

  async set(key: string, value: string, ttlMs: number): Promise<void> {
    await this.call((redis) => redis.set(key, value, 'PX', px(ttlMs)));
  }

  async setIfAbsent(key: string, value: string, ttlMs: number): Promise<boolean> {
    return (await this.call((redis) => redis.set(key, value, 'PX', px(ttlMs), 'NX'))) === 'OK';
  }

  /** Runs one command under the per-call deadline; rejects (counted) on timeout or store error. */
  private async call<T>(command: (redis: Redis) => Promise<T>): Promise<T> {
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
