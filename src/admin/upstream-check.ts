/**
 * The readiness passthrough behind `/readyz?upstream=1`: does the upstream answer? In a pod the
 * app often listens on 127.0.0.1 only, where the kubelet cannot probe it; cnfguard, beside it, can.
 *
 * - no `admin.upstreamCheck.path`: a TCP connect to the default upstream's host and port;
 * - with a path: an HTTP GET of that path on the default upstream, ready on 2xx and 3xx.
 *
 * Either way within `timeoutMs`. Only the default `upstream` is checked, never the routes'. The
 * result says why in a few words (an error code or a status), never a header or a body.
 */
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';

export interface UpstreamCheckResult {
  ok: boolean;
  /** e.g. `ok (tcp 127.0.0.1:8080)`, `down (ECONNREFUSED)`, `down (HTTP 503 from GET /healthz)`. */
  detail: string;
}

export interface UpstreamCheckOptions {
  /** The default upstream now in force (it may change on reload). */
  upstream: () => string;
  path?: string | undefined;
  timeoutMs: number;
}

function defaultPort(url: URL): number {
  return url.port === '' ? (url.protocol === 'https:' ? 443 : 80) : Number(url.port);
}

function tcpCheck(url: URL, timeoutMs: number): Promise<UpstreamCheckResult> {
  const host = url.hostname.replace(/^\[|\]$/g, '');
  const port = defaultPort(url);
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const done = (result: UpstreamCheckResult) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(result);
    };
    const timer = setTimeout(() => done({ ok: false, detail: `down (no TCP connection within ${timeoutMs} ms)` }), timeoutMs);
    socket.once('connect', () => done({ ok: true, detail: `ok (tcp ${url.host})` }));
    socket.once('error', (err: NodeJS.ErrnoException) => done({ ok: false, detail: `down (${err.code ?? err.message})` }));
  });
}

function httpCheck(url: URL, path: string, timeoutMs: number): Promise<UpstreamCheckResult> {
  const target = new URL(path, url);
  const client = target.protocol === 'https:' ? https : http;
  return new Promise((resolve) => {
    let settled = false;
    const done = (result: UpstreamCheckResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      request.destroy();
      resolve(result);
    };
    const request = client.get(target, { agent: false, headers: { 'user-agent': 'cnfguard-readyz' } }, (res) => {
      const status = res.statusCode ?? 0;
      res.resume();
      done(status >= 200 && status < 400 ? { ok: true, detail: `ok (HTTP ${status} from GET ${path})` } : { ok: false, detail: `down (HTTP ${status} from GET ${path})` });
    });
    const timer = setTimeout(() => done({ ok: false, detail: `down (no answer to GET ${path} within ${timeoutMs} ms)` }), timeoutMs);
    request.once('error', (err: NodeJS.ErrnoException) => done({ ok: false, detail: `down (${err.code ?? err.message})` }));
  });
}

export function createUpstreamCheck(options: UpstreamCheckOptions): () => Promise<UpstreamCheckResult> {
  return () => {
    const url = new URL(options.upstream());
    return options.path === undefined ? tcpCheck(url, options.timeoutMs) : httpCheck(url, options.path, options.timeoutMs);
  };
}
