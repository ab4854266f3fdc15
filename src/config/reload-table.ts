/**
 * What a SIGHUP reload does with each config key: `live` keys take their new value at once,
 * `restart` keys keep the value the process started with (and the reload report names them).
 * This table is the only place that says so: the reload applies from it and reports from it, and a
 * unit test fails when a schema key is missing here.
 */
import { isDeepStrictEqual } from 'node:util';
import type { Settings } from './schema.ts';

/** Live, but a restart is reported when `restartIf(started, next)` holds. */
export interface LiveUnless {
  readonly restartIf: (started: Settings, next: Settings) => boolean;
  /** The paths to report then (default: the key's own), when the change can be elsewhere (a route's). */
  readonly changedAt?: (next: Settings) => string[];
  /** What runs until the restart (the effective settings are a copy): what was started, as /config then shows. */
  readonly keepStarted?: (effective: Settings, started: Settings) => void;
}
export type ReloadRule = 'live' | 'restart' | LiveUnless | ReloadTable;
export interface ReloadTable {
  readonly [key: string]: ReloadRule;
}

/** Whether any route maps claims to headers: then introspection answers keep their claims. */
export function mapsClaims(settings: Settings): boolean {
  return Object.keys(settings.claimHeaders).length > 0 || settings.routes.some((route) => Object.keys(route.claimHeaders ?? {}).length > 0);
}

export const RELOAD_TABLE = {
  // Listeners and the process model are set up once.
  listen: 'restart',
  admin: 'restart',
  workers: 'restart',
  // The file names; the files' contents are reloaded live by the certificate reloader.
  tls: 'restart',
  introspection: {
    // The AS client, its cache and its breaker are built at start…
    url: 'restart',
    clientId: 'restart',
    clientSecret: 'restart',
    clientSecretFile: 'restart',
    authMethod: 'restart',
    ca: 'restart',
    cert: 'restart',
    key: 'restart',
    timeoutMs: 'restart',
    maxAnswerBytes: 'restart',
    staleIfErrorSeconds: 'restart',
    // Read once, right after start: a reload has nothing to apply.
    probeAtStartup: 'live',
    circuitBreaker: 'restart',
    cache: 'restart',
    budget: 'restart',
    // …the issuer check is route policy (and signed answers' iss, built at start: see below).
    issuer: 'live',
    // Signed answers (RFC 9701): the verifier and its JWKS cache are built with the client.
    responseFormat: 'restart',
    jwksUri: 'restart',
    signingAlgorithms: 'restart',
  },
  // The JWKS cache and the verifier are built at start.
  jwt: 'restart',
  // Route policy, rebuilt and swapped atomically.
  validation: 'live',
  paths: 'live',
  methods: 'live',
  publicOrigin: 'live',
  upstreamHttp2: 'live',
  dpop: {
    // Read by the proof check each time the pipeline is rebuilt…
    algorithms: 'live',
    proofMaxAgeSeconds: 'live',
    clockSkewSeconds: 'live',
    nonce: 'live',
    // …the nonce source and the replay store are built at start.
    nonceRotationSeconds: 'restart',
    replayStoreMaxEntries: 'restart',
  },
  // Read by the signature check each time the pipeline is rebuilt.
  httpsig: 'live',
  upstream: 'live',
  binding: 'live',
  scopes: 'live',
  audience: 'live',
  stripAuthorization: 'live',
  // Introspection answers keep their claims only if some mapping was configured at start: the
  // first mapping (top-level or a route's) waits for a restart, and none applies until then.
  claimHeaders: {
    restartIf: (started, next) => mapsClaims(next) && !mapsClaims(started),
    changedAt: (next) => [...(Object.keys(next.claimHeaders).length > 0 ? ['claimHeaders'] : []), ...next.routes.flatMap((route, i) => (Object.keys(route.claimHeaders ?? {}).length > 0 ? [`routes[${i}].claimHeaders`] : []))],
    keepStarted: (effective, started) => {
      effective.claimHeaders = started.claimHeaders;
      effective.routes = effective.routes.map((route) => ({ ...route, claimHeaders: undefined }));
    },
  },
  resource: 'live',
  authorizationServers: 'live',
  routes: 'live',
  cnf: 'live',
  errors: 'live',
  headers: 'live',
  upstreamTimeoutMs: 'live',
  maxBodyBytes: 'live',
  // Step-up is route policy, read per request.
  stepUp: 'live',
  // The signer follows each reload: the key file is read again (the previous key stays published for
  // one lifetime), header, issuer, audience and lifetime apply to new assertions.
  assertion: 'live',
  limits: {
    // Read per request by the pipeline.
    formBodyBytes: 'live',
    urlBytes: 'live',
    // The budget is one object for the process; the TLS and HTTP/2 options are fixed when the listener is made.
    bufferedBodyBytes: 'restart',
    handshakeTimeoutMs: 'restart',
    http2MaxConcurrentStreams: 'restart',
    http2PingTimeoutMs: 'restart',
    // The log's destination is made once, when the process starts.
    logBufferBytes: 'restart',
    // Fixed in each connection's HTTP parser when it is accepted (Node drops header lines past it).
    headerBytes: 'restart',
    headerCount: 'restart',
    // Properties of the running server, set again on reload (checked at most once a second).
    headersTimeoutMs: 'live',
    requestTimeoutMs: 'live',
    keepAliveTimeoutMs: 'live',
    maxConnections: 'live',
  },
  trustedProxies: 'live',
  shutdownGraceSeconds: 'live',
  logLevel: 'live',
  decisionApi: 'restart',
  // The connection and its secret are made at start (a rewritten secret file is reported by the app).
  // One rule for the whole section (a table would turn an absent section into an object):
  // url, sentinel, cluster and passwordFile are where the connection goes, asked at start (the
  // primary the sentinels or the cluster point to is then followed live, without a reload);
  // replayDurability is built into the replay store, which lives as long as the process.
  sharedState: 'restart',
  // The exporter and the SDK are loaded at start, only when tracing is set.
  tracing: 'restart',
} as const satisfies Record<keyof Settings, ReloadRule>;

export interface Reconciled {
  /** The settings to run with now: the new file's live values, the started values elsewhere. */
  effective: Settings;
  /** Dotted paths of changed keys that take effect only after a restart. */
  restartRequired: string[];
}

function isTable(rule: ReloadRule): rule is ReloadTable {
  return typeof rule === 'object' && !('restartIf' in rule);
}

function walk(
  table: ReloadTable,
  started: Record<string, unknown>,
  next: Record<string, unknown>,
  prefix: string,
  conditions: { startedSettings: Settings; nextSettings: Settings; restartRequired: string[]; keepStarted: ((effective: Settings, started: Settings) => void)[] },
): Record<string, unknown> {
  const effective: Record<string, unknown> = { ...next };
  for (const [key, rule] of Object.entries(table)) {
    const path = `${prefix}${key}`;
    if (isTable(rule)) {
      effective[key] = walk(rule, (started[key] ?? {}) as Record<string, unknown>, (next[key] ?? {}) as Record<string, unknown>, `${path}.`, conditions);
      continue;
    }
    if (rule === 'live') continue;
    if (rule === 'restart') {
      if (!isDeepStrictEqual(started[key], next[key])) conditions.restartRequired.push(path);
      effective[key] = started[key];
      continue;
    }
    if (!rule.restartIf(conditions.startedSettings, conditions.nextSettings)) continue;
    conditions.restartRequired.push(...(rule.changedAt?.(conditions.nextSettings) ?? [path]));
    if (rule.keepStarted !== undefined) conditions.keepStarted.push(rule.keepStarted);
  }
  return effective;
}

/** Applies the table to a reload: what runs from now on, and what waits for a restart. */
export function reconcileReload(started: Settings, next: Settings): Reconciled {
  const restartRequired: string[] = [];
  const keepStarted: ((effective: Settings, started: Settings) => void)[] = [];
  const effective = walk(RELOAD_TABLE, started as unknown as Record<string, unknown>, next as unknown as Record<string, unknown>, '', {
    startedSettings: started,
    nextSettings: next,
    restartRequired,
    keepStarted,
  }) as unknown as Settings;
  for (const keep of keepStarted) keep(effective, started);
  return { effective, restartRequired };
}
