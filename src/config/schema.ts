/**
 * The one schema of cnfguard's config file. Types and defaults both come from here; values that
 * can be wrong (URLs, ports, header names, error codes) are checked here so a bad value fails at
 * start-up with its YAML path, never on a request. The route policy is in route-policy.ts, the
 * small field schemas in schema-fields.ts.
 */
import { z } from 'zod';
import { FORWARDED_CERTIFICATE_FORMATS } from '../tls/forwarded-certificate.ts';
import { parseCidrList } from '../tls/peers.ts';
import { JWT_ALGORITHMS } from '../validation/names.ts';
import { defaultRoutePolicyFields, dpopSchema, routeSchema } from './route-policy.ts';
import { sharedStateSchema } from './shared-state-schema.ts';
import { filePath, flag, fromText, headerName, httpUrl, identityHeadersSchema, missingCertificateSchema, number, port, positiveInt } from './schema-fields.ts';

export { BINDING_MODES, type BindingMode } from './schema-fields.ts';
export { DPOP_ALGORITHMS, PROOF_METHODS, type DpopAlgorithm, type ProofMethod } from './route-policy.ts';

/** A CIDR (or bare address), checked by parsing it the way the listener will. */
const cidr = z.string().superRefine((value, ctx) => {
  try {
    parseCidrList([value]);
  } catch {
    ctx.addIssue({ code: 'custom', message: 'an IPv4 or IPv6 address or CIDR, e.g. 10.0.0.0/8 or fd00::/8' });
  }
});

/**
 * A TLS terminator in front of cnfguard whose certificate header is believed: only from these
 * peers, only in this header. From every other peer the header is deleted before anything reads it.
 */
const trustedProxySchema = z.strictObject({
  cidrs: z.array(cidr).min(1),
  header: headerName,
  format: z.enum(FORWARDED_CERTIFICATE_FORMATS as [string, ...string[]]).transform((f) => f as (typeof FORWARDED_CERTIFICATE_FORMATS)[number]),
  /** XFCC only: which element is the trusted proxy's. `last` unless the proxy sanitizes what clients send. */
  xfccElement: z.enum(['last', 'first']).default('last'),
});

export const INTROSPECTION_AUTH_METHODS = ['client_secret_basic', 'client_secret_post', 'tls_client_auth'] as const;

const introspectionSchema = z
  .strictObject({
    url: httpUrl,
    clientId: z.string().min(1),
    clientSecret: z.string().min(1).optional(),
    /** Alternative to clientSecret for mounted secrets; read at start-up. */
    clientSecretFile: filePath.optional(),
    authMethod: z.enum(INTROSPECTION_AUTH_METHODS).default('client_secret_basic'),
    ca: filePath.optional(),
    cert: filePath.optional(),
    key: filePath.optional(),
    timeoutMs: number(z.number().int().positive().max(60_000)).default(2000),
    /** When set, a token whose introspected `iss` differs is refused (401 invalid_token). */
    issuer: z.string().min(1).optional(),
    /** Largest introspection answer read; a bigger one is an AS fault. */
    maxAnswerBytes: positiveInt.default(256 * 1024),
    /**
     * Serve a cached *active* answer this long past its cache lifetime while the AS is failing
     * (never past the token's exp). 0 (default) is off: revocation then takes effect within
     * maxTtlSeconds even during an AS outage.
     */
    staleIfErrorSeconds: number(z.number().min(0)).default(0),
    /**
     * Once listening, introspect a random dummy token and log one warning naming the URL and what
     * to check when the AS cannot be used (wrong ca, secret or URL; AS down). Off: no AS call until
     * the first request (tests and benchmarks that count AS calls).
     */
    probeAtStartup: flag.default(true),
    /** After this many consecutive failures, stop calling the AS for openSeconds (or its Retry-After), then probe. */
    circuitBreaker: z
      .strictObject({
        failureThreshold: positiveInt.default(5),
        openSeconds: number(z.number().positive().max(300)).default(5),
      })
      .prefault({}),
    cache: z
      .strictObject({
        maxEntries: number(z.number().int().min(0)).default(100_000),
        maxTtlSeconds: number(z.number().min(0)).default(300),
        negativeTtlSeconds: number(z.number().min(0)).default(5),
        /** Inactive answers are kept in their own LRU of this size, so made-up tokens cannot evict real ones. */
        negativeMaxEntries: number(z.number().int().min(0)).default(10_000),
      })
      .prefault({}),
    /**
     * Introspection calls that cache misses may cause (token buckets), per peer (IPv4 address or
     * IPv6 /64) and in total. Over the peer's: 429; over the total: 503; both with Retry-After and
     * without calling the AS. A rate of 0 turns that bucket off. Cache hits never count.
     */
    budget: z
      .strictObject({
        perPeerPerSecond: number(z.number().min(0)).default(50),
        perPeerBurst: positiveInt.default(100),
        totalPerSecond: number(z.number().min(0)).default(500),
        totalBurst: positiveInt.default(1000),
        maxPeers: positiveInt.default(10_000),
      })
      .prefault({}),
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
  issuer: z.string().min(1),
  /** Trusted like the AS (introspection.ca). */
  jwksUri: httpUrl,
  /** Asymmetric JWS algorithms only: a MAC alg (HS*) or none is a config error. */
  algorithms: z
    .array(z.string().refine((alg) => (JWT_ALGORITHMS as readonly string[]).includes(alg), { error: `an asymmetric JWS algorithm (${JWT_ALGORITHMS.join(', ')}); never HS* or none` }))
    .min(1)
    .default(['ES256', 'PS256', 'EdDSA', 'RS256']),
  /** JWKS fetch timeout; default introspection.timeoutMs. */
  timeoutMs: number(z.number().int().positive().max(60_000)).optional(),
  /** Least time between two JWKS fetches caused by an unknown kid. */
  refetchCooldownSeconds: number(z.number().min(0).max(3600)).default(30),
  maxJwksBytes: positiveInt.default(256 * 1024),
  /** A token's `iat` may be this far ahead of cnfguard's clock (an AS clock slightly ahead); further is refused. */
  clockSkewSeconds: number(z.number().int().min(0).max(300)).default(5),
});

export const configSchema = z.strictObject({
  /** `http2`: ALPN offers h2 beside http/1.1 on the one port. */
  listen: z.strictObject({ host: z.string().min(1).default('0.0.0.0'), port: port.default(8443), http2: flag.default(true) }).prefault({}),
  tls: z.strictObject({
    cert: filePath,
    key: filePath,
    /** Optional. Set: a presented client certificate must chain to it. Unset: binding rests on the thumbprint alone. */
    clientCa: filePath.optional(),
  }),
  introspection: introspectionSchema,
  jwt: jwtSchema.optional(),
  /** The default route's policy (routes inherit each key they do not set): route-policy.ts. */
  ...defaultRoutePolicyFields,
  /** Published in the resource metadata (RFC 9728 `authorization_servers`). */
  authorizationServers: z.array(httpUrl).default([]),
  routes: z.array(routeSchema).default([]),
  /** How request paths are matched against route prefixes (see README, "Paths"). */
  paths: z.strictObject({ ignoreCase: flag.default(true) }).prefault({}),
  /** Tokens bound by a confirmation method cnfguard cannot verify: refused (reject) or judged as if that member were absent (ignore). */
  cnf: z.strictObject({ unknownMethods: z.enum(['reject', 'ignore']).default('reject') }).prefault({}),
  /** Used by routes whose methods include dpop. */
  dpop: dpopSchema,
  errors: z
    .strictObject({
      realm: z.string().min(1).default('cnfguard'),
      missingCertificate: missingCertificateSchema.prefault({}),
      /** Bearer challenges carry `supported_cnf_methods="…"` (the route's methods). */
      advertiseMethods: flag.default(true),
    })
    .prefault({}),
  headers: identityHeadersSchema.prefault({}),
  limits: z
    .strictObject({
      /** Form bodies are read (once the token would be allowed) to look for a smuggled `access_token`; larger ones get 413. */
      formBodyBytes: positiveInt.default(64 * 1024),
      /** Form body bytes held in memory across all requests; past it, 503 with Retry-After. */
      bufferedBodyBytes: positiveInt.default(16 * 1024 * 1024),
      /** Time for a new connection to complete its TLS handshake; then it is dropped. */
      handshakeTimeoutMs: positiveInt.default(10_000),
      /** All request header bytes; more is 431. */
      headerBytes: number(z.number().int().min(1024).max(1024 * 1024)).default(16 * 1024),
      /** Request header lines; more is 431. */
      headerCount: number(z.number().int().min(8).max(10_000)).default(100),
      /** Request target length; more is 414. */
      urlBytes: number(z.number().int().min(64).max(1024 * 1024)).default(8 * 1024),
      /** Time to receive the request headers (slowloris); then 408. */
      headersTimeoutMs: positiveInt.default(10_000),
      /** Time to receive the whole request; then 408. */
      requestTimeoutMs: positiveInt.default(120_000),
      /** Idle keep-alive connections are closed after this. */
      keepAliveTimeoutMs: positiveInt.default(5_000),
      /** Concurrent client connections; more are refused at accept. */
      maxConnections: positiveInt.default(1024),
      /** Concurrent streams per HTTP/2 connection. */
      http2MaxConcurrentStreams: positiveInt.default(100),
      /** An HTTP/2 session with open streams is pinged each second; unanswered this long, it is destroyed (its upstream calls with it). */
      http2PingTimeoutMs: number(z.number().int().min(500).max(600_000)).default(5_000),
    })
    .prefault({}),
  trustedProxies: z.array(trustedProxySchema).default([]),
  /** On SIGTERM/SIGINT, in-flight requests get this long to finish. */
  shutdownGraceSeconds: number(z.number().min(0).max(3600)).default(20),
  /** Processes sharing the listener (node:cluster); `auto` is one per core. Each has its own token cache. */
  workers: z.preprocess(fromText, z.union([z.literal('auto'), z.number().int().min(1).max(64)])).default(1),
  admin: z
    .strictObject({
      host: z.string().min(1).default('127.0.0.1'),
      port: port.default(9090),
      /** `/readyz?upstream=1`: TCP connect to the default upstream, or GET `path` on it (2xx/3xx), within `timeoutMs`. */
      upstreamCheck: z
        .strictObject({
          path: z.string().startsWith('/', 'a path starting with /').optional(),
          timeoutMs: number(z.number().int().min(1).max(30_000)).default(1000),
        })
        .prefault({}),
    })
    .prefault({}),
  /** Decision API for a proxy in front (nginx auth_request, Envoy ext_authz, Traefik forwardAuth): plain HTTP, off unless set. */
  decisionApi: z.strictObject({ host: z.string().min(1).default('127.0.0.1'), port }).optional(),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  sharedState: sharedStateSchema.optional(),
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
}).superRefine((value, ctx) => {
  if (value.jwt !== undefined) return;
  if (value.validation !== 'introspection') ctx.addIssue({ code: 'custom', path: ['validation'], message: `validation ${value.validation} needs jwt: (issuer, jwksUri)` });
  value.routes.forEach((route, index) => {
    if (route.validation !== undefined && route.validation !== 'introspection') ctx.addIssue({ code: 'custom', path: ['routes', index, 'validation'], message: `validation ${route.validation} needs jwt: (issuer, jwksUri)` });
  });
});

export type Settings = z.output<typeof configSchema>;
export type RouteSettings = z.output<typeof routeSchema>;
