/**
 * The route policy: every key a route may set and the default route's default for it, written
 * once (POLICY); a route's match (`host`, `pathPrefix`), `name` and per-route errors; the proof
 * methods and DPoP settings a route's policy names.
 */
import * as z from 'zod';
import { ASYMMETRIC_JWS_ALGORITHMS } from '../oauth/jws-algorithms.ts';
import { PROOF_METHOD_IDS } from '../proof/registry.ts';
import { VALIDATION_MODES } from '../validation/names.ts';
import type { trustSchemas } from './trust-schema.ts';
import { number, type FieldSchemas } from './schema-fields.ts';

/** The proofs of possession a route accepts: mTLS certificates (RFC 8705) and DPoP proofs (RFC 9449). */
export { PROOF_METHOD_IDS as PROOF_METHODS, type ProofMethodId as ProofMethod } from '../proof/registry.ts';

/**
 * Asymmetric JWS algorithms a DPoP proof may use (RFC 9449 §4.3 step 4: never `none`, never a MAC).
 * `Ed25519` is the fully-specified name (RFC 9864) of what `EdDSA` means for an Ed25519 key;
 * either spelling in the config accepts both spellings in proofs.
 */
export const DPOP_ALGORITHMS = ASYMMETRIC_JWS_ALGORITHMS;
export type DpopAlgorithm = (typeof DPOP_ALGORITHMS)[number];

/** A policy key's schema for a route (unset: inherited) and for the default route (the top level). */
interface PolicyKey<Route extends z.ZodType, Top extends z.ZodType> {
  route: Route;
  top: Top;
}
/** Set on the default route; a route may set its own. */
const required = <S extends z.ZodType>(schema: S): PolicyKey<z.ZodOptional<S>, S> => ({ route: schema.optional(), top: schema });
/** Unset anywhere unless configured. */
const optional = <S extends z.ZodType>(schema: S): PolicyKey<z.ZodOptional<S>, z.ZodOptional<S>> => ({ route: schema.optional(), top: schema.optional() });
/** The default route's default; a route inherits it unless it sets its own. */
const defaulted = <S extends z.ZodType>(schema: S, value: z.output<S>) => ({ route: schema.optional(), top: schema.default(value as never) });

/**
 * The route policy's schemas (POLICY below, the default route's keys, a route, the dpop block),
 * built for each config schema (schema.ts buildConfigSchema) from its field and trust schemas.
 */
export function routePolicySchemas(
  { bindingMode, flag, httpUrl, identityHeaderOverrides, missingCertificateSchema, positiveInt, scopeToken }: FieldSchemas,
  { assertionSchema, routeAssertionSchema, stepUpSchema }: ReturnType<typeof trustSchemas>,
) {
  const proofMethods = z
    .array(z.enum(PROOF_METHOD_IDS))
    .min(1, `at least one of ${PROOF_METHOD_IDS.join(', ')}`)
    .transform((methods) => [...new Set(methods)]);

  const dpopAlgorithm = z.string().superRefine((alg, ctx) => {
    if (/^(none|HS\d+)$/i.test(alg)) ctx.addIssue({ code: 'custom', message: `${alg} is not allowed: DPoP proofs need an asymmetric signature (RFC 9449 §4.3)` });
    else if (!(DPOP_ALGORITHMS as readonly string[]).includes(alg)) ctx.addIssue({ code: 'custom', message: `one of ${DPOP_ALGORITHMS.join(', ')}` });
  }).transform((alg) => alg as DpopAlgorithm);

  const dpopSchema = z
    .strictObject({
      algorithms: z.array(dpopAlgorithm).min(1).default(['ES256', 'EdDSA', 'PS256']).transform((algs) => [...new Set(algs)]).describe('Asymmetric JWS algorithms a DPoP proof may be signed with (never none or HS*).'),
      proofMaxAgeSeconds: number(z.number().int().positive().max(3600)).default(300).describe("A proof's `iat` may be this many seconds old."),
      clockSkewSeconds: number(z.number().int().min(0).max(300)).default(5).describe("A proof's `iat` may be this many seconds ahead of cnfguard's clock."),
      nonce: flag.default(false).describe('Proofs must carry a nonce this server issued (RFC 9449 §8).'),
      nonceRotationSeconds: number(z.number().int().min(10).max(3600)).default(60).describe('Nonces rotate this often; the current and the previous one are accepted.'),
      replayStoreMaxEntries: number(z.number().int().min(1000)).default(200_000).describe("Per-process replay store size (remembered `jti`s); when full of unexpired entries, new proofs get 503 (fail closed)."),
    })
    .prefault({})
    .describe('DPoP proof checks (RFC 9449), used by routes whose methods include dpop.');

  /** `scheme://host[:port]` as clients call it; normalised to the URL origin (lower case, no default port). */
  const publicOrigin = z
    .string()
    .superRefine((value, ctx) => {
      let url: URL;
      try {
        url = new URL(value);
      } catch {
        ctx.addIssue({ code: 'custom', message: 'an origin such as https://api.example' });
        return;
      }
      if ((url.protocol !== 'https:' && url.protocol !== 'http:') || url.username !== '' || url.password !== '' || url.search !== '' || url.hash !== '' || url.pathname !== '/' || /[?#]$/.test(value)) {
        ctx.addIssue({ code: 'custom', message: 'an origin: scheme://host[:port], no path, query, fragment or user' });
      }
    })
    .transform((value) => new URL(value).origin);

  /** `header-name: claims.path.to.member`, e.g. `x-tenant: claims.tenant_id`. */
  const claimHeadersSchema = z.record(
    z.string().regex(/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/, 'an HTTP header name'),
    z.string().regex(/^claims(\.[^.\s]+)+$/, 'claims.<member>[.<member>…], e.g. claims.tenant_id'),
  );

  /** Exact host, or `*.suffix` for any name below suffix (not suffix itself). */
  const hostPattern = z
    .string()
    .regex(/^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$|^\[[0-9a-f:.]+\]$/i, 'a host name, *.suffix, or [IPv6]')
    .transform((host) => host.toLowerCase());

  /**
   * Every route-policy key, once: what a route may set (unset keys fall back to the top-level
   * values, the default route's) and, for the default route, its default.
   */
  const POLICY = {
    upstream: required(httpUrl.describe('The service requests are forwarded to (http:// or https:// URL).')),
    binding: defaulted(bindingMode.describe('required: a token must be bound and the proof must match; optional: unbound tokens pass, bound ones must match; report-only: mismatches are logged, not refused; off: no binding check.'), 'required'),
    scopes: defaulted(z.array(scopeToken).describe('Scopes the token must all carry; otherwise 403 insufficient_scope.'), []),
    audience: optional(z.string().min(1).describe("The token's `aud` must contain this value (required for JWT validation, RFC 9068 §4).")),
    stripAuthorization: defaulted(flag.describe('Drop the Authorization header before forwarding.'), false),
    upstreamTimeoutMs: defaulted(positiveInt.describe('Time the upstream has to answer; then 504. Also how long a client may take none of the answer (a closed window): then the exchange is cut and the upstream connection freed.'), 30_000),
    upstreamHttp2: defaulted(flag.describe('Speak HTTP/2 to the upstream (h2c for http://, h2 for https://): gRPC needs it end to end.'), false),
    maxBodyBytes: defaulted(positiveInt.describe('Largest request body forwarded; larger ones get 413.'), 64 * 1024 * 1024),
    resource: optional(httpUrl.describe('RFC 9728 resource identifier; on the default route it enables /.well-known/oauth-protected-resource.')),
    claimHeaders: defaulted(claimHeadersSchema.describe('Token claims forwarded as request headers: `header-name: claims.path.to.member`.'), {}),
    validation: defaulted(z.enum(VALIDATION_MODES).describe('How tokens are validated: introspection, jwt (RFC 9068, local) or jwt-then-introspection.'), 'introspection'),
    methods: defaulted(proofMethods.describe('The proofs of possession accepted: mtls (RFC 8705), dpop (RFC 9449).'), ['mtls']),
    publicOrigin: optional(publicOrigin.describe('The origin clients call (DPoP `htu`), e.g. https://api.example; default https://<Host of the request>.')),
    /** RFC 9470 step-up: the user authentication required (trust-schema.ts). */
    stepUp: optional(stepUpSchema),
    /** The signed identity for the upstream: configured at the top level, turned off or tuned per route (trust-schema.ts). */
    assertion: { route: routeAssertionSchema.optional(), top: assertionSchema.optional() },
  };

  type Policy = typeof POLICY;
  const pick = <Which extends 'route' | 'top'>(which: Which) => Object.fromEntries(Object.entries(POLICY).map(([key, entry]) => [key, entry[which]])) as { [K in keyof Policy]: Policy[K][Which] };

  /** The policy keys as a route writes them: each optional, inherited when unset. */
  const routePolicyFields = pick('route');
  /** The policy keys of the default route (the top level), with their defaults. */
  const defaultRoutePolicyFields = pick('top');

  /**
   * A route's `name`: its label in metrics and access lines instead of `routes[N]`, so that
   * reordering routes keeps every series. Short and Prometheus-label friendly; `default` and
   * `none` are taken (the default route, and requests refused before routing).
   */
  const routeName = z
    .string()
    .regex(/^[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}$/, 'letters, digits, _ . : - (starting with a letter or digit), at most 63 characters')
    .refine((name) => name !== 'default' && name !== 'none', { error: 'default and none are reserved route labels' });

  const routeSchema = z
    .strictObject({
      name: routeName.optional().describe("The route's label in metrics and access lines (default routes[N]); unique."),
      pathPrefix: z.string().startsWith('/', 'must start with "/"').optional().describe('Requests whose path is this segment or below it take this route.'),
      host: hostPattern.optional().describe('Requests for this Host (or *.suffix) take this route.'),
      ...routePolicyFields,
      headers: identityHeaderOverrides.optional().describe("Identity header names for this route only (the top level's `headers` otherwise)."),
      errors: z.strictObject({ missingCertificate: missingCertificateSchema.optional() }).optional().describe("This route's answer to a missing client certificate."),
    })
    .refine((route) => route.pathPrefix !== undefined || route.host !== undefined, {
      error: 'a route needs pathPrefix, host, or both',
    });
  return { dpopSchema, defaultRoutePolicyFields, routeSchema };
}

export type RouteSchema = ReturnType<typeof routePolicySchemas>['routeSchema'];
