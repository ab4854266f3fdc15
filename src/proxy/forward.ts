/**
 * Forwarding to the upstream: bodies stream both ways with backpressure, hop-by-hop headers are
 * dropped both ways, a refused upstream is 502 and a silent one 504.
 *
 * Plain HTTP goes through undici's dispatcher (keep-alive pool); websocket upgrades through
 * http-proxy-3. Chosen by measurement (npm run bench): at cache hit, http-proxy-3 over a
 * node:http Agent cost about 60 µs of CPU per request in Node's HTTP client and the proxy's
 * passes, against about 13 µs for undici, and held cnfguard to half the bare forwarder's rate.
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex, Readable } from 'node:stream';
import { createProxyServer } from 'http-proxy-3';
import type { Dispatcher } from 'undici';
import { Agent } from '../undici.ts';
import type { GuardError } from '../oauth/reasons.ts';
import { BodyRelay, endResponse, failureOf, hasBody, onClientGone, writeResponseHead, type WebForwardOptions } from './forward-common.ts';
import { createHttp2Upstream } from './forward-h2.ts';
import type { ProxyRequest, ProxyResponse } from './messages.ts';

export interface Forwarder {
  web(req: ProxyRequest, res: ProxyResponse, target: URL, options: WebForwardOptions): void;
  /** A websocket upgrade: `req.headers` and `req.url` are what the upstream receives. */
  /** `answerHeaders` join the upstream's 101 (request id, DPoP nonce), as they join every other answer. */
  /** `onAnswer`: the upstream's status, 101 when it upgraded (any other is relayed as it is, and nothing is tunnelled). */
  ws(req: IncomingMessage, socket: Duplex, head: Buffer, target: URL, answerHeaders: Readonly<Record<string, string>>, onError: (err: GuardError) => void, onAnswer?: (status: number) => void): void;
  close(): Promise<void>;
}

export function createForwarder(): Forwarder {
  const dispatcher = new Agent({ keepAliveTimeout: 30_000, connections: 256, pipelining: 1 });
  const proxy = createProxyServer({ xfwd: false, ws: true });
  // Without a listener http-proxy-3 would throw on a client that went away mid-upgrade.
  proxy.on('econnreset', () => {});
  // http-proxy-3 writes the upstream's 101 headers as they are; this listener runs before its own.
  const upgradeAnswers = new WeakMap<IncomingMessage, Readonly<Record<string, string>>>();
  const answers = new WeakMap<IncomingMessage, (status: number) => void>();
  proxy.on('proxyReqWs', (proxyReq, req) => {
    const extra = upgradeAnswers.get(req);
    const answered = answers.get(req);
    proxyReq.once('upgrade', (proxyRes: IncomingMessage) => {
      if (extra !== undefined) Object.assign(proxyRes.headers, extra);
      answered?.(101);
    });
    // An upstream that does not upgrade answers as to any request: http-proxy-3 relays it.
    if (answered !== undefined) proxyReq.once('response', (proxyRes: IncomingMessage) => answered(proxyRes.statusCode ?? 502));
  });

  const http2Upstream = createHttp2Upstream();

  function web(req: ProxyRequest, res: ProxyResponse, target: URL, options: WebForwardOptions): void {
    if (options.upstreamHttp2 === true) {
      http2Upstream.forward(req, res, target, options);
      return;
    }
    let settled = false;
    const failWith = (err: GuardError): void => {
      if (settled) return;
      settled = true;
      options.onError(err);
    };
    const fail = (err: unknown) => failWith(failureOf(err));
    // Set at once when the client is gone: a request still queued for a pool connection is then
    // aborted at its start.
    let started: Dispatcher.DispatchController | undefined;
    let cancelled = false;
    const live = onClientGone(res, options.signal, () => settled, () => {
      cancelled = true;
      started?.abort(new Error('client request ended'));
    });
    if (!live) return;
    // `started` is the controller every later callback gets too (undici keeps one per dispatch).
    // A client that takes none of the answer for the upstream's own time budget frees the upstream connection.
    const body = new BodyRelay(res, () => started?.pause(), () => started?.resume(), {
      ms: options.timeoutMs,
      onStall: (err) => {
        // Said first: the upstream's abort reports itself as a failure too.
        failWith(err);
        started?.abort(new Error('the client took none of the answer'));
      },
    });
    const handler: Dispatcher.DispatchHandler = {
      onRequestStart(controller) {
        started = controller;
        if (cancelled) controller.abort(new Error('client request ended'));
      },
      onResponseStart(controller, statusCode, headers, statusMessage) {
        if (statusCode < 200) return; // 1xx interim answers stay on the upstream hop
        options.onResponse?.(statusCode);
        body.head(writeResponseHead(res, statusCode, statusMessage ?? '', headers, options.answerHeaders, false), headers['content-length']);
      },
      onResponseData(_controller, chunk) {
        if (body.write(chunk)) settled = true;
      },
      onResponseEnd(_controller, trailers) {
        settled = true;
        endResponse(res, trailers);
      },
      onResponseError(_controller, err) {
        fail(err);
      },
    };
    try {
      dispatcher.dispatch(
        {
          origin: target.origin,
          path: target.pathname === '/' ? options.target : `${target.pathname.replace(/\/$/, '')}${options.target}`,
          method: req.method as Dispatcher.HttpMethod,
          headers: options.headers,
          body: options.body ?? (hasBody(req) ? (req as Readable) : null),
          headersTimeout: options.timeoutMs,
          bodyTimeout: options.timeoutMs,
        },
        handler,
      );
    } catch (err) {
      fail(err);
    }
  }

  return {
    web,
    ws(req, socket, head, target, answerHeaders, onError, onAnswer) {
      upgradeAnswers.set(req, answerHeaders);
      if (onAnswer !== undefined) answers.set(req, onAnswer);
      proxy.ws(req, socket, head, { target }, (err) => onError(failureOf(err)));
    },
    async close() {
      proxy.close();
      http2Upstream.close();
      await dispatcher.destroy();
    },
  };
}
