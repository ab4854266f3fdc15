/**
 * RFC 9728 protected resource metadata: how a client learns which authorization servers, scopes
 * and token bindings this resource expects. One document per resource identifier (the top-level
 * `resource` and any route's own), served at the path RFC 9728 §3.1 derives from it.
 */
import type { Settings } from '../config/schema.ts';
import type { RoutePolicy, RouteTable } from '../pipeline/route.ts';

export interface ResourceMetadata {
  resource: string;
  authorization_servers?: string[];
  scopes_supported?: string[];
  bearer_methods_supported: string[];
  tls_client_certificate_bound_access_tokens?: boolean;
  dpop_signing_alg_values_supported?: string[];
  dpop_bound_access_tokens_required?: boolean;
}

interface Published {
  host: string;
  body: string;
}

export interface MetadataDirectory {
  /** The JSON document for a request, or undefined when the path is not a metadata path here. */
  lookup(host: string, path: string): string | undefined;
  readonly paths: readonly string[];
}

export const WELL_KNOWN_PREFIX = '/.well-known/oauth-protected-resource';

/**
 * - `tls_client_certificate_bound_access_tokens: true` when a route of the resource accepts
 *   `mtls` and enforces the binding of bound tokens (`required` or `optional`; report-only and off
 *   do not enforce it);
 * - `dpop_signing_alg_values_supported` (dpop.algorithms) when a route of it accepts `dpop`;
 * - `dpop_bound_access_tokens_required: true` when every route of it accepts `dpop` alone under
 *   `binding: required`, so a client is told "DPoP" only when nothing else would be let through.
 */
export function metadataFor(
  resource: string,
  routes: readonly RoutePolicy[],
  authorizationServers: readonly string[],
  dpopAlgorithms: readonly string[] = [],
): ResourceMetadata {
  const scopes = [...new Set(routes.flatMap((route) => route.scopes))];
  const enforces = (route: RoutePolicy) => route.binding === 'required' || route.binding === 'optional';
  const mtls = routes.some((route) => route.methods.includes('mtls') && enforces(route));
  const dpop = routes.some((route) => route.methods.includes('dpop'));
  const dpopRequired = routes.length > 0 && routes.every((route) => route.binding === 'required' && route.methods.length === 1 && route.methods[0] === 'dpop');
  return {
    resource,
    ...(authorizationServers.length > 0 && { authorization_servers: [...authorizationServers] }),
    ...(scopes.length > 0 && { scopes_supported: scopes }),
    bearer_methods_supported: ['header'],
    ...(mtls && { tls_client_certificate_bound_access_tokens: true }),
    ...(dpop && dpopAlgorithms.length > 0 && { dpop_signing_alg_values_supported: [...dpopAlgorithms] }),
    ...(dpopRequired && { dpop_bound_access_tokens_required: true }),
  };
}

export function buildMetadataDirectory(settings: Settings, table: RouteTable): MetadataDirectory {
  const byResource = new Map<string, RoutePolicy[]>();
  for (const route of [...table.routes, table.fallback]) {
    if (route.resource === undefined) continue;
    byResource.set(route.resource, [...(byResource.get(route.resource) ?? []), route]);
  }
  const byPath = new Map<string, Published[]>();
  for (const [resource, routes] of byResource) {
    const url = new URL((routes[0] as RoutePolicy).resourceMetadataUrl as string);
    const body = JSON.stringify(metadataFor(resource, routes, settings.authorizationServers, settings.dpop.algorithms));
    byPath.set(url.pathname, [...(byPath.get(url.pathname) ?? []), { host: url.hostname.toLowerCase(), body }]);
  }
  return {
    paths: Object.freeze([...byPath.keys()]),
    lookup(host, path) {
      const candidates = byPath.get(path);
      if (candidates === undefined) return undefined;
      // Two resources on different origins may share a path: the request's host picks one.
      return (candidates.find((c) => c.host === host) ?? candidates[0])?.body;
    },
  };
}
