/**
 * One JWKS cache per URI: local JWT validation (`jwt.jwksUri`) and signed introspection answers
 * (`introspection.jwksUri`, default the former) share the cache, its fetches, its cooldown, its
 * refresh age (`jwt.refreshSeconds`) and its metrics when they name the same keys. Every fetch goes with the AS's trust (introspection.ca).
 */
import type { Metrics } from '../admin/metrics.ts';
import type { LoadedConfig } from '../config/load.ts';
import type { Logger } from '../log.ts';
import { traced, type TracingSlot } from '../observe/tracing.ts';
import { createHttpJwksFetch, createJwksCache, DEFAULT_JWKS_REFRESH_MS, type FetchJwks, type JwksCache } from '../validation/jwt.ts';

export interface JwksDirectory {
  /** The cache for `uri`, made on first use. */
  cacheFor(uri: string): JwksCache;
  /** Fetches every key set in use (at start; a failure is logged, not thrown). */
  refreshAll(): Promise<void>;
  close(): Promise<void>;
}

export function createJwksDirectory(config: LoadedConfig, io: { metrics: Metrics; logger: Logger; now: () => number; fetchJwks: FetchJwks | undefined; tracing?: TracingSlot | undefined }): JwksDirectory {
  const { settings } = config;
  const jwt = settings.jwt;
  const caches = new Map<string, JwksCache>();
  const clients: { close(): Promise<void> }[] = [];
  return {
    cacheFor(uri) {
      let cache = caches.get(uri);
      if (cache !== undefined) return cache;
      const http = io.fetchJwks === undefined ? createHttpJwksFetch({ url: uri, ca: config.introspection.ca, timeoutMs: jwt?.timeoutMs ?? settings.introspection.timeoutMs, maxBytes: jwt?.maxJwksBytes ?? 256 * 1024 }) : undefined;
      if (http !== undefined) clients.push(http);
      const fetch = io.fetchJwks ?? (http as NonNullable<typeof http>).fetch;
      cache = createJwksCache({
        fetch: io.tracing === undefined ? fetch : traced(io.tracing, 'cnfguard.jwks', fetch),
        now: io.now,
        cooldownMs: (jwt?.refetchCooldownSeconds ?? 30) * 1000,
        refreshMs: (jwt?.refreshSeconds ?? DEFAULT_JWKS_REFRESH_MS / 1000) * 1000,
        onFetch: (ok, detail) => {
          io.metrics.jwksFetches.inc({ result: ok ? 'success' : 'failure' });
          io.metrics.lastSeen.record('jwks', ok, ok ? 'fetched' : 'fetch failed');
          if (!ok) io.logger.warn({ jwksUri: uri, detail }, 'JWKS fetch failed; keeping the keys already held');
        },
      });
      caches.set(uri, cache);
      return cache;
    },
    async refreshAll() {
      await Promise.all([...caches.values()].map((cache) => cache.refresh(true)));
    },
    async close() {
      await Promise.all(clients.map((client) => client.close()));
    },
  };
}
