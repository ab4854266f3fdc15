/**
 * The admin listener (plain HTTP, meant for loopback or the pod network). Its endpoints are the
 * one table ENDPOINTS below (a line adds one; `/` lists them):
 * - `/healthz` says the process is alive, `/readyz` whether it serves (503 while starting or
 *   draining); `/readyz?upstream=1` is ready only when cnfguard is and the upstream answers too
 *   (the readiness passthrough for a sidecar's loopback-only app);
 * - `/metrics` the Prometheus text of this app's registry;
 * - `/status` a JSON document of what cnfguard knows (admin/status.ts), `/config` the effective
 *   config as `cnfguard check` prints it, secrets masked.
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
  /** The `/status` document; without it, /status answers 404. */
  status?(): Promise<Record<string, unknown>>;
  /** The effective config as YAML, secrets masked; without it, /config answers 404. */
  config?(): string;
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

type Send = (status: number, body: string, type?: string) => void;

interface Context {
  req: http.IncomingMessage;
  send: Send;
  registry: MetricsSource;
  state: AdminState;
}

interface Endpoint {
  /** One line in the index. */
  summary: string;
  /** Whether this listener can answer it (e.g. /status needs a status source). */
  available?: (state: AdminState) => boolean;
  handle(context: Context): void;
}

const TEXT = 'text/plain; charset=utf-8';
const JSON_TYPE = 'application/json; charset=utf-8';

/** Answers a promise's value, or 500 naming what failed (never a stack). */
function later<T>(send: Send, what: string, promise: Promise<T>, ok: (value: T) => void): void {
  promise.then(ok, (err: unknown) => send(500, `${what} unavailable: ${(err as Error).message}\n`));
}

/** The admin endpoints, in index order. */
const ENDPOINTS: Readonly<Record<string, Endpoint>> = {
  '/': { summary: 'this index (HTML; JSON with Accept: application/json)', handle: index },
  '/healthz': { summary: 'alive: 200 while the process runs', handle: ({ send }) => send(200, 'ok\n') },
  '/readyz': { summary: 'ready: 200 while serving, 503 while starting or draining; ?upstream=1 also asks the upstream', handle: readyz },
  '/metrics': {
    summary: 'Prometheus metrics (docs/metrics.md)',
    handle: ({ send, registry }) => later(send, 'metrics', registry.metrics(), (text) => send(200, text, registry.contentType)),
  },
  '/status': {
    summary: 'JSON: version, uptime, config file and SHA-256, routes, caches, breaker, dependencies as last seen',
    available: (state) => state.status !== undefined,
    handle: ({ send, state }) => later(send, 'status', state.status!(), (document) => send(200, `${JSON.stringify(document, null, 2)}\n`, JSON_TYPE)),
  },
  '/config': {
    summary: 'the effective config as `cnfguard check` prints it, secrets masked (YAML)',
    available: (state) => state.config !== undefined,
    handle: ({ send, state }) => send(200, state.config!(), 'application/yaml; charset=utf-8'),
  },
  '/jwks.json': {
    summary: 'the keys that sign the upstream assertion (JWKS; with `assertion`)',
    available: (state) => state.jwks?.() !== undefined,
    handle: ({ send, state }) => send(200, state.jwks!() as string, 'application/jwk-set+json'),
  },
};

function listed(state: AdminState): [string, Endpoint][] {
  return Object.entries(ENDPOINTS).filter(([, endpoint]) => endpoint.available?.(state) ?? true);
}

function escapeHtml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function index({ req, send, state }: Context): void {
  const endpoints = listed(state).map(([path, endpoint]) => ({ path, summary: endpoint.summary }));
  const accept = req.headers.accept ?? '';
  if (/\bapplication\/json\b/i.test(accept) && !/\btext\/html\b/i.test(accept)) return send(200, `${JSON.stringify({ endpoints }, null, 2)}\n`, JSON_TYPE);
  const rows = endpoints.map(({ path, summary }) => `<li><a href="${escapeHtml(path)}"><code>${escapeHtml(path)}</code></a> ${escapeHtml(summary)}</li>`).join('\n');
  send(200, `<!doctype html>\n<html><head><meta charset="utf-8"><title>cnfguard admin</title></head>\n<body><h1>cnfguard admin</h1>\n<ul>\n${rows}\n</ul></body></html>\n`, 'text/html; charset=utf-8');
}

function readyz({ req, send, state }: Context): void {
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
}

export function createAdminServer(registry: MetricsSource, state: AdminState): http.Server {
  return http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    const send: Send = (status, body, type = TEXT) => {
      // RFC 9110 §15.5.6: a 405 says which methods the resource supports.
      res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store', 'x-content-type-options': 'nosniff', ...(status === 405 && { allow: 'GET, HEAD' }) });
      res.end(body);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, 'method not allowed\n');
    const endpoint = Object.hasOwn(ENDPOINTS, path) ? ENDPOINTS[path] : undefined;
    if (endpoint === undefined || !(endpoint.available?.(state) ?? true)) return send(404, 'not found; / lists the admin endpoints\n');
    endpoint.handle({ req, send, registry, state });
  });
}
