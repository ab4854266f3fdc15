/**
 * Step: which route a request takes, and the policy it brings. Routes match on host (exact or
 * `*.suffix`) and path prefix, in config order, first match wins; the default route (the
 * top-level keys) comes last. A route inherits every policy key it does not set.
 */
import type { BindingMode, ProofMethod, Settings } from '../config/schema.ts';
import { GuardError } from '../oauth/reasons.ts';
import { decodedBeforeQuery, rawReadings, readsOneWay, routingPaths, type ParsedTarget } from './path.ts';
import { hostMatches, pathMatches, segmentPrefix } from '../routing/match.ts';
import type { ValidationMode } from '../validation/validator.ts';

export { hostMatches, pathMatches, shadowedRoutes } from '../routing/match.ts';

/** The names of the identity headers a route sets (`headers`, per route `routes[].headers`). */
export interface IdentityHeaderNames {
  readonly subject: string;
  readonly clientId: string;
  readonly scope: string;
  readonly certThumbprint: string;
  readonly clientCert: string;
  readonly binding: string;
  /** The DPoP proof key's RFC 7638 thumbprint (x-auth-dpop-jkt). */
  readonly dpopThumbprint: string;
}

export interface ClaimHeader {
  readonly header: string;
  /** Member path inside the introspection answer, e.g. ['ext', 'tenant_id']. */
  readonly path: readonly string[];
}

export interface RoutePolicy {
  /** `default`, the route's `name`, or `routes[N]` when it has none: the label in logs and metrics. */
  readonly id: string;
  readonly host: string | undefined;
  readonly pathPrefix: string | undefined;
  readonly upstream: URL;
  readonly upstreamTimeoutMs: number;
  /** HTTP/2 to the upstream (h2c or h2). */
  readonly upstreamHttp2: boolean;
  /** Largest request body forwarded. */
  readonly maxBodyBytes: number;
  readonly binding: BindingMode;
  /** Every one of these must be in the token's `scope`. */
  readonly scopes: readonly string[];
  /** When set, the token's `aud` must contain it. */
  readonly audience: string | undefined;
  /** When set, a token whose `iss` is present must carry exactly this issuer (introspection.issuer). */
  readonly issuer: string | undefined;
  readonly stripAuthorization: boolean;
  readonly unknownCnf: 'reject' | 'ignore';
  readonly missingCertificate: Readonly<{ code: string; status: number }>;
  readonly headerNames: IdentityHeaderNames;
  readonly claimHeaders: readonly ClaimHeader[];
  /** RFC 9728 resource identifier, and the URL of its metadata (for `resource_metadata`). */
  readonly resource: string | undefined;
  readonly resourceMetadataUrl: string | undefined;
  /** How tokens are validated on this route (src/validation/validator.ts). */
  readonly validation: ValidationMode;
  /** The proofs of possession this route accepts (`mtls`, `dpop`); at least one. */
  readonly methods: readonly ProofMethod[];
  /** The origin clients call, for DPoP `htu` (`https://api.example`); undefined: `https://<Host>`. */
  readonly publicOrigin: string | undefined;
  /** `errors.advertiseMethods`: the Bearer challenge names the route's methods (`supported_cnf_methods`). */
  readonly advertiseMethods: boolean;
  /** `dpop.algorithms`, advertised as the DPoP challenge's `algs`. */
  readonly dpopAlgorithms: readonly string[];
  /** `httpsig.requiredComponents`, for the route's `Accept-Signature`. */
  readonly httpsigComponents: readonly string[];
  /** RFC 9470 step-up: the user authentication required; undefined: none. */
  readonly stepUp: StepUpPolicy | undefined;
  /** The signed identity assertion on this route (its aud and lifetime); undefined: none. */
  readonly assertion: RouteAssertion | undefined;
  /** `assertion.header`: set on this route when it has an assertion, a client's copy removed on every route. */
  readonly assertionHeader: string;
}

/** The assertion header's default name (`assertion.header`). */
export const ASSERTION_HEADER = 'x-auth-assertion';

/** RFC 9470: the acr values accepted (in preference order) and the greatest age of the user's authentication. */
export interface StepUpPolicy {
  readonly acrValues?: readonly string[] | undefined;
  readonly maxAgeSeconds?: number | undefined;
  readonly clockSkewSeconds: number;
}

export interface RouteAssertion {
  readonly audience: string;
  readonly lifetimeSeconds: number;
}

/** A route's assertion: the top level's, off with `assertion: false`, or with its own audience and lifetime; aud defaults to the upstream's origin. */
function assertionOf(settings: Settings, route: Partial<Settings['routes'][number]>, upstream: URL): RouteAssertion | undefined {
  const top = settings.assertion;
  const own = route.assertion;
  if (top === undefined || own === false) return undefined;
  return Object.freeze({ audience: own?.audience ?? top.audience ?? upstream.origin, lifetimeSeconds: own?.lifetimeSeconds ?? top.lifetimeSeconds });
}

export interface RouteTable {
  readonly routes: readonly RoutePolicy[];
  readonly fallback: RoutePolicy;
  /** `paths.ignoreCase`: path prefixes match in any letter case. */
  readonly ignoreCase: boolean;
  /** Path prefixes as matched (case-folded when `ignoreCase`, trailing slashes dropped), by index into `routes`. */
  readonly matchPrefixes: readonly (string | undefined)[];
  /** Every identity and claim header name any route sets: stripped from every inbound request. */
  readonly managedHeaders: readonly string[];
}

/**
 * RFC 9728 §3.1: the metadata lives at the resource's origin, with the well-known segment
 * inserted before the resource's path (`https://rs/api` -> `https://rs/.well-known/oauth-protected-resource/api`).
 */
export function resourceMetadataUrl(resource: string): string {
  const url = new URL(resource);
  const path = url.pathname === '/' ? '' : url.pathname.replace(/\/$/, '');
  return `${url.origin}/.well-known/oauth-protected-resource${path}`;
}

function claimHeadersOf(mapping: Readonly<Record<string, string>>): ClaimHeader[] {
  return Object.entries(mapping).map(([header, expression]) => ({ header: header.toLowerCase(), path: expression.split('.').slice(1) }));
}

export function compileRoutes(settings: Settings): RouteTable {
  const base = {
    upstream: settings.upstream,
    upstreamTimeoutMs: settings.upstreamTimeoutMs,
    upstreamHttp2: settings.upstreamHttp2,
    maxBodyBytes: settings.maxBodyBytes,
    binding: settings.binding,
    scopes: settings.scopes,
    audience: settings.audience,
    stripAuthorization: settings.stripAuthorization,
    resource: settings.resource,
    claimHeaders: settings.claimHeaders,
  };
  const build = (id: string, route: Partial<Settings['routes'][number]>): RoutePolicy => {
    const resource = route.resource ?? base.resource;
    const upstream = new URL(route.upstream ?? base.upstream);
    const stepUp = route.stepUp ?? settings.stepUp;
    return Object.freeze({
      id,
      host: route.host,
      pathPrefix: route.pathPrefix,
      upstream,
      upstreamTimeoutMs: route.upstreamTimeoutMs ?? base.upstreamTimeoutMs,
      upstreamHttp2: route.upstreamHttp2 ?? base.upstreamHttp2,
      maxBodyBytes: route.maxBodyBytes ?? base.maxBodyBytes,
      binding: route.binding ?? base.binding,
      scopes: Object.freeze([...(route.scopes ?? base.scopes)]),
      audience: route.audience ?? base.audience,
      issuer: settings.introspection.issuer,
      stripAuthorization: route.stripAuthorization ?? base.stripAuthorization,
      unknownCnf: settings.cnf.unknownMethods,
      missingCertificate: Object.freeze({ ...(route.errors?.missingCertificate ?? settings.errors.missingCertificate) }),
      headerNames: Object.freeze({ ...settings.headers, ...stripUndefined(route.headers ?? {}) }),
      claimHeaders: Object.freeze(claimHeadersOf(route.claimHeaders ?? base.claimHeaders)),
      resource,
      resourceMetadataUrl: resource === undefined ? undefined : resourceMetadataUrl(resource),
      validation: route.validation ?? settings.validation,
      methods: Object.freeze([...(route.methods ?? settings.methods)]),
      publicOrigin: route.publicOrigin ?? settings.publicOrigin,
      advertiseMethods: settings.errors.advertiseMethods,
      dpopAlgorithms: Object.freeze([...settings.dpop.algorithms]),
      stepUp: stepUp === undefined ? undefined : Object.freeze({ ...stepUp, ...(stepUp.acrValues !== undefined && { acrValues: Object.freeze([...stepUp.acrValues]) }) }),
      assertion: assertionOf(settings, route, upstream),
      assertionHeader: settings.assertion?.header ?? ASSERTION_HEADER,
      httpsigComponents: Object.freeze([...settings.httpsig.requiredComponents]),
    });
  };
  const routes = settings.routes.map((route, index) => build(route.name ?? `routes[${index}]`, route));
  const fallback = build('default', {});
  // The assertion header is never a client's to send, on any route, with or without `assertion`.
  const managed = new Set<string>([settings.assertion?.header ?? ASSERTION_HEADER]);
  for (const route of [...routes, fallback]) {
    for (const name of Object.values(route.headerNames)) managed.add(name);
    for (const claim of route.claimHeaders) managed.add(claim.header);
  }
  const ignoreCase = settings.paths.ignoreCase;
  const matchPrefixes = Object.freeze(
    routes.map((route) => (route.pathPrefix === undefined ? undefined : segmentPrefix(ignoreCase ? route.pathPrefix.toLowerCase() : route.pathPrefix))),
  );
  return Object.freeze({ routes: Object.freeze(routes), fallback, ignoreCase, matchPrefixes, managedHeaders: Object.freeze([...managed]) });
}

function stripUndefined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** `Host` without port, lower-case, without a trailing dot (an IPv6 literal keeps its brackets). */
export function hostName(hostHeader: string | undefined): string {
  if (hostHeader === undefined) return '';
  const host = hostHeader.toLowerCase();
  if (host.startsWith('[')) return host.slice(0, host.indexOf(']') + 1);
  const colon = host.lastIndexOf(':');
  const name = colon === -1 ? host : host.slice(0, colon);
  return name.endsWith('.') ? name.slice(0, -1) : name;
}

/** The first route matching a host name and a path (already case-folded when the table ignores case). */
export function matchRoute(table: RouteTable, host: string, path: string): RoutePolicy {
  const { routes, matchPrefixes } = table;
  for (let index = 0; index < routes.length; index++) {
    const route = routes[index] as RoutePolicy;
    if (route.host !== undefined && !hostMatches(route.host, host)) continue;
    const prefix = matchPrefixes[index];
    if (prefix !== undefined && !pathMatches(prefix, path)) continue;
    return route;
  }
  return table.fallback;
}

export interface RouteOptions {
  /**
   * The front forwards the target as received, not the canonical path cnfguard judged (the
   * decision API: nginx's X-Original-URI, Envoy's path, Traefik's X-Forwarded-Uri). Then every
   * reading an upstream could make of it ({@link rawReadings}), resolved or not, must choose the
   * same route.
   */
  readonly forwardedRaw?: boolean;
}

/**
 * The route a request is judged by: both readings of its path (see path.ts), or every reading
 * when the target is forwarded as received, must choose the same one; otherwise the spelling is
 * ambiguous and refused.
 */
export function routeFor(table: RouteTable, host: string, target: Pick<ParsedTarget, 'path' | 'received'>, options: RouteOptions = {}): RoutePolicy {
  if (table.routes.length === 0) return table.fallback;
  const paths = routingPaths(target, table.ignoreCase);
  const route = matchRoute(table, host, paths.canonical);
  if (paths.permissive !== paths.canonical && matchRoute(table, host, paths.permissive) !== route) {
    throw new GuardError('path_ambiguous', { detail: 'the path reads as another route once decoded, without ;params or trailing dots' });
  }
  // Forwarded as received or not, the escape stays in what the upstream gets: one that decodes before it splits off the query reads `/admin%3Fx` as /admin.
  const cut = decodedBeforeQuery(target.received, table.ignoreCase);
  if (cut !== undefined && matchRoute(table, host, cut) !== route) {
    throw new GuardError('path_ambiguous', { detail: 'the path reads as another route when an encoded ? or # ends it' });
  }
  if (options.forwardedRaw === true && !readsOneWay(target.received)) {
    for (const reading of rawReadings(target.received, table.ignoreCase)) {
      if (matchRoute(table, host, reading) !== route) {
        throw new GuardError('path_ambiguous', { detail: 'the front forwards the path as received, and an upstream may read it as another route (dot segments unresolved, decoded, without ;params, a leading //segment as a host)' });
      }
    }
  }
  return route;
}
