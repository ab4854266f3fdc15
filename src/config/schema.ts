/**
 * The one schema of cnfguard's config file. Types and defaults both come from here; values that
 * can be wrong (URLs, ports, header names, error codes) are checked here so a bad value fails at
 * start-up with its YAML path, never on a request. The route policy is in route-policy.ts, the
 * small field schemas in schema-fields.ts.
 */
import * as z from 'zod';
import { JWT_ALGORITHMS } from '../validation/names.ts';
import { builtOnFirstUse } from './built-on-use.ts';
import { frontSchemas } from './front-schema.ts';
import { routePolicySchemas, type RouteSchema } from './route-policy.ts';
import { buildSharedStateSchema } from './shared-state-schema.ts';
import { buildHttpsigSchema } from './httpsig-schema.ts';
import { checkTrust, trustSchemas } from './trust-schema.ts';
import { checkHeaderNames } from './header-names-schema.ts';
import { fieldSchemas, fromText, number } from './schema-fields.ts';
import { DEFAULT_LOG_BUFFER_BYTES } from '../log.ts';

export { BINDING_MODES, type BindingMode } from './schema-fields.ts';
export { DPOP_ALGORITHMS, PROOF_METHODS, type DpopAlgorithm, type ProofMethod } from './route-policy.ts';

export const INTROSPECTION_AUTH_METHODS = ['client_secret_basic', 'client_secret_post', 'tls_client_auth'] as const;

/**
 * The schema, built afresh: a load (load.ts) builds one and lets it go, so that an idle server
 * holds none of its zod objects (issue 32); tests and tools parsing many configs use configSchema.
 */
export function buildConfigSchema() {
  const fields = fieldSchemas();
  const { filePath, flag, httpUrl, identityHeadersSchema, missingCertificateSchema, port, positiveInt } = fields;
  const trust = trustSchemas(fields);
  const { signedIntrospectionFields } = trust;
  const { defaultRoutePolicyFields, dpopSchema, routeSchema } = routePolicySchemas(fields, trust);
  const httpsigSchema = buildHttpsigSchema();
  const sharedStateSchema = buildSharedStateSchema(fields);
  const { cipherList, decisionApiSchema, trustedProxySchema } = frontSchemas(fields);

  const introspectionSchema = z
    .strictObject({
      url: httpUrl.describe("The AS's token introspection endpoint (RFC 7662)."),
      clientId: z.string().min(1).describe('The client id cnfguard authenticates to the AS with.'),
      clientSecret: z.string().min(1).optional().describe('The client secret; write ${VAR} to take it from the environment.'),
      clientSecretFile: filePath.optional().describe('A file holding the client secret (mounted secrets), read at start-up; instead of clientSecret.'),
      authMethod: z.enum(INTROSPECTION_AUTH_METHODS).default('client_secret_basic').describe('How cnfguard authenticates to the AS: client_secret_basic, client_secret_post, or tls_client_auth (cert and key).'),
      ca: filePath.optional().describe("PEM CA(s) trusted for the AS's certificate (default: the system's trust)."),
      cert: filePath.optional().describe('PEM client certificate for mTLS to the AS (tls_client_auth).'),
      key: filePath.optional().describe('PEM private key for cert.'),
      timeoutMs: number(z.number().int().positive().max(60_000)).default(2000).describe('Time an introspection call may take; then it counts as an AS failure (503).'),
      issuer: z.string().min(1).optional().describe('When set, a token whose introspected `iss` differs is refused (401 invalid_token).'),
      maxAnswerBytes: positiveInt.default(256 * 1024).describe('Largest introspection answer read; a bigger one is an AS fault.'),
      staleIfErrorSeconds: number(z.number().min(0))
        .default(0)
        .describe("Serve a cached active answer this long past its cache lifetime while the AS fails (never past the token's exp); 0 is off, so revocation takes effect within cache.maxTtlSeconds."),
      probeAtStartup: flag
        .default(true)
        .describe('Once listening, introspect a dummy token and log one warning naming what to check when the AS cannot be used; off: no AS call until the first request.'),
      circuitBreaker: z
        .strictObject({
          failureThreshold: positiveInt.default(5).describe('Consecutive AS failures that open the breaker.'),
          openSeconds: number(z.number().positive().max(300)).default(5).describe("Seconds the breaker stays open (or the AS's Retry-After) before one probe call."),
        })
        .prefault({})
        .describe('After failureThreshold consecutive failures, stop calling the AS for openSeconds, then probe.'),
      cache: z
        .strictObject({
          maxEntries: number(z.number().int().min(0)).default(100_000).describe('Active answers kept (LRU); 0 turns the cache off.'),
          maxTtlSeconds: number(z.number().min(0)).default(300).describe("Longest an active answer is reused (never past the token's exp): the revocation delay."),
          negativeTtlSeconds: number(z.number().min(0)).default(5).describe('How long an inactive answer is reused.'),
          negativeMaxEntries: number(z.number().int().min(0)).default(10_000).describe('Inactive answers kept in their own LRU, so made-up tokens cannot evict real ones.'),
        })
        .prefault({})
        .describe('The introspection answer cache, keyed by a hash of the token.'),
      budget: z
        .strictObject({
          perPeerPerSecond: number(z.number().min(0)).default(50).describe('Introspection calls a peer (IPv4 address or IPv6 /64) may cause per second; 0: no per-peer limit.'),
          perPeerBurst: positiveInt.default(100).describe("Burst size of a peer's bucket."),
          totalPerSecond: number(z.number().min(0)).default(500).describe('Introspection calls all peers together may cause per second; 0: no total limit.'),
          totalBurst: positiveInt.default(1000).describe('Burst size of the total bucket.'),
          maxPeers: positiveInt.default(10_000).describe('Peer buckets kept (LRU).'),
        })
        .prefault({})
        .describe("Introspection calls that cache misses may cause (token buckets); over a peer's: 429, over the total: 503, both with Retry-After; cache hits never count."),
      ...signedIntrospectionFields,
    })
    .superRefine((value, ctx) => {
      const usesSecret = value.authMethod !== 'tls_client_auth';
      if (usesSecret && value.clientSecret === undefined && value.clientSecretFile === undefined) {
        ctx.addIssue({ code: 'custom', path: ['clientSecret'], message: `required for authMethod ${value.authMethod} (or set clientSecretFile)` });
      }
      if (value.clientSecret !== undefined && value.clientSecretFile !== undefined) {
        ctx.addIssue({ code: 'custom', path: ['clientSecretFile'], message: 'set clientSecret or clientSecretFile, not both' });
      }
      if (value.authMethod === 'tls_client_auth') {
        for (const key of ['cert', 'key'] as const) {
          if (value[key] === undefined) ctx.addIssue({ code: 'custom', path: [key], message: 'required for authMethod tls_client_auth' });
        }
      }
      if ((value.cert === undefined) !== (value.key === undefined)) {
        ctx.addIssue({ code: 'custom', path: [value.cert === undefined ? 'cert' : 'key'], message: 'cert and key go together' });
      }
    });

  /** Local JWT access tokens (RFC 9068); off unless set. */
  const jwtSchema = z.strictObject({
    issuer: z.string().min(1).describe("The `iss` a JWT access token must carry."),
    jwksUri: httpUrl.describe("The AS's JWKS URL; trusted like the AS (introspection.ca)."),
    algorithms: z
      .array(z.string().refine((alg) => (JWT_ALGORITHMS as readonly string[]).includes(alg), { error: `an asymmetric JWS algorithm (${JWT_ALGORITHMS.join(', ')}); never HS* or none` }))
      .min(1)
      .default(['ES256', 'PS256', 'EdDSA', 'RS256'])
      .describe('Asymmetric JWS algorithms accepted; a MAC alg (HS*) or none is a config error.'),
    timeoutMs: number(z.number().int().positive().max(60_000)).optional().describe('JWKS fetch timeout; default introspection.timeoutMs.'),
    refetchCooldownSeconds: number(z.number().min(0).max(3600))
      .default(30)
      .describe('Least time between two JWKS fetches after the one at start: on an unknown kid, a signature that fails with a known kid, or keys past refreshSeconds (failed fetches included).'),
    refreshSeconds: number(z.number().min(10).max(86_400))
      .default(300)
      .describe("Keys older than this are fetched again, in the background, when next used (RFC 9068 §4: the AS's current keys); a failed fetch keeps the keys held. A key the AS withdrew stops verifying then, and JWTs it verified are verified again."),
    maxJwksBytes: positiveInt.default(256 * 1024).describe('Largest JWKS document read.'),
    clockSkewSeconds: number(z.number().int().min(0).max(300)).default(5).describe("A token's `iat` may be this far ahead of cnfguard's clock; further is refused."),
  });

  /** OpenTelemetry traces exported over OTLP/HTTP (issue 28); off unless set. */
  const tracingSchema = z
    .strictObject({
      otlpEndpoint: httpUrl.describe('The OTLP/HTTP traces endpoint spans are exported to, e.g. http://127.0.0.1:4318/v1/traces.'),
      serviceName: z.string().min(1).default('cnfguard').describe('The service.name resource attribute of every span.'),
      sampleRatio: number(z.number().min(0).max(1))
        .default(1)
        .describe('The share of new traces sampled (0 to 1); parent-based: a sampled incoming traceparent from a trusted proxy is always followed, an unsampled one never.'),
      headers: z.record(z.string().min(1), z.string()).default({}).describe('Extra HTTP headers sent with every export, e.g. an authorization header (write secrets as ${VAR}); masked by check.'),
    })
    .describe('OpenTelemetry traces: a cnfguard.request span per request with children for introspection, JWKS, the shared store and the upstream; W3C traceparent followed only from trustedProxies peers. Off unless set.');

  return z.strictObject({
    listen: z
      .strictObject({
        host: z.string().min(1).default('0.0.0.0').describe('Address the TLS listener binds.'),
        port: port.default(8443).describe('Port of the TLS listener (0: any free port).'),
        http2: flag.default(true).describe('ALPN offers h2 beside http/1.1 on the one port.'),
      })
      .prefault({})
      .describe('The proxy listener (TLS; clients connect here).'),
    tls: z
      .strictObject({
        cert: filePath.describe("PEM server certificate (chain) of the listener; reloaded when the file changes."),
        key: filePath.describe('PEM private key of cert.'),
        clientCa: filePath.optional().describe('PEM CA(s) a presented client certificate must chain to; unset: binding rests on the thumbprint alone. Must be CA certificates.'),
        minVersion: z.enum(['TLSv1.2', 'TLSv1.3']).default('TLSv1.2').describe('Lowest TLS version the listener accepts.'),
        ciphers: cipherList.default('').describe("OpenSSL cipher list for TLS 1.2 connections, e.g. ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256; empty: Node's default."),
      })
      .describe("The listener's certificate, the CA client certificates are checked against, and protocol limits."),
    introspection: introspectionSchema.describe('How tokens are checked with the authorization server (RFC 7662).'),
    jwt: jwtSchema.optional().describe('Local validation of JWT access tokens (RFC 9068); off unless set.'),
    // The default route's policy (routes inherit each key they do not set): route-policy.ts.
    ...defaultRoutePolicyFields,
    authorizationServers: z.array(httpUrl).default([]).describe('Published in the resource metadata (RFC 9728 `authorization_servers`).'),
    routes: z.array(routeSchema).default([]).describe('Routes by host and path prefix, first match wins; each inherits the top-level policy keys it does not set.'),
    paths: z
      .strictObject({ ignoreCase: flag.default(true).describe('Route prefixes match paths case-insensitively (over-matching a protected route is the safe side).') })
      .prefault({})
      .describe('How request paths are matched against route prefixes.'),
    cnf: z
      .strictObject({ unknownMethods: z.enum(['reject', 'ignore']).default('reject').describe('A token bound by a confirmation method cnfguard cannot verify: refused (reject) or judged as if that member were absent (ignore).') })
      .prefault({})
      .describe("Handling of the token's `cnf` claim."),
    dpop: dpopSchema,
    httpsig: httpsigSchema,
    errors: z
      .strictObject({
        realm: z.string().min(1).default('cnfguard').describe('The realm in WWW-Authenticate challenges.'),
        missingCertificate: missingCertificateSchema.prefault({}),
        advertiseMethods: flag.default(true).describe("Bearer challenges carry `supported_cnf_methods=\"…\"` (the route's methods)."),
      })
      .prefault({})
      .describe('How refusals are answered.'),
    headers: identityHeadersSchema.prefault({}).describe('Names of the identity headers the upstream gets (client copies are always removed); not a framing, credential or forwarding header, no `_`, none twice on a route (docs/routes-and-policy.md).'),
    limits: z
      .strictObject({
        formBodyBytes: positiveInt.default(64 * 1024).describe('Form bodies are read (once the token would be allowed) to look for a smuggled `access_token`, decoded first when gzip, deflate or br; larger ones (before or after decoding) get 413.'),
        bufferedBodyBytes: positiveInt.default(16 * 1024 * 1024).describe('Form body bytes held in memory across all requests; past it, 503 with Retry-After.'),
        handshakeTimeoutMs: positiveInt.default(10_000).describe('Time for a new connection to complete its TLS handshake; then it is dropped.'),
        headerBytes: number(z.number().int().min(1024).max(1024 * 1024)).default(16 * 1024).describe('All request header bytes; more is 431.'),
        headerCount: number(z.number().int().min(8).max(10_000)).default(100).describe('Request header lines; more is 431.'),
        urlBytes: number(z.number().int().min(64).max(1024 * 1024)).default(8 * 1024).describe('Request target length; more is 414.'),
        headersTimeoutMs: positiveInt.default(10_000).describe('Time to receive the request headers (slowloris); then 408.'),
        requestTimeoutMs: positiveInt.default(120_000).describe('Time to receive the whole request; then 408.'),
        keepAliveTimeoutMs: positiveInt.default(5_000).describe('Idle keep-alive connections are closed after this.'),
        maxConnections: positiveInt.default(1024).describe('Concurrent client connections; more are refused at accept.'),
        http2MaxConcurrentStreams: positiveInt.default(100).describe('Concurrent streams per HTTP/2 connection.'),
        http2PingTimeoutMs: number(z.number().int().min(500).max(600_000)).default(5_000).describe('An HTTP/2 session with open streams is pinged each second; unanswered this long, it is destroyed (its upstream calls with it).'),
        logBufferBytes: number(z.number().int().min(64 * 1024).max(1024 * 1024 * 1024))
          .default(DEFAULT_LOG_BUFFER_BYTES)
          .describe('Log bytes held in memory per process while stdout takes none (a stuck log shipper); past it, lines are dropped and counted (cnfguard_log_lines_dropped_total).'),
      })
      .prefault({})
      .describe('Bounds on what one client or request may cost.'),
    trustedProxies: z.array(trustedProxySchema).default([]).describe('TLS terminators in front whose client-certificate header is believed (only from these peers, only in this header).'),
    shutdownGraceSeconds: number(z.number().min(0).max(3600)).default(20).describe('On SIGTERM/SIGINT, in-flight requests get this long to finish.'),
    workers: z
      .preprocess(fromText, z.union([z.literal('auto'), z.number().int().min(1).max(64)]))
      .default(1)
      .describe('Processes sharing the listener (node:cluster), 1 to 64 or auto (one per core); each has its own token cache.'),
    admin: z
      .strictObject({
        host: z.string().min(1).default('127.0.0.1').describe('Address of the admin listener (plain HTTP: /healthz, /readyz, /metrics).'),
        port: port.default(9090).describe('Port of the admin listener.'),
        upstreamCheck: z
          .strictObject({
            path: z.string().startsWith('/', 'a path starting with /').optional().describe('GET this path on the default upstream (2xx/3xx is up); unset: a TCP connect.'),
            timeoutMs: number(z.number().int().min(1).max(30_000)).default(1000).describe('Time the upstream check may take.'),
          })
          .prefault({})
          .describe('What `/readyz?upstream=1` checks on the default upstream.'),
        deprecatedMetrics: flag
          .default(true)
          .describe(
            'Also export the deprecated metric names beside their conventional replacements (docs/metrics.md lists them); false exports only conventional names, which `promtool check metrics` passes.',
          ),
      })
      .prefault({})
      .describe('The admin listener: health, readiness and metrics.'),
    decisionApi: decisionApiSchema
      .optional()
      .describe('Decision API for a proxy in front (nginx auth_request, Envoy ext_authz, Traefik forwardAuth), on a TCP port, a Unix socket or both; off unless set.'),
    logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info').describe('Least severe log level written (JSON lines on stdout).'),
    sharedState: sharedStateSchema.optional().describe('State shared across replicas in Redis or Valkey (token cache, DPoP replay); off unless set.'),
    tracing: tracingSchema.optional().describe('OpenTelemetry traces of each request, exported over OTLP/HTTP; off unless set.'),
  }).superRefine((value, ctx) => {
    const named = new Map<string, number>();
    value.routes.forEach((route, index) => {
      if (route.name === undefined) return;
      const first = named.get(route.name);
      if (first === undefined) named.set(route.name, index);
      else ctx.addIssue({ code: 'custom', path: ['routes', index, 'name'], message: `name ${route.name} is already routes[${first}]'s: route names must be unique` });
    });
  }).superRefine((value, ctx) => {
    // RFC 9068 §4: a JWT access token is refused unless its aud names this resource. Only the route's
    // audience says what that is, so a route that validates JWTs itself must have one.
    const unchecked = (validation: string, where: string) =>
      `validation: ${validation} checks JWT access tokens here, and RFC 9068 §4 requires refusing one whose aud does not name this resource: set ${where} to the identifier the AS puts in aud`;
    const local = (validation: string) => validation !== 'introspection';
    if (local(value.validation) && value.audience === undefined) ctx.addIssue({ code: 'custom', path: ['audience'], message: unchecked(value.validation, 'audience') });
    value.routes.forEach((route, index) => {
      const validation = route.validation ?? value.validation;
      if (local(validation) && (route.audience ?? value.audience) === undefined) {
        ctx.addIssue({ code: 'custom', path: ['routes', index, 'audience'], message: unchecked(validation, `routes[${index}].audience (or the top-level audience it inherits)`) });
      }
    });
  }).superRefine(checkTrust).superRefine(checkHeaderNames).superRefine((value, ctx) => {
    if (value.jwt !== undefined) return;
    if (value.validation !== 'introspection') ctx.addIssue({ code: 'custom', path: ['validation'], message: `validation ${value.validation} needs jwt: (issuer, jwksUri)` });
    value.routes.forEach((route, index) => {
      if (route.validation !== undefined && route.validation !== 'introspection') ctx.addIssue({ code: 'custom', path: ['routes', index, 'validation'], message: `validation ${route.validation} needs jwt: (issuer, jwksUri)` });
    });
  });
}

export type ConfigSchema = ReturnType<typeof buildConfigSchema>;
/** The schema built on first use and kept: for callers that parse many configs (tests, tools), not a load. */
export const configSchema: ConfigSchema = builtOnFirstUse(buildConfigSchema);

export type Settings = z.output<ConfigSchema>;
export type RouteSettings = z.output<RouteSchema>;
