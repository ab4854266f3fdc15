/**
 * Shared state, composed: one Redis/Valkey KV under the sealed envelope (the token tier and the
 * replay store sit on it), and DPoP's replay store and nonce source for this process: the shared
 * store's, the cluster primary's (workers without shared state), or this process's own.
 */
import cluster from 'node:cluster';
import type { Metrics } from '../admin/metrics.ts';
import type { LoadedConfig } from '../config/load.ts';
import type { Logger } from '../log.ts';
import { tracedStore, type TracingSlot } from '../observe/tracing.ts';
import { createNonceSource, type NonceSource } from '../proof/nonce.ts';
import { primaryStateOfWorker } from '../cluster-state.ts';
import type { Settings } from '../config/schema.ts';
import { hostPort } from '../config/shared-state-schema.ts';
import type { RedisTarget } from '../state/redis-client.ts';
import { RedisKv } from '../state/redis-kv.ts';
import { createMemoryReplayStore, createSharedReplayStore, type ReplayStore } from '../state/replay-store.ts';
import { sealKv, sharedNonceKey, type SealedKv } from '../state/sealed-kv.ts';

export function buildSharedStore(config: LoadedConfig, io: { metrics: Metrics; logger: Logger; now: () => number; tracing?: TracingSlot | undefined }): SealedKv | undefined {
  const shared = config.settings.sharedState;
  if (shared === undefined || config.sharedState === undefined) return undefined;
  const { metrics, logger, now } = io;
  let warnedAt = -Infinity;
  const redis = new RedisKv({
    target: redisTargetOf(shared, config.sharedState),
    password: config.sharedState.password,
    replayDurability: shared.replayDurability,
    ca: config.sharedState.ca,
    onRole: (role) => {
      for (const each of STORE_ROLES) metrics.sharedStateRole?.set({ role: each }, each === role ? 1 : 0);
      if (role !== 'primary') logger.warn({ role }, 'shared state store: no primary reachable');
      else logger.info({ role }, 'shared state store: primary reachable');
    },
    timeoutMs: Math.min(shared.timeoutMs, config.settings.introspection.timeoutMs),
    onUp: (up) => metrics.sharedStateUp?.set(up ? 1 : 0),
    onError: (kind) => metrics.sharedStateErrors.inc({ kind }),
    warn: (message, detail) => {
      if (now() - warnedAt < 30_000) return;
      warnedAt = now();
      logger.warn(detail, message);
    },
  });
  // With tracing: each store call is a child span of the request that made it.
  return sealKv(
    io.tracing === undefined ? redis : tracedStore(io.tracing, redis),
    { secret: config.sharedState.secret, keyPrefix: shared.keyPrefix, onForged: () => metrics.sharedStateErrors.inc({ kind: 'forged' }) },
  );
}

const STORE_ROLES = ['primary', 'failover', 'down'] as const;

/** Where the store is: `sharedState.url`, `.sentinel` or `.cluster` (exactly one, by the schema). */
export function redisTargetOf(shared: NonNullable<Settings['sharedState']>, material: { sentinelPassword?: string | undefined }): RedisTarget {
  if (shared.sentinel !== undefined) return { kind: 'sentinel', masterName: shared.sentinel.masterName, nodes: shared.sentinel.nodes.map(hostPort), sentinelPassword: material.sentinelPassword };
  if (shared.cluster !== undefined) return { kind: 'cluster', nodes: shared.cluster.nodes.map(hostPort) };
  return { kind: 'url', url: shared.url ?? '' };
}

export interface DpopState {
  replayStore: ReplayStore;
  nonces: NonceSource;
  /** Resolves once a cluster worker has the primary's nonce key (undefined elsewhere). */
  ready: Promise<void> | undefined;
}

/**
 * DPoP (RFC 9449): one replay store and one nonce source for the process, kept across reloads.
 * With shared state both are the replicas' own: jtis in the store, nonces from the shared secret.
 * Cluster workers without it: the primary's store and nonce key (src/cluster-state.ts), so N workers act as one process.
 */
export function buildDpopState(config: LoadedConfig, io: { store: SealedKv | undefined; metrics: Metrics; now: () => number }): DpopState {
  const { settings } = config;
  const { store, metrics, now } = io;
  const seconds = () => now() / 1000;
  const shared = settings.sharedState;
  // Workers: the primary's store, as this process's own (no shared state) or as the `local` fallback
  // of the shared one, so that N workers falling back still act as one process.
  const needsPrimary = store === undefined || shared?.onUnavailable === 'local';
  const viaPrimary = needsPrimary ? primaryStateOfWorker(cluster.isWorker, { rotationSeconds: settings.dpop.nonceRotationSeconds, now: seconds }) : undefined;
  const local = viaPrimary?.replayStore ?? createMemoryReplayStore({ maxEntries: settings.dpop.replayStoreMaxEntries, now: seconds });
  const replayStore =
    store === undefined || shared === undefined
      ? local
      : createSharedReplayStore(store, { onUnavailable: shared.onUnavailable, fallback: local, now, onFallback: () => metrics.sharedStateErrors.inc({ kind: 'local_fallback' }) });
  const ownNonces = store === undefined ? viaPrimary?.nonces : undefined;
  const nonces =
    ownNonces ??
    createNonceSource({ rotationSeconds: settings.dpop.nonceRotationSeconds, now: seconds, ...(config.sharedState !== undefined && store !== undefined && { key: sharedNonceKey(config.sharedState.secret) }) });
  return { replayStore, nonces, ready: store === undefined ? viaPrimary?.ready : undefined };
}
