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
import { RedisKv } from '../state/redis-kv.ts';
import { createMemoryReplayStore, createSharedReplayStore, type ReplayStore } from '../state/replay-store.ts';
import { sealKv, sharedNonceKey, type SealedKv } from '../state/sealed-kv.ts';

export function buildSharedStore(config: LoadedConfig, io: { metrics: Metrics; logger: Logger; now: () => number; tracing?: TracingSlot | undefined }): SealedKv | undefined {
  const shared = config.settings.sharedState;
  if (shared === undefined || config.sharedState === undefined) return undefined;
  const { metrics, logger, now } = io;
  let warnedAt = -Infinity;
  const redis = new RedisKv({
    url: shared.url,
    ca: config.sharedState.ca,
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
  const viaPrimary = store === undefined ? primaryStateOfWorker(cluster.isWorker, { rotationSeconds: settings.dpop.nonceRotationSeconds, now: seconds }) : undefined;
  const local = createMemoryReplayStore({ maxEntries: settings.dpop.replayStoreMaxEntries, now: seconds });
  const shared = settings.sharedState;
  const replayStore =
    store === undefined || shared === undefined
      ? (viaPrimary?.replayStore ?? local)
      : createSharedReplayStore(store, { onUnavailable: shared.onUnavailable, fallback: local, now, onFallback: () => metrics.sharedStateErrors.inc({ kind: 'local_fallback' }) });
  const nonces =
    viaPrimary?.nonces ??
    createNonceSource({ rotationSeconds: settings.dpop.nonceRotationSeconds, now: seconds, ...(config.sharedState !== undefined && store !== undefined && { key: sharedNonceKey(config.sharedState.secret) }) });
  return { replayStore, nonces, ready: viaPrimary?.ready };
}
