/**
 * RFC 9728 protected resource metadata: how a client learns which authorization servers, scopes
 * and token bindings this resource expects. One document per resource identifier (the top-level
 * `resource` and any route's own), served at the path RFC 9728 §3.1 derives from it.
 */
import type { Settings } from '../config/schema.ts';
import type { RoutePolicy, RouteTable } from './route.ts';
import { metadataFields } from '../proof/registry.ts';

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
 * The document for one resource: its authorization servers and scopes, then each proof method's
 * own fields (src/proof/registry.ts: mTLS's `tls_client_certificate_bound_access_tokens`, DPoP's
 * `dpop_signing_alg_values_supported` and `dpop_bound_access_tokens_required`).
 */
export function metadataFor(
  resource: string,
  routes: readonly RoutePolicy[],
  authorizationServers: readonly string[],
  dpopAlgorithms: readonly string[] = [],
): ResourceMetadata {
  const scopes = [...new Set(routes.flatMap((route) => route.scopes))];
  return {
    resource,
    ...(authorizationServers.length > 0 && { authorization_servers: [...authorizationServers] }),
    ...(scopes.length > 0 && { scopes_supported: scopes }),
    bearer_methods_supported: ['header'],
    ...metadataFields(routes, { dpopAlgorithms }),
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
