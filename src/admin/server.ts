/**
 * The admin listener (plain HTTP, meant for loopback or the pod network): `/healthz` says the
 * process is alive, `/readyz` whether it serves (503 while starting or draining), `/metrics`
 * the Prometheus text of this app's registry. `/readyz?upstream=1` is ready only when cnfguard is
 * and the upstream answers too (the readiness passthrough for a sidecar's loopback-only app).
 */
import http from 'node:http';
import type { UpstreamCheckResult } from './upstream-check.ts';

export interface AdminState {
  ready(): boolean;
  /** Extra `name: value` lines for the /readyz body (e.g. the shared store's state); never changes readiness. */
  details?(): Record<string, string>;
  /** `/jwks.json`: the assertion keys (`assertion`); undefined or absent: 404. */
  jwks?(): string | undefined;
  /** Asked by `/readyz?upstream=1` only, and only while ready. */
  upstream?(): Promise<UpstreamCheckResult>;
}

/** `?upstream=1` (or `true`, or a bare `?upstream`) asks for the upstream check too. */
function wantsUpstream(url: string): boolean {
  const query = url.indexOf('?');
  if (query === -1) return false;
  const value = new URLSearchParams(url.slice(query + 1)).get('upstream');
  return value === '' || value === '1' || value === 'true';
}

/** A prom-client Registry, or a cluster aggregator presented the same way. */
export interface MetricsSource {
  metrics(): Promise<string>;
  readonly contentType: string;
}

export function createAdminServer(registry: MetricsSource, state: AdminState): http.Server {
  return http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const send = (status: number, body: string, type = 'text/plain; charset=utf-8') => {
      res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
      res.end(body);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, 'method not allowed\n');
    if (path === '/healthz') return send(200, 'ok\n');
    if (path === '/readyz') {
      const extra = Object.entries(state.details?.() ?? {})
        .map(([name, value]) => `${name}: ${value}\n`)
        .join('');
      if (!state.ready()) return send(503, `not ready\n${extra}`);
      if (!wantsUpstream(req.url ?? '')) return send(200, `ready\n${extra}`);
      // Fail closed: a listener without an upstream check cannot say the upstream answers.
      const check = state.upstream?.() ?? Promise.resolve({ ok: false, detail: 'not checked here' });
      check.then(
        (result) => send(result.ok ? 200 : 503, `${result.ok ? 'ready' : 'not ready'}\nupstream: ${result.detail}\n${extra}`),
        (err: unknown) => send(503, `not ready\nupstream: down (${(err as Error).message})\n${extra}`),
      );
      return;
    }
    if (path === '/metrics') {
      registry.metrics().then(
        (text) => send(200, text, registry.contentType),
        (err: unknown) => send(500, `metrics unavailable: ${(err as Error).message}\n`),
      );
      return;
    }
    const keys = path === '/jwks.json' ? state.jwks?.() : undefined;
    if (keys !== undefined) return send(200, keys, 'application/jwk-set+json');
    send(404, 'not found\n');
  });
}
