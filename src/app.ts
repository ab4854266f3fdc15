/**
 * Composition root: the only place that builds things. Everything stateful (logger, metrics
 * registry, token cache, introspection pool, clock, certificate reloader) is made here, or by the
 * builders in compose/ it calls, and passed down. What a config reload may change lives in one
 * `Runtime` object, swapped atomically; the named stages (start, stop, reload) are serve/lifecycle.ts.
 */
import type { AddressInfo } from 'node:net';
import { createMetrics, type Metrics } from './admin/metrics.ts';
import { initialiseSeries } from './admin/series.ts';
import { shownUrl, statusDocument } from './admin/status.ts';
import { usableCpus, workerCount } from './cluster.ts';
import { buildIntrospection } from './compose/introspection.ts';
import { createJwksDirectory } from './compose/jwks.ts';
import { buildValidator } from './compose/jwt.ts';
import { buildDpopState, buildSharedStore } from './compose/shared-state.ts';
import type { LoadedConfig } from './config/load.ts';
import type { TokenIntrospector } from './introspection/cache.ts';
import type { Introspect } from './introspection/client.ts';
import { createLogger, type Logger } from './log.ts';
import { createDpopCaches, signatureThreadFor, type SignatureThread } from './proof/dpop.ts';
import { buildRuntime } from './runtime.ts';
import { createAssertionKeyRing } from './assertion/keys.ts';
import type { Settings } from './config/schema.ts';
import { createLifecycle, type Lifecycle } from './serve/lifecycle.ts';
import { createListeners, type ServingState } from './serve/listeners.ts';
import type { TracingSlot } from './observe/tracing.ts';
import type { FetchJwks } from './validation/jwt.ts';
import type { TokenValidator } from './validation/validator.ts';

export interface AppDependencies {
  logger?: Logger;
  /** Milliseconds since the epoch. */
  now?: () => number;
  /** Replaces the HTTP introspection client (tests of the edges use the real one). */
  introspect?: Introspect;
  /** Replaces the HTTP JWKS fetch (jwt: configured). */
  fetchJwks?: FetchJwks;
  /** Process-level metrics (event loop, memory); off in tests that run many apps. */
  defaultMetrics?: boolean;
  /** Start the admin listener (cluster workers leave it to the primary). Default true. */
  admin?: boolean;
  /** Watch the TLS files for changes. Default true. */
  watchCertificates?: boolean;
  /**
   * Probe the AS once started, as `introspection.probeAtStartup` says (default true); false turns
   * it off whatever the config says (cluster workers but the first: one warning, not N).
   */
  probeIntrospection?: boolean;
  /** Where DPoP signatures are checked; default by {@link signatureThreadFor} over the usable CPUs and workers. */
  signatureThread?: SignatureThread;
}

export type { ReloadReport, StartedApp } from './serve/lifecycle.ts';

export interface App extends Lifecycle {
  readonly metrics: Metrics;
  readonly tokens: TokenIntrospector;
  readonly validator: TokenValidator;
  readonly logger: Logger;
}

/** The longest lifetime of any route's assertions: how long a replaced key stays published. */
function longestAssertionLifetime(settings: Settings): number {
  const top = settings.assertion?.lifetimeSeconds ?? 0;
  return Math.max(top, ...settings.routes.map((route) => (route.assertion === false ? 0 : (route.assertion?.lifetimeSeconds ?? top))));
}

/** Whether any route validates tokens by introspection (not `validation: jwt` everywhere). */
function usesIntrospection(settings: LoadedConfig['settings']): boolean {
  return settings.validation !== 'jwt' || settings.routes.some((route) => (route.validation ?? settings.validation) !== 'jwt');
}

/** Loads the OpenTelemetry SDK (only now, only with `tracing`) and starts exporting. */
async function startTracing(options: NonNullable<LoadedConfig['settings']['tracing']>): Promise<TracingSlot['current']> {
  const [{ createOtelTracer }, { VERSION }] = await Promise.all([import('./observe/otel.ts'), import('./version.ts')]);
  return createOtelTracer({ ...options, version: VERSION });
}

export function createApp(config: LoadedConfig, deps: AppDependencies = {}): App {
  const { settings } = config;
  const logger = deps.logger ?? createLogger(settings.logLevel, undefined, settings.limits.logBufferBytes);
  const now = deps.now ?? Date.now;
  const metrics = createMetrics({ defaultMetrics: deps.defaultMetrics ?? true, now, sharedState: settings.sharedState !== undefined, deprecatedNames: settings.admin.deprecatedMetrics });
  initialiseSeries(metrics, settings);
  // Traces (observe/tracing.ts): the slot exists only with `tracing`; the SDK is imported at start.
  const tracing: TracingSlot | undefined = settings.tracing === undefined ? undefined : { current: undefined };
  const io = { metrics, logger, now, tracing };
  const store = buildSharedStore(config, io);
  const jwks = createJwksDirectory(config, { ...io, fetchJwks: deps.fetchJwks });
  const { client, tokens } = buildIntrospection(config, { ...io, introspect: deps.introspect, store, jwks });
  const { validator } = buildValidator(config, { ...io, tokens, jwks });
  const dpop = buildDpopState(config, { store, metrics, now });
  // Signature checks go to the threadpool only when there is a CPU no event loop (worker) uses.
  const signatureThread = deps.signatureThread ?? signatureThreadFor(usableCpus(), workerCount(settings.workers));
  // Without publicOrigin, a DPoP htu may name only what the server certificate names, on this port (proof/origins.ts).
  let serverCertificate = config.tls.cert;
  const served = { certificate: () => serverCertificate, port: () => (listeners.listener.server.address() as AddressInfo | null)?.port };
  // The assertion keys: the current one, and after a SIGHUP key change the previous one for a lifetime.
  const assertionKeys = createAssertionKeyRing(now);
  assertionKeys.use(config.assertionKey, longestAssertionLifetime(settings));
  // What DPoP checks remember between proofs, kept across reloads.
  const runtimeDeps = { assertionKeys, validator, replayStore: dpop.replayStore, nonces: dpop.nonces, now, signatureThread, served, dpopCaches: createDpopCaches() };
  const state: ServingState = { runtime: buildRuntime(settings, runtimeDeps), current: settings, ready: false, draining: false, configSha256: config.sha256 };
  const sizes = {
    connections: () => listeners.connections.size,
    cacheEntries: () => ({ active: tokens.size, negative: tokens.negativeSize, jwt: validator.size ?? 0 }),
  };
  const startedAt = now();
  const listeners = createListeners({
    config,
    state,
    ...io,
    admin: deps.admin !== false,
    // A replica seen writing with another secretFile shares nothing with this one: said beside up/down.
    details: (): Record<string, string> => {
      if (store === undefined) return {};
      const mismatch = store.secretMismatch();
      return { shared_state: `${store.up ? 'up' : 'down'}${mismatch === undefined ? '' : ` (secret mismatch: ${mismatch})`}` };
    },
    status: () =>
      statusDocument({
        metrics,
        sizes,
        now,
        startedAt,
        config: () => ({ file: config.file, sha256: state.configSha256, settings: state.current }),
        ready: () => state.ready,
        introspectionUrl: usesIntrospection(settings) ? (client?.shownUrl ?? shownUrl(settings.introspection.url)) : undefined,
        ...(store !== undefined && { sharedState: () => ({ up: store.up, role: store.role(), secretMismatch: store.secretMismatch() ?? null }) }),
      }),
    jwks: () => (state.current.assertion === undefined ? undefined : assertionKeys.jwks()),
  });
  metrics.trackSizes(sizes);
  const lifecycle = createLifecycle({
    config,
    state,
    listeners,
    logger,
    metrics,
    runtimeDeps,
    probe: client !== undefined && settings.introspection.probeAtStartup && deps.probeIntrospection !== false && usesIntrospection(settings) ? client : undefined,
    beforeListen: async () => {
      if (tracing !== undefined && settings.tracing !== undefined) tracing.current = await startTracing(settings.tracing);
      // Not awaited past failure: an AS that is down at start only delays JWT validation (logged).
      await jwks.refreshAll();
      await dpop.ready; // a cluster worker's nonce key, before the first request
    },
    afterListen: () => store?.connect(),
    teardown: async () => {
      await listeners.forwarder.close();
      await client?.close();
      await jwks.close();
      store?.close();
      await tracing?.current?.shutdown();
    },
    onServerCertificate: (pem) => (serverCertificate = pem),
    // SIGHUP reads assertion.keyFile again; the previous key stays published for the old config's longest lifetime.
    onConfig: (next) => assertionKeys.use(next.assertionKey, longestAssertionLifetime(state.current)),
    watchCertificates: deps.watchCertificates ?? true,
    startedFields: { dpopSignatures: signatureThread },
  });
  return { ...lifecycle, metrics, tokens, validator, logger };
}
