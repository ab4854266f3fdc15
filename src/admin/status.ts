/**
 * `/status`: what an operator asks first, as one JSON document, from what cnfguard already knows:
 * version and uptime, the config file in force and its SHA-256, the routes (name, match, methods,
 * binding, validation), cache sizes, the breaker, and the AS, JWKS, shared store and each route's
 * upstream as last seen in traffic (admin/last-seen.ts). Asking never probes anything; nothing
 * secret is in it (upstream URLs lose their userinfo; the AS is shown as `introspection.url` is
 * logged, without userinfo, query or fragment).
 */
import { resolve } from 'node:path';
import type { Settings } from '../config/schema.ts';
import { compileRoutes } from '../pipeline/route.ts';
import { NODE_VERSION, VERSION } from '../version.ts';
import type { Sighting } from './last-seen.ts';
import type { Metrics, SizeSources } from './metrics.ts';

export interface StatusSources {
  /** The process's own metrics and sizes; absent on the cluster primary, whose workers hold them. */
  metrics?: Metrics;
  sizes?: SizeSources;
  /** On the cluster primary: how many workers there are and how many serve. */
  workers?: () => { count: number; ready: number };
  /** Milliseconds since the epoch. */
  now: () => number;
  startedAt: number;
  /** The config file in force (undefined for a config built in code), its SHA-256 as loaded, and the settings in force. */
  config: () => { file: string | undefined; sha256: string | undefined; settings: Settings };
  ready: () => boolean;
  /** Shown introspection URL (no userinfo, query or fragment); undefined when no route introspects. */
  introspectionUrl: string | undefined;
  /** The shared store, when `sharedState` is set: `up` now. `role`: primary, failover or down (state/kv.ts). */
  sharedState?: () => { up: boolean; role?: string; secretMismatch?: string | null } | 'per-worker';
}

/** An introspection URL as logs show it: no userinfo, query or fragment. */
export function shownUrl(url: string): string {
  const parsed = new URL(url);
  return `${parsed.origin}${parsed.pathname}`;
}

const PER_WORKER = 'kept per worker: ask a worker, or see /metrics';

/** A sighting as JSON: ok, what was seen, when (ISO 8601) and how long ago; `never` before the first. */
function seen(sighting: Sighting | undefined | null, now: number): Record<string, unknown> {
  if (sighting === null) return { lastSeen: PER_WORKER };
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
  const { metrics, sizes, now } = sources;
  const last = (name: string) => (metrics === undefined ? null : metrics.lastSeen.get(name));
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
    upstream: { url: withoutUserinfo(route.upstream), ...seen(last(`upstream:${route.id}`), at) },
  }));
  const breakerOpen = metrics === undefined ? undefined : (await metrics.circuitOpen.get()).values[0]?.value === 1;
  const shared = sources.sharedState?.();
  return {
    version: VERSION,
    node: NODE_VERSION,
    pid: process.pid,
    ready: sources.ready(),
    startedAt: new Date(sources.startedAt).toISOString(),
    uptimeSeconds: Math.max(0, Math.round((at - sources.startedAt) / 1000)),
    // Absolute: the path as given (`-c cnfguard.yaml`) says nothing without the working directory.
    config: { file: file === undefined ? null : resolve(file), sha256: sha256 ?? null },
    ...(sources.workers !== undefined && { workers: sources.workers() }),
    routes,
    caches: sizes === undefined ? PER_WORKER : { tokens: sizes.cacheEntries(), maxEntries: settings.introspection.cache.maxEntries, openConnections: sizes.connections() },
    breaker: { state: breakerOpen === undefined ? PER_WORKER : breakerOpen ? 'open' : 'closed' },
    authorizationServer: sources.introspectionUrl === undefined ? null : { url: sources.introspectionUrl, ...seen(last('as'), at) },
    jwks: settings.jwt === undefined ? null : { url: withoutUserinfo(new URL(settings.jwt.jwksUri)), ...seen(last('jwks'), at) },
    sharedState: shared === undefined ? null : shared === 'per-worker' ? PER_WORKER : { state: shared.up ? 'up' : 'down', role: shared.role ?? (shared.up ? 'primary' : 'down'), ...(shared.secretMismatch !== undefined && { secretMismatch: shared.secretMismatch }) },
  };
}
