/**
 * Benchmark child: the baseline of issue 7, a bare Node 24 mTLS forwarder. It terminates TLS with
 * the same listener settings as cnfguard (a client certificate requested, never required) and
 * forwards every request to the upstream with undici, checking nothing.
 *
 *   bare-forwarder.ts CONFIG_JSON     { cert, key, upstream, mode: 'forward' | 'proxy3' | 'proxy3-weakmap' | 'static' }
 *
 * `proxy3` forwards with http-proxy-3 over a keep-alive node:http Agent set up like cnfguard's
 * src/proxy/forward.ts (an experiment: the forwarding client's cost, everything else equal).
 * `proxy3-weakmap` adds only what forward.ts keeps per request: a WeakMap<request, { onResponse }>
 * side table whose value is a closure over the request's scope. V8's scavenger keeps the values of
 * an old-space WeakMap alive, so every request's whole object graph survives young-generation GC
 * and is promoted (an experiment: the GC cost of that pattern, everything else equal).
 * `static` answers a small fixed body itself (no upstream): the ceiling of one Node process doing
 * mTLS keep-alive HTTP on one core with this load generator, for calibration.
 */
import { readFileSync } from 'node:fs';
import http, { type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import { pipeline } from 'node:stream';
import { createProxyServer } from 'http-proxy-3';
import { Agent, request } from 'undici';
import { failChild, listenOnLoopback, serveChild } from '../lib/children.ts';
import { sampleHeap } from '../lib/heap-sample.ts';

interface Options {
  cert: string;
  key: string;
  upstream: string;
  mode: 'forward' | 'proxy3' | 'proxy3-weakmap' | 'static';
}

const HOP_BY_HOP = ['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'expect'];
const STATIC_BODY = Buffer.from('{"ok":true,"service":"bench-static"}\n');

function withoutHopByHop(headers: IncomingHttpHeaders | Record<string, string | string[] | undefined>): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(headers)) if (value !== undefined && !HOP_BY_HOP.includes(name)) out[name] = value;
  return out;
}

try {
  const options = JSON.parse(process.argv[2] ?? '{}') as Options;
  const agent = new Agent({ keepAliveTimeout: 60_000 });
  const upstream = options.upstream.replace(/\/$/, '');
  const respondStatic = (req: IncomingMessage, res: ServerResponse) => {
    req.resume();
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': STATIC_BODY.length });
    res.end(STATIC_BODY);
  };
  const forwardWithUndici = (req: IncomingMessage, res: ServerResponse) => {
    const hasBody = req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined;
    request(`${upstream}${req.url ?? '/'}`, {
      dispatcher: agent,
      method: req.method as 'GET',
      headers: withoutHopByHop(req.headers),
      body: hasBody ? req : null,
    }).then(
      (answer) => {
        // The client may have gone away while the upstream answered.
        if (res.destroyed) {
          answer.body.dump().catch(() => {});
          return;
        }
        res.writeHead(answer.statusCode, withoutHopByHop(answer.headers));
        pipeline(answer.body, res, () => {});
      },
      () => {
        if (res.headersSent || res.destroyed) res.destroy();
        else {
          res.writeHead(502, { 'content-length': 0 });
          res.end();
        }
      },
    ).catch(() => res.destroy());
  };
  const httpAgent = new http.Agent({ keepAlive: true, maxSockets: 256, maxFreeSockets: 64, scheduling: 'lifo' });
  const proxy = createProxyServer({ agent: httpAgent, xfwd: false });
  proxy.on('econnreset', () => {});
  // Experiment knob: a per-request upstream timeout as cnfguard sets it (proxyReq.setTimeout).
  const requestTimeoutMs = Number(process.env.BENCH_PROXY3_REQUEST_TIMEOUT_MS ?? 0);
  if (requestTimeoutMs > 0) proxy.on('proxyReq', (proxyReq) => proxyReq.setTimeout(requestTimeoutMs, () => proxyReq.destroy()));
  const target = new URL(upstream);
  const pending = new WeakMap<IncomingMessage, { onResponse: () => void }>();
  const sideTable = options.mode === 'proxy3-weakmap';
  let responses = 0;
  if (sideTable) proxy.on('proxyRes', (_proxyRes, req) => pending.get(req)?.onResponse());
  const forwardWithProxy3 = (req: IncomingMessage, res: ServerResponse) => {
    if (sideTable) pending.set(req, { onResponse: () => void (responses += res.statusCode > 0 ? 1 : 0) });
    proxy.web(req, res, { target }, () => {
      if (!res.headersSent && !res.destroyed) {
        res.writeHead(502, { 'content-length': 0 });
        res.end();
      } else res.destroy();
    });
  };
  const server = https.createServer(
    {
      cert: readFileSync(options.cert),
      key: readFileSync(options.key),
      requestCert: true,
      rejectUnauthorized: false,
      minVersion: 'TLSv1.2',
      keepAliveTimeout: 5_000,
    },
    options.mode === 'static' ? respondStatic : options.mode === 'forward' ? forwardWithUndici : forwardWithProxy3,
  );
  const port = await listenOnLoopback(server);
  serveChild({ url: `https://127.0.0.1:${port}` }, async () => {
    server.closeAllConnections();
    server.close();
    proxy.close();
    httpAgent.destroy();
    await agent.close();
  }, {
    heapSample: async (message) => sampleHeap(Number(message.seconds ?? 2)),
    stats: async () => ({ responses }),
  });
} catch (err) {
  failChild(err);
}
