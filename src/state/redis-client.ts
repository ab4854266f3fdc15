/**
 * The ioredis client for one of the three topologies `sharedState` names: one node (`url`), a
 * Sentinel deployment (`sentinel`: the primary asked of the sentinels and followed through
 * failovers) or a Redis Cluster (`cluster`: keys spread over hash slots). Every variant fails fast:
 * no offline queue, no retry per call, capped reconnect backoff (a store that comes back, or a
 * new primary, is used again without a restart).
 */
import { createRequire } from 'node:module';
import type { Cluster, Redis, RedisOptions } from 'ioredis';

export interface Node {
  host: string;
  port: number;
}

export type RedisTarget =
  | { kind: 'url'; url: string }
  | { kind: 'sentinel'; masterName: string; nodes: Node[]; sentinelPassword?: string | undefined }
  | { kind: 'cluster'; nodes: Node[] };

export interface RedisClientOptions {
  target: RedisTarget;
  /** The data nodes' password (with url it may be in the URL instead). */
  password?: string | undefined;
  /** PEM CA for rediss:// (else the system's trust). */
  ca?: string | undefined;
  timeoutMs: number;
}

/**
 * ioredis (a CommonJS package of ~40 modules) loads only when a config has `sharedState`: it is a
 * tenth of `cnfguard run`'s start-up otherwise spent for nothing.
 */
const requireLazily = createRequire(import.meta.url);
function ioredis(): { Redis: typeof Redis; Cluster: typeof Cluster } {
  return requireLazily('ioredis') as { Redis: typeof Redis; Cluster: typeof Cluster };
}

/**
 * The client. A Cluster is returned typed as its common command surface with Redis (get, set,
 * pipeline, wait, events): every command cnfguard sends names at most one key, so a Cluster takes
 * each as one node would.
 */
export function createRedisClient(options: RedisClientOptions): Redis {
  const { target, timeoutMs } = options;
  const { Redis: RedisClient, Cluster: ClusterClient } = ioredis();
  // Sentinel and Cluster: a new primary is usually there within seconds, so retry sooner.
  const capMs = target.kind === 'url' ? 2000 : 500;
  const retryStrategy = (times: number) => Math.min(50 * 2 ** Math.min(times, 6), capMs);
  const common: RedisOptions = {
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    commandTimeout: timeoutMs,
    connectTimeout: Math.max(1000, timeoutMs),
    retryStrategy,
    // A primary demoted by a failover answers writes with READONLY: reconnect, to the new one.
    reconnectOnError: (err) => (err.message.startsWith('READONLY') ? 1 : false),
    ...(options.password !== undefined && { password: options.password }),
  };
  if (target.kind === 'url') {
    const tls = target.url.startsWith('rediss:') ? { ...(options.ca !== undefined && { ca: options.ca }) } : undefined;
    return new RedisClient(target.url, { ...common, ...(tls !== undefined && { tls }) });
  }
  if (target.kind === 'sentinel') {
    return new RedisClient({
      ...common,
      sentinels: target.nodes,
      name: target.masterName,
      role: 'master',
      // Subscribes to the sentinels' +switch-master: a failover is followed at once, not at the next retry.
      failoverDetector: true,
      sentinelRetryStrategy: (times: number) => Math.min(50 * times, 500),
      ...(target.sentinelPassword !== undefined && { sentinelPassword: target.sentinelPassword }),
    });
  }
  const cluster = new ClusterClient(target.nodes, {
    lazyConnect: true,
    enableOfflineQueue: false,
    clusterRetryStrategy: retryStrategy,
    retryDelayOnFailover: 50,
    retryDelayOnClusterDown: 50,
    maxRedirections: 4,
    scaleReads: 'master',
    slotsRefreshTimeout: Math.max(1000, timeoutMs),
    redisOptions: { ...common, lazyConnect: false },
  });
  return cluster as unknown as Redis;
}
