/**
 * Benchmark child: the floor for cnfguard over HTTP/2 (issue 15), a bare Node 24 h2 forwarder. It
 * terminates TLS with ALPN h2 and the same listener settings as cnfguard (a client certificate
 * requested, never required), and forwards every request, through the same compatibility API
 * (request, response) cnfguard's edge uses, to the HTTP/1.1 upstream with undici, checking nothing.
 * Like cnfguard's listener it answers HTTP/1.1 clients too (ALPN fallback), through the same
 * handler: the h2 phase gives both the same HTTP/1.1 history before comparing them, since a
 * process that has served both protocols runs its shared code (its own, Node's streams and
 * events) on polymorphic paths, ~6% more CPU per h2 request than one that never saw HTTP/1.1.
 *
 *   bare-h2-forwarder.ts CONFIG_JSON     { cert, key, upstream }
 */
import { readFileSync } from 'node:fs';
import http2, { type Http2ServerRequest, type Http2ServerResponse, type OutgoingHttpHeaders } from 'node:http2';
import { pipeline } from 'node:stream';
import { Agent, request } from 'undici';
import { failChild, listenOnLoopback, serveChild } from '../lib/children.ts';

interface Options {
  cert: string;
  key: string;
  upstream: string;
}

// Connection-specific fields, which HTTP/2 forbids (RFC 9113 §8.2.2), and the request's framing.
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'expect', 'host']);

function fields(headers: Record<string, string | string[] | undefined>): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(headers)) if (value !== undefined && !name.startsWith(':') && !HOP_BY_HOP.has(name)) out[name] = value;
  return out;
}

try {
  const options = JSON.parse(process.argv[2] ?? '{}') as Options;
  const agent = new Agent({ keepAliveTimeout: 60_000, connections: 256 });
  const upstream = options.upstream.replace(/\/$/, '');
  const forward = (req: Http2ServerRequest, res: Http2ServerResponse) => {
    // An HTTP/1.1 request (IncomingMessage) has no stream: its framing headers say whether a body follows.
    const bodyless = req.stream === undefined ? req.headers['content-length'] === undefined && req.headers['transfer-encoding'] === undefined : req.stream.endAfterHeaders;
    request(`${upstream}${req.url}`, { dispatcher: agent, method: req.method as 'GET', headers: fields(req.headers), body: bodyless ? null : req }).then(
      (answer) => {
        if (res.destroyed) {
          answer.body.dump().catch(() => {});
          return;
        }
        res.writeHead(answer.statusCode, fields(answer.headers) as OutgoingHttpHeaders);
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
  const server = http2.createSecureServer({ cert: readFileSync(options.cert), key: readFileSync(options.key), requestCert: true, rejectUnauthorized: false, minVersion: 'TLSv1.2', allowHTTP1: true }, forward);
  server.on('sessionError', () => {});
  const port = await listenOnLoopback(server);
  serveChild({ url: `https://127.0.0.1:${port}` }, async () => {
    server.close();
    await agent.close();
  });
} catch (err) {
  failChild(err);
}
