/**
 * `/status`: what an operator asks first, as one JSON document, from what cnfguard already knows:
 * version and uptime, the config file in force and its SHA-256, the routes (name, match, methods,
 * binding, validation), cache sizes, the breaker, and the AS, JWKS, shared store and each route's
 * upstream as last seen in traffic (admin/last-seen.ts). Asking never probes anything; nothing
 * secret is in it (upstream URLs lose their userinfo; the AS is shown as `introspection.url` is
 * logged, without userinfo, query or fragment).
 */
import type { Settings } from '../config/schema.ts';
import { compileRoutes } from '../pipeline/route.ts';
import { NODE_VERSION, VERSION } from '../version.ts';
import type { Sighting } from './last-seen.ts';
import type { Metrics, SizeSources } from './metrics.ts';

export interface StatusSources {
  metrics: Metrics;
  sizes: SizeSources;
  /** Milliseconds since the epoch. */
  now: () => number;
  startedAt: number;
  /** The config file in force (undefined for a config built in code), its SHA-256 as loaded, and the settings in force. */
  config: () => { file: string | undefined; sha256: string | undefined; settings: Settings };
  ready: () => boolean;
  /** Shown introspection URL (no userinfo, query or fragment); undefined when no route introspects. */
  introspectionUrl: string | undefined;
  /** The shared store, when `sharedState` is set: `up` now. A later store reports `role` (primary, failover) here. */
  sharedState?: () => { up: boolean; role?: string };
}

/** A sighting as JSON: ok, what was seen, when (ISO 8601) and how long ago; `never` before the first. */
function seen(sighting: Sighting | undefined, now: number): Record<string, unknown> {
  if (sighting === undefined) return { lastSeen: 'never' };
  return { ok: sighting.ok, detail: sighting.detail, lastSeen: new Date(sighting.at).toISOString(), secondsAgo: Math.max(0, Math.round((now - sighting.at) / 1000)) };
}

function withoutUserinfo(url: URL): string {
  const shown = new URL(url);
  shown.username = '';
  shown.password = '';
  return shown.toString();
}

export async function statusDocument(sources: StatusSources): Promise<Record<string, unknown>> {
  const { metrics, now } = sources;
  const at = now();
  const { file, sha256, settings } = sources.config();
  const table = compileRoutes(settings);
  const routes = [...table.routes, table.fallback].map((route) => ({
    name: route.id,
    match: route.id === 'default' ? 'anything no route above matches' : { ...(route.host !== undefined && { host: route.host }), ...(route.pathPrefix !== undefined && { pathPrefix: route.pathPrefix }) },
    methods: route.methods,
    binding: route.binding,
    validation: route.validation,
    scopes: route.scopes,
    upstream: { url: withoutUserinfo(route.upstream), ...seen(metrics.lastSeen.get(`upstream:${route.id}`), at) },
  }));
  const breakerOpen = (await metrics.circuitOpen.get()).values[0]?.value === 1;
  const shared = sources.sharedState?.();
  return {
    version: VERSION,
    node: NODE_VERSION,
    pid: process.pid,
    ready: sources.ready(),
    startedAt: new Date(sources.startedAt).toISOString(),
    uptimeSeconds: Math.max(0, Math.round((at - sources.startedAt) / 1000)),
    config: { file: file ?? null, sha256: sha256 ?? null },
    routes,
    caches: { tokens: sources.sizes.cacheEntries(), maxEntries: settings.introspection.cache.maxEntries, openConnections: sources.sizes.connections() },
    breaker: { state: breakerOpen ? 'open' : 'closed' },
    authorizationServer: sources.introspectionUrl === undefined ? null : { url: sources.introspectionUrl, ...seen(metrics.lastSeen.get('as'), at) },
    jwks: settings.jwt === undefined ? null : { url: withoutUserinfo(new URL(settings.jwt.jwksUri)), ...seen(metrics.lastSeen.get('jwks'), at) },
    sharedState: shared === undefined ? null : { state: shared.up ? 'up' : 'down', role: shared.role ?? (shared.up ? 'primary' : 'down') },
  };
}
