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
import { createMemoryReplayStore, createSharedReplayStore, type FallbackLog, type ReplayStore } from '../state/replay-store.ts';
import { sealKv, sharedNonceKey, type SealedKv } from '../state/sealed-kv.ts';
import { createSecretCheck, SECRET_CHECK_EVERY_MS, type SecretCheckResult, type SecretMismatch } from '../state/secret-check.ts';

/**
 * The shared store as the app uses it: the sealed KV, plus what its users report through it
 * (`replayLog`: the replay store's `local` fallback) and what the admin may show of it
 * (`secretMismatch`: another replica writes with another `secretFile`).
 */
export interface SharedStore extends SealedKv {
  /** Where the replay store logs its `local` fallback (state/replay-store.ts). */
  readonly replayLog: FallbackLog;
  /**
   * While another replica on this store was lately seen with another `sharedState.secretFile`
   * (state/secret-check.ts): why (`trailing-whitespace`: the same bytes but for trailing newlines
   * or spaces), for /readyz and /status; undefined otherwise.
   */
  secretMismatch(): SecretMismatch | undefined;
  /** Runs the secret check now (at connect and every 30 s on its own); for tests. */
  checkSecret(): Promise<SecretCheckResult>;
}

/** Each distinct store warning at most this often (with the count of those held back). */
const STORE_WARN_EVERY_MS = 30_000;

/** A secret mismatch is logged at most this often while it lasts (each sighting is counted). */
const MISMATCH_LOG_EVERY_MS = 5 * 60_000;

const MISMATCH_CAUSES: Record<SecretMismatch, string> = {
  'trailing-whitespace':
    'the two secret files hold the same bytes but for a trailing newline (or space): secretFile is read as bytes, newline included; write it the same way on every replica (head -c 32 /dev/urandom, or printf without \\n, not echo)',
  different: 'the two secret files differ: a secret rotated on some replicas only, two Secrets, or another deployment on the same store and keyPrefix',
  unknown: 'the check key holds a value this version does not write: another cnfguard version, or another client of the store on this keyPrefix',
};

export function buildSharedStore(config: LoadedConfig, io: { metrics: Metrics; logger: Logger; now: () => number; tracing?: TracingSlot | undefined }): SharedStore | undefined {
  const shared = config.settings.sharedState;
  if (shared === undefined || config.sharedState === undefined) return undefined;
  const { metrics, logger, now } = io;
  // Every kind at 0 from the start (admin/series.ts makes the others).
  for (const kind of ['replica_unacked', 'secret_mismatch'] as const) metrics.sharedStateErrors.inc({ kind }, 0);
  // Per message: a flood of one kind of error does not hide another (an OOM behind a timeout).
  const warned = new Map<string, { at: number; held: number }>();
  const warn = (message: string, detail: Record<string, unknown>) => {
    const last = warned.get(message);
    if (last !== undefined && now() - last.at < STORE_WARN_EVERY_MS) {
      last.held++;
      return;
    }
    warned.set(message, { at: now(), held: 0 });
    logger.warn(last === undefined || last.held === 0 ? detail : { ...detail, heldBack: last.held }, message);
  };
  // The store's deadline never exceeds the AS's: a store that slow is no cache. Said, since `check` prints the configured value.
  const timeoutMs = Math.min(shared.timeoutMs, config.settings.introspection.timeoutMs);
  if (timeoutMs < shared.timeoutMs) {
    logger.warn({ configured: shared.timeoutMs, used: timeoutMs }, `sharedState.timeoutMs ${shared.timeoutMs} is more than introspection.timeoutMs: store calls use ${timeoutMs} ms`);
  }
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
    timeoutMs,
    onUp: (up) => {
      metrics.sharedStateUp?.set(up ? 1 : 0);
      if (up) void runSecretCheck();
    },
    onError: (kind) => metrics.sharedStateErrors.inc({ kind }),
    warn,
  });
  const inner = io.tracing === undefined ? redis : tracedStore(io.tracing, redis);
  // With tracing: each store call is a child span of the request that made it.
  const sealed = sealKv(inner, { secret: config.sharedState.secret, keyPrefix: shared.keyPrefix, onForged: () => metrics.sharedStateErrors.inc({ kind: 'forged' }) });

  const { keyPrefix } = shared;
  // On the untraced store: a check every 30 s is no request's child.
  const secretCheck = createSecretCheck({ kv: redis, keyPrefix, secret: config.sharedState.secret, now });
  let mismatchLoggedAt = -Infinity;
  async function runSecretCheck(): Promise<SecretCheckResult> {
    const result = await secretCheck.check();
    if (result.kind === 'mismatch') {
      metrics.sharedStateErrors.inc({ kind: 'secret_mismatch' });
      if (now() - mismatchLoggedAt >= MISMATCH_LOG_EVERY_MS) {
        mismatchLoggedAt = now();
        logger.error(
          { cause: result.cause, keyPrefix },
          `shared state: another replica uses this store with a different sharedState.secretFile. Replicas with different secrets never see each other's entries: each side introspects on its own, and a DPoP proof accepted on one side is accepted again on the other. Likely cause: ${MISMATCH_CAUSES[result.cause]}`,
        );
      }
    } else if (result.kind === 'lost') {
      logger.warn(
        { keyPrefix },
        'shared state store lost its data (restarted without persistence, flushed, evicted or failed over to a replica without it): its DPoP replay records are gone, so a proof accepted in the last proof lifetime can be accepted once more',
      );
    }
    return result;
  }
  let timer: NodeJS.Timeout | undefined;
  return {
    key: sealed.key,
    seal: sealed.seal,
    open: sealed.open,
    get up() {
      return sealed.up;
    },
    role: () => sealed.role(),
    get: (name) => sealed.get(name),
    set: (name, value, ttlMs) => sealed.set(name, value, ttlMs),
    setIfAbsent: (name, value, ttlMs) => sealed.setIfAbsent(name, value, ttlMs),
    connect() {
      sealed.connect();
      clearInterval(timer);
      // At connect (onUp) and then every interval while up: each side of a split sees the other's key.
      timer = setInterval(() => void (sealed.up ? runSecretCheck() : undefined), SECRET_CHECK_EVERY_MS).unref();
    },
    close() {
      clearInterval(timer);
      sealed.close();
    },
    replayLog: { warn: (detail, message) => logger.warn(detail, message), info: (detail, message) => logger.info(detail, message) },
    secretMismatch: () => secretCheck.mismatch(),
    checkSecret: runSecretCheck,
  };
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
export function buildDpopState(config: LoadedConfig, io: { store: SharedStore | undefined; metrics: Metrics; now: () => number }): DpopState {
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
      : createSharedReplayStore(store, { onUnavailable: shared.onUnavailable, fallback: local, now, onFallback: () => metrics.sharedStateErrors.inc({ kind: 'local_fallback' }), log: store.replayLog });
  const ownNonces = store === undefined ? viaPrimary?.nonces : undefined;
  const nonces =
    ownNonces ??
    createNonceSource({ rotationSeconds: settings.dpop.nonceRotationSeconds, now: seconds, ...(config.sharedState !== undefined && store !== undefined && { key: sharedNonceKey(config.sharedState.secret) }) });
  return { replayStore, nonces, ready: store === undefined ? viaPrimary?.ready : undefined };
}
