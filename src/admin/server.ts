/**
 * The admin listener (plain HTTP, meant for loopback or the pod network): `/healthz` says the
 * process is alive, `/readyz` whether it serves (503 while starting or draining), `/metrics`
 * the Prometheus text of this app's registry.
 */
import http from 'node:http';

export interface AdminState {
  ready(): boolean;
  /** Extra `name: value` lines for the /readyz body (e.g. the shared store's state); never changes readiness. */
  details?(): Record<string, string>;
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
      return state.ready() ? send(200, `ready\n${extra}`) : send(503, `not ready\n${extra}`);
    }
    if (path === '/metrics') {
      registry.metrics().then(
        (text) => send(200, text, registry.contentType),
        (err: unknown) => send(500, `metrics unavailable: ${(err as Error).message}\n`),
      );
      return;
    }
    send(404, 'not found\n');
  });
}
