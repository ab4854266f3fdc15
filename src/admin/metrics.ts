/**
 * cnfguard's metrics, on a registry of their own per app (no global collectors), so two apps in
 * one process (tests) and workers each count separately.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { IntrospectionOutcome } from '../introspection/client.ts';
import { createLastSeen, type LastSeen } from './last-seen.ts';
import { talliedCounter, type CounterTally } from './counter-tally.ts';
import { HistogramTally } from './histogram-tally.ts';

export { CounterTally } from './counter-tally.ts';
import { NODE_VERSION, VERSION } from '../version.ts';
import { droppedLogLines } from '../log.ts';

/** What the size gauges read when scraped (set once the app has built them). */
export interface SizeSources {
  /** Open TCP connections on the proxy listener, handshaking or not. */
  connections(): number;
  /** Entries per token cache: `active` and `negative` introspection answers, `jwt` validated JWTs. */
  cacheEntries(): Readonly<Record<'active' | 'negative' | 'jwt', number>>;
}

export interface Metrics {
  readonly registry: Registry;
  readonly requests: Counter<'decision' | 'reason' | 'route'>;
  /** Per request, `requests` by decision, reason and route, counted ahead of prom-client (CounterTally). */
  readonly requestTally: CounterTally<'decision' | 'reason' | 'route'>;
  /** Per request, `responses` by route and status. */
  readonly responseTally: CounterTally<'route' | 'status'>;
  /** Per allowed request, `verifiedRequests` by route and proof method(s). */
  readonly verifiedTally: CounterTally<'route' | 'method'>;
  /** Per cache hit, `cacheHits` by tier. */
  readonly cacheHitTally: CounterTally<'tier'>;
  /** Per validated token, `tokenValidations` by source and result. */
  readonly validationTally: CounterTally<'source' | 'result'>;
  readonly introspectionRequests: Counter<'outcome'>;
  readonly cacheHits: Counter<'tier'>;
  /** Only with `sharedState` set: without a store, a 0 would read as "store down". */
  readonly sharedStateUp: Gauge | undefined;
  readonly sharedStateErrors: Counter<'kind'>;
  readonly sharedStateRole: Gauge<'role'> | undefined;
  readonly cacheMisses: Counter;
  readonly cacheStale: Counter;
  readonly circuitOpen: Gauge;
  readonly introspectionDuration: Histogram;
  /** Per forwarded request, by route, observed ahead of prom-client (HistogramTally). */
  readonly upstreamDuration: HistogramTally;
  readonly certificateReloads: Counter<'result'>;
  /** Sets `cnfguard_certificate_not_after_timestamp_seconds` (and the deprecated `…_not_after_seconds` while exported). */
  readonly certificateNotAfter: { set(seconds: number): void };
  readonly configReloads: Counter<'result'>;
  /** Which validation judged a token (jwt, introspection) and its result (ok or the reason id). */
  readonly tokenValidations: Counter<'source' | 'result'>;
  readonly jwksFetches: Counter<'result'>;
  /** Requests let through on a verified binding, by the proof methods that verified it (mtls, dpop, dpop+mtls). */
  readonly verifiedRequests: Counter<'route' | 'method'>;
  /** 1, labelled with the version and the Node running it; one series per process (not summed over workers). */
  readonly buildInfo: Gauge<'version' | 'node_version'>;
  /** Responses by route and HTTP status, counted once per request when its response is over. */
  readonly responses: Counter<'route' | 'status'>;
  /** From the request's arrival to the end of its response (what the client waits), by route; observed ahead of prom-client (HistogramTally). */
  readonly requestDuration: HistogramTally;
  readonly openConnections: Gauge;
  /** Log lines this process dropped while stdout took none and its buffer was full (log.ts). */
  readonly logLinesDropped: Counter;
  /** TLS handshakes on the proxy listener that failed (or were abandoned) before any request. */
  readonly tlsHandshakeFailures: Counter;
  readonly cacheEntries: Gauge<'cache'>;
  /** The AS (`as`), the JWKS (`jwks`) and each route's upstream (`upstream:<route>`) as last seen in traffic, for /status. */
  readonly lastSeen: LastSeen;
  observeIntrospection(outcome: IntrospectionOutcome, seconds: number): void;
  /** Where the connection and cache gauges read from at scrape time (until set they read 0). */
  trackSizes(sources: SizeSources): void;
}

export interface MetricsOptions {
  /** Process-level metrics (event loop, memory); default true. */
  defaultMetrics?: boolean;
  /** Whether `sharedState` is configured: `cnfguard_shared_state_up` exists only then. Default false. */
  sharedState?: boolean;
  /** The clock of `lastSeen`; default Date.now. */
  now?: () => number;
  /** Export the deprecated names beside their conventional replacements (DEPRECATED_METRICS); default true. */
  deprecatedNames?: boolean;
}

/**
 * Names kept for dashboards and alerts written against them, each with what replaces it. They are
 * the only names `promtool check metrics` flags; `admin.deprecatedMetrics: false` drops them.
 */
export const DEPRECATED_METRICS: Readonly<Record<string, string>> = Object.freeze({
  cnfguard_certificate_not_after_seconds: 'cnfguard_certificate_not_after_timestamp_seconds',
  // prom-client's default collectors: gauges named like counters; the per-type gauge sums to them.
  cnfguard_nodejs_active_handles_total: 'sum without (type) (cnfguard_nodejs_active_handles)',
  cnfguard_nodejs_active_requests_total: 'sum without (type) (cnfguard_nodejs_active_requests)',
  cnfguard_nodejs_active_resources_total: 'sum without (type) (cnfguard_nodejs_active_resources)',
});

const NOT_ASKED: ReadonlySet<IntrospectionOutcome> = new Set(['circuit_open', 'over_peer_budget', 'over_total_budget']);
/** Outcomes where the AS answered as an AS should (the token active, inactive, or refused as a token). */
const ANSWERED: ReadonlySet<IntrospectionOutcome> = new Set(['active', 'inactive', 'refused']);

export function createMetrics(options: MetricsOptions = {}): Metrics {
  const registry = new Registry();
  const deprecated = options.deprecatedNames !== false;
  if (options.defaultMetrics !== false) {
    collectDefaultMetrics({ register: registry, prefix: 'cnfguard_' });
    if (!deprecated) for (const name of Object.keys(DEPRECATED_METRICS)) registry.removeSingleMetric(name);
  }
  const registers = [registry];
  const notAfter = [
    new Gauge({ name: 'cnfguard_certificate_not_after_timestamp_seconds', help: 'Expiry (notAfter, seconds since the epoch) of the served certificate', registers, aggregator: 'min' }),
    ...(deprecated
      ? [new Gauge({ name: 'cnfguard_certificate_not_after_seconds', help: 'Deprecated: cnfguard_certificate_not_after_timestamp_seconds', registers, aggregator: 'min' })]
      : []),
  ];
  const { counter: requests, tally: requestTally } = talliedCounter({
    name: 'cnfguard_requests_total',
    help: 'Requests by decision (allow, deny, would_deny, error, aborted), reason id and route',
    labelNames: ['decision', 'reason', 'route'] as const,
    registers,
  });
  const responses = talliedCounter({
    name: 'cnfguard_responses_total',
    help: 'Responses by route and HTTP status code (499: the client went away first)',
    labelNames: ['route', 'status'] as const,
    registers,
  });
  const verified = talliedCounter({
    name: 'cnfguard_verified_requests_total',
    help: 'Requests allowed on a verified binding, by route and the proof methods that verified it (mtls, dpop, dpop+mtls)',
    labelNames: ['route', 'method'] as const,
    registers,
  });
  const cacheHits = talliedCounter({ name: 'cnfguard_token_cache_hits_total', help: 'Token lookups answered from a cache: this replica\'s (local) or the shared store (shared)', labelNames: ['tier'] as const, registers });
  const validations = talliedCounter({
    name: 'cnfguard_token_validations_total',
    help: 'Token validations by source (jwt, introspection) and result (ok or the reason id)',
    labelNames: ['source', 'result'] as const,
    registers,
  });
  const introspectionRequests = new Counter({
    name: 'cnfguard_introspection_requests_total',
    help: 'Introspection calls to the authorization server by outcome',
    labelNames: ['outcome'] as const,
    registers,
  });
  const introspectionDuration = new Histogram({
    name: 'cnfguard_introspection_duration_seconds',
    help: 'Introspection call latency',
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers,
  });
  let sizes: SizeSources | undefined;
  let loggedDrops = 0;
  const buildInfo = new Gauge({
    name: 'cnfguard_build_info',
    help: 'Always 1; the labels say which cnfguard and Node run',
    labelNames: ['version', 'node_version'] as const,
    registers,
    // Every worker reports the same series: the cluster shows one, not the number of workers.
    aggregator: 'first',
  });
  buildInfo.set({ version: VERSION, node_version: NODE_VERSION }, 1);
  const lastSeen = createLastSeen(options.now);
  return {
    registry,
    lastSeen,
    buildInfo,
    requestTally,
    responseTally: responses.tally,
    verifiedTally: verified.tally,
    cacheHitTally: cacheHits.tally,
    validationTally: validations.tally,
    responses: responses.counter,
    requestDuration: new HistogramTally({
      name: 'cnfguard_request_duration_seconds',
      help: 'End to end: from a request reaching cnfguard to the end of its response, by route',
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    }),
    openConnections: new Gauge({
      name: 'cnfguard_open_connections',
      help: 'TCP connections open on the proxy listener (handshaking or not)',
      registers,
      collect() {
        this.set(sizes?.connections() ?? 0);
      },
    }),
    tlsHandshakeFailures: new Counter({
      name: 'cnfguard_tls_handshake_failures_total',
      help: 'TLS handshakes on the proxy listener that failed or were abandoned before any request (plain HTTP, an untrusted server certificate, no common protocol or cipher, a handshake timeout)',
      registers,
    }),
    logLinesDropped: new Counter({
      name: 'cnfguard_log_lines_dropped_total',
      help: 'Log lines dropped because stdout took none while the log buffer (limits.logBufferBytes) was full',
      registers,
      collect() {
        // The process's own count (one logger per process), caught up at each scrape.
        const dropped = droppedLogLines();
        if (dropped > loggedDrops) this.inc(dropped - loggedDrops);
        loggedDrops = dropped;
      },
    }),
    cacheEntries: new Gauge({
      name: 'cnfguard_token_cache_entries',
      help: 'Entries held per token cache: active and negative introspection answers, validated JWTs (jwt)',
      labelNames: ['cache'] as const,
      registers,
      collect() {
        const entries = sizes?.cacheEntries() ?? { active: 0, negative: 0, jwt: 0 };
        for (const [cache, count] of Object.entries(entries)) this.set({ cache }, count);
      },
    }),
    trackSizes(sources) {
      sizes = sources;
    },
    requests,
    introspectionRequests,
    introspectionDuration,
    cacheHits: cacheHits.counter,
    sharedStateUp: options.sharedState === true ? new Gauge({ name: 'cnfguard_shared_state_up', help: '1 while the shared state store is connected (sharedState set)', registers, aggregator: 'min' }) : undefined,
    sharedStateErrors: new Counter({
      name: 'cnfguard_shared_state_errors_total',
      help: 'Shared state failures by kind (timeout, unavailable, replica_unacked, forged, local_fallback, secret_mismatch)',
      labelNames: ['kind'] as const,
      registers,
    }),
    sharedStateRole: options.sharedState !== true ? undefined : new Gauge({
      name: 'cnfguard_shared_state_role',
      help: 'What the shared state store is doing, one series per role set to 1: primary (reachable), failover (Sentinel or Cluster finding a new primary), down (sharedState set)',
      labelNames: ['role'] as const,
      registers,
      aggregator: 'max',
    }),
    cacheMisses: new Counter({ name: 'cnfguard_token_cache_misses_total', help: 'Token lookups this replica\'s cache could not answer (the shared store or the authorization server did)', registers }),
    cacheStale: new Counter({ name: 'cnfguard_token_cache_stale_total', help: 'Expired active answers served while the AS failed (staleIfErrorSeconds)', registers }),
    circuitOpen: new Gauge({ name: 'cnfguard_introspection_circuit_open', help: '1 while the introspection circuit breaker is open or probing', registers, aggregator: 'max' }),
    upstreamDuration: new HistogramTally({
      name: 'cnfguard_upstream_duration_seconds',
      help: 'Time from forwarding a request to the upstream response headers',
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    }),
    certificateReloads: new Counter({
      name: 'cnfguard_cert_reload_total',
      help: 'Certificate reload attempts by result (success, failure)',
      labelNames: ['result'] as const,
      registers,
    }),
    certificateNotAfter: {
      set(seconds) {
        for (const gauge of notAfter) gauge.set(seconds);
      },
    },
    configReloads: new Counter({
      name: 'cnfguard_config_reload_total',
      help: 'Config reloads by result (applied, rejected)',
      labelNames: ['result'] as const,
      registers,
      // Under workers every worker applies (or is told of) the same reload: one reload, not one per worker.
      aggregator: 'max',
    }),
    tokenValidations: validations.counter,
    jwksFetches: new Counter({ name: 'cnfguard_jwks_fetches_total', help: 'JWKS fetches by result (success, failure)', labelNames: ['result'] as const, registers }),
    verifiedRequests: verified.counter,
    observeIntrospection(outcome, seconds) {
      introspectionRequests.inc({ outcome });
      // Outcomes where the AS was not asked (breaker, budgets) say nothing about it.
      if (!NOT_ASKED.has(outcome)) lastSeen.record('as', ANSWERED.has(outcome), outcome);
      introspectionDuration.observe(seconds);
    },
  };
}
