/**
 * The key-value store on Redis or Valkey (one node, Sentinel or Cluster: redis-client.ts) with a
 * per-call deadline, so a slow or dead store never holds a request.
 *
 * Keys and Cluster: every command names one key (GET, SET, SET NX PX), and WAIT names none, so
 * nothing spans hash slots; a replay marker and the token tier's entries are independent keys
 * that may live on any primary (no hash tags needed: nothing must share a slot).
 *
 * `replayDurability: 'replica'`: `setIfAbsent` (the replay stores' one write: DPoP jti, signature
 * nonces) sends `SET key value NX PX ttl` and `WAIT 1 ms` in one pipeline on connections of their
 * own (WAIT blocks the connection it runs on; token reads must not queue behind it; in a Cluster
 * the pipeline goes to the node of the key's slot, so WAIT asks the replicas of that node). The
 * write counts only when a replica acknowledged it; otherwise it rejects (`unreachable`) and the
 * caller follows `onUnavailable`. A marker the primary took but no replica has may be forgotten
 * by a failover, so it is never reported as stored.
 */
import type { Redis } from 'ioredis';
import { StoreUnavailableError, type KeyValueStore, type StoreRole } from './kv.ts';
import { createRedisClient, type RedisTarget } from './redis-client.ts';

export type RedisErrorKind = 'timeout' | 'unavailable' | 'replica_unacked';

export interface RedisKvOptions {
  /** One node; or `target` for Sentinel or Cluster. */
  url?: string | undefined;
  target?: RedisTarget | undefined;
  password?: string | undefined;
  /** PEM CA for rediss:// (else the system's trust). */
  ca?: string | undefined;
  timeoutMs: number;
  /** `replica`: setIfAbsent counts once a replica acknowledged it (see the header). */
  replayDurability?: 'primary' | 'replica' | undefined;
  onUp?: (up: boolean) => void;
  /** Each change of {@link RedisKv.role}. */
  onRole?: (role: StoreRole) => void;
  /** One per failed call. */
  onError?: (kind: RedisErrorKind) => void;
  /** Rate-limited by the caller; never gets a token or a secret. */
  warn?: (message: string, detail: Record<string, unknown>) => void;
  /** Milliseconds; for the failover window. */
  now?: () => number;
}

/** Redis needs a whole, positive PX. */
const px = (ttlMs: number): number => Math.max(1, Math.ceil(ttlMs));

/**
 * Connections for durable writes: a WAIT holds its connection until a replica answers, and Redis
 * runs one connection's commands in order, so one connection would allow one durable write per
 * replica round trip. Concurrent WAITs on several connections are answered by one acknowledgement.
 */
const DURABLE_CONNECTIONS = 4;

/** How long a Sentinel or Cluster store that was up counts as failing over before it counts as down. */
export const FAILOVER_WINDOW_MS = 30_000;

/** How soon a client ioredis ended on its own is connected again (see RedisKv.restartEnded). */
const RESTART_ENDED_MS = 100;

export class RedisKv implements KeyValueStore {
  /** The client (a Cluster, with `target.kind` 'cluster', behind the same command surface). */
  readonly redis: Redis;
  /** The connections durable writes and their WAIT run on (replayDurability 'replica'), used in turn. */
  private readonly durable: Redis[];
  private nextDurable = 0;
  readonly timeoutMs: number;
  private readonly options: RedisKvOptions;
  private readonly highlyAvailable: boolean;
  private readonly now: () => number;
  private isUp = false;
  private everUp = false;
  private lostAt = -Infinity;
  private lastRole: StoreRole = 'down';
  private roleTimer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(options: RedisKvOptions) {
    this.options = options;
    this.timeoutMs = options.timeoutMs;
    this.now = options.now ?? Date.now;
    const target: RedisTarget = options.target ?? { kind: 'url', url: options.url ?? '' };
    this.highlyAvailable = target.kind !== 'url';
    this.redis = createRedisClient({ target, password: options.password, ca: options.ca, timeoutMs: options.timeoutMs });
    this.durable = options.replayDurability === 'replica' ? Array.from({ length: DURABLE_CONNECTIONS }, () => this.redis.duplicate()) : [];
    this.redis.on('ready', () => this.setUp(true));
    this.redis.on('close', () => this.setUp(false));
    this.redis.on('end', () => {
      this.setUp(false);
      this.restartEnded(this.redis);
    });
    this.redis.on('error', (err: Error) => {
      this.setUp(false);
      options.warn?.('shared state store error', { error: err.message });
    });
    for (const connection of this.durable) {
      connection.on('error', () => undefined);
      connection.on('end', () => this.restartEnded(connection));
    }
  }

  /**
   * ioredis ends a client (`end`: no retry ever again) when told to, which only close() does here,
   * and also when a failover's disconnect lands while a connect is in flight: the Sentinel
   * connector's `failoverDetector` closes the connector, the pending connect then fails and the
   * client is set to `end` (ioredis Redis.connect). One of four replicas in the Sentinel test once
   * stayed down for 30 s after a failover, its last logged word the old primary's ECONNREFUSED,
   * which fits. Such a client is connected again; its retries (redis-client.ts) take over from there.
   */
  private restartEnded(connection: Redis): void {
    if (this.closed) return;
    setTimeout(() => {
      if (this.closed || connection.status !== 'end') return;
      this.options.warn?.('shared state store client ended on its own: connecting again', {});
      connection.connect().catch(() => undefined);
    }, RESTART_ENDED_MS).unref();
  }

  get up(): boolean {
    return this.isUp;
  }

  /**
   * What the store is doing: `primary` (a primary reachable), `failover` (Sentinel or Cluster, up
   * before, lost less than {@link FAILOVER_WINDOW_MS} ago: a new primary is being found and
   * followed), `down` (otherwise).
   */
  role(): StoreRole {
    if (this.isUp) return 'primary';
    return this.highlyAvailable && this.everUp && this.now() - this.lostAt < FAILOVER_WINDOW_MS ? 'failover' : 'down';
  }

  private setUp(up: boolean): void {
    if (up === this.isUp) return;
    this.isUp = up;
    if (up) this.everUp = true;
    else this.lostAt = this.now();
    this.options.onUp?.(up);
    this.reportRole();
  }

  private reportRole(): void {
    const role = this.role();
    clearTimeout(this.roleTimer);
    // `failover` turns into `down` when the window passes with no primary.
    if (role === 'failover') this.roleTimer = setTimeout(() => this.reportRole(), FAILOVER_WINDOW_MS).unref();
    if (role === this.lastRole) return;
    this.lastRole = role;
    this.options.onRole?.(role);
  }

  /** Starts connecting; never waits and never fails (the store may come up later). */
  connect(): void {
    this.options.onUp?.(false);
    this.options.onRole?.('down');
    this.redis.connect().catch(() => undefined);
    for (const connection of this.durable) connection.connect().catch(() => undefined);
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.roleTimer);
    this.redis.disconnect();
    for (const connection of this.durable) connection.disconnect();
  }

  async get(key: string): Promise<string | undefined> {
    return (await this.call((redis) => redis.get(key))) ?? undefined;
  }

  async set(key: string, value: string, ttlMs: number): Promise<void> {
    await this.call((redis) => redis.set(key, value, 'PX', px(ttlMs)));
  }

  async setIfAbsent(key: string, value: string, ttlMs: number): Promise<boolean> {
    const durable = this.durable[this.nextDurable++ % Math.max(1, this.durable.length)];
    if (durable === undefined) return (await this.call((redis) => redis.set(key, value, 'PX', px(ttlMs), 'NX'))) === 'OK';
    // WAIT's own bound under the call's deadline (0 would be "forever").
    const waitMs = Math.max(1, Math.floor(this.timeoutMs * 0.8));
    const replies = await this.call(() => durable.pipeline().set(key, value, 'PX', px(ttlMs), 'NX').wait(1, waitMs).exec());
    const [written, acknowledged] = replies ?? [];
    if (written?.[0] != null) throw this.failed(written[0]);
    if (written?.[1] !== 'OK') return false; // seen before: a replay, whatever its replication
    if (acknowledged?.[0] == null && Number(acknowledged?.[1]) >= 1) return true;
    this.options.onError?.('replica_unacked');
    this.options.warn?.('no replica acknowledged a replay-store write in time (replayDurability: replica)', { waitMs });
    throw new StoreUnavailableError('unreachable', `no replica acknowledged the replay-store write within ${waitMs} ms`);
  }

  private failed(err: Error): Error {
    this.options.onError?.('unavailable');
    this.refused(err);
    return err;
  }

  /**
   * A call a connected store refused or did not answer in time: logged (rate-limited by the
   * caller), since the counter alone does not say why (`OOM command not allowed when used memory >
   * 'maxmemory'` from a full store answers every replay write, so every DPoP request, with 503).
   * Calls made while the store is down fail without a word here: its role changes are logged.
   * Redis error messages name no key or value.
   */
  private refused(err: Error): void {
    if (!this.isUp) return;
    const error = err.message.slice(0, 200);
    const full = error.startsWith('OOM');
    this.options.warn?.(full ? 'shared state store is full (maxmemory reached): it refuses writes' : 'shared state store call failed', {
      error,
      ...(full && { check: "the store's maxmemory: raise it (an evicting maxmemory-policy would drop DPoP replay records, which lets proofs be replayed)" }),
    });
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
      this.refused(err as Error);
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }
}
