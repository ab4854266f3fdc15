/**
 * Step: which route a request takes. Routes are matched in config order, first match wins, and
 * the default route (top-level `upstream` and `binding`) comes last.
 */
import type { BindingMode, Settings } from '../config/schema.ts';

export interface RoutePolicy {
  /** `default` or `routes[N]`: the name used in logs and metrics. */
  readonly id: string;
  readonly host: string | undefined;
  readonly pathPrefix: string | undefined;
  readonly upstream: URL;
  readonly binding: BindingMode;
  /** Every one of these must be in the token's `scope`. */
  readonly scopes: readonly string[];
  readonly missingCertificate: Readonly<{ code: string; status: number }>;
}

export interface RouteTable {
  readonly routes: readonly RoutePolicy[];
  readonly fallback: RoutePolicy;
}

export function compileRoutes(settings: Settings): RouteTable {
  const missingCertificate = Object.freeze({ ...settings.errors.missingCertificate });
  const fallback: RoutePolicy = Object.freeze({
    id: 'default',
    host: undefined,
    pathPrefix: undefined,
    upstream: new URL(settings.upstream),
    binding: settings.binding,
    scopes: Object.freeze([]),
    missingCertificate,
  });
  const routes = settings.routes.map((route, index) =>
    Object.freeze({
      id: `routes[${index}]`,
      host: route.host,
      pathPrefix: route.pathPrefix,
      upstream: new URL(route.upstream ?? settings.upstream),
      binding: route.binding ?? settings.binding,
      scopes: Object.freeze([...route.scopes]),
      missingCertificate,
    }),
  );
  return Object.freeze({ routes: Object.freeze(routes), fallback });
}

/** `Host` without port, lower-case (an IPv6 literal keeps its brackets). */
export function hostName(hostHeader: string | undefined): string {
  if (hostHeader === undefined) return '';
  const host = hostHeader.toLowerCase();
  if (host.startsWith('[')) return host.slice(0, host.indexOf(']') + 1);
  const colon = host.lastIndexOf(':');
  return colon === -1 ? host : host.slice(0, colon);
}

/** Path prefixes match whole segments: `/admin` matches `/admin` and `/admin/x`, not `/administrator`. */
export function pathMatches(prefix: string, path: string): boolean {
  if (!path.startsWith(prefix)) return false;
  return prefix.endsWith('/') || path.length === prefix.length || path[prefix.length] === '/';
}

export function matchRoute(table: RouteTable, host: string, path: string): RoutePolicy {
  for (const route of table.routes) {
    if (route.host !== undefined && route.host !== host) continue;
    if (route.pathPrefix !== undefined && !pathMatches(route.pathPrefix, path)) continue;
    return route;
  }
  return table.fallback;
}
