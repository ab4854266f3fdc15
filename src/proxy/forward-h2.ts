import type { OutgoingHttpHeaders } from 'node:http';
import http2, { type ClientHttp2Session } from 'node:http2';
import type { Readable } from 'node:stream';
import type { GuardError } from '../oauth/reasons.ts';
import { BodyRelay, endResponse, failureOf, hasBody, onClientGone, writeResponseHead, type WebForwardOptions } from './forward-common.ts';
import type { ProxyRequest, ProxyResponse } from './messages.ts';

/**
 * HTTP/2 to the upstream (node:http2: undici speaks h2 only over TLS, and gRPC services often
 * listen on h2c). One session per origin, reopened when it closes; request and response bodies
 * stream with backpressure, and response trailers (gRPC's status) reach the client.
 */
export function createHttp2Upstream() {
  const sessions = new Map<string, ClientHttp2Session>();

  function sessionFor(origin: string): ClientHttp2Session {
    const known = sessions.get(origin);
    if (known !== undefined && !known.closed && !known.destroyed) return known;
    const session = http2.connect(origin);
    session.on('error', () => {});
    session.once('close', () => {
      if (sessions.get(origin) === session) sessions.delete(origin);
    });
    // Idle sessions do not keep the process alive at shutdown.
    session.unref();
    sessions.set(origin, session);
    return session;
  }

  function forward(req: ProxyRequest, res: ProxyResponse, target: URL, options: WebForwardOptions): void {
    let settled = false;
    const failWith = (err: GuardError): void => {
      if (settled) return;
      settled = true;
      options.onError(err);
    };
    const fail = (err: unknown): void => failWith(failureOf(err));
    if (options.signal?.aborted === true) return;
    const { host, ...rest } = options.headers;
    const headers: OutgoingHttpHeaders = {
      ...rest,
      ':method': req.method ?? 'GET',
      ':path': target.pathname === '/' ? options.target : `${target.pathname.replace(/\/$/, '')}${options.target}`,
      ':scheme': target.protocol.slice(0, -1),
      ':authority': typeof host === 'string' ? host : target.host,
    };
    // gRPC needs `te: trailers`, the one TE value HTTP/2 allows (RFC 9113 §8.2.2).
    if (req.headers.te === 'trailers') headers.te = 'trailers';
    const source = options.body ?? (req as Readable);
    const bodyless = options.body === undefined && ('stream' in req ? req.stream.endAfterHeaders : !hasBody(req));
    const relayTrailers = !bodyless && options.requestTrailers !== undefined;
    let stream: http2.ClientHttp2Stream;
    try {
      stream = sessionFor(target.origin).request(headers, { endStream: bodyless, waitForTrailers: relayTrailers });
    } catch (err) {
      fail(err);
      return;
    }
    // Once the body is sent (so the client's trailers have arrived): its trailers, or an empty
    // END_STREAM DATA frame when it sent none (Node's sendTrailers({})).
    if (relayTrailers) stream.once('wantTrailers', () => stream.sendTrailers(options.requestTrailers?.() ?? {}));
    stream.setTimeout(options.timeoutMs, () => {
      fail(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' }));
      stream.close(http2.constants.NGHTTP2_CANCEL);
    });
    if (!bodyless) source.pipe(stream);
    onClientGone(res, options.signal, () => settled, () => {
      if (!stream.closed) stream.close(http2.constants.NGHTTP2_CANCEL);
    });
    let trailers: Record<string, string | string[] | undefined> | undefined;
    // A client that takes none of the answer for the upstream's own time budget frees the upstream stream.
    const body = new BodyRelay(res, () => stream.pause(), () => stream.resume(), {
      ms: options.timeoutMs,
      onStall: (err) => {
        // Said first: the upstream's abort reports itself as a failure too.
        failWith(err);
        if (!stream.closed) stream.close(http2.constants.NGHTTP2_CANCEL);
      },
    });
    stream.on('response', (responseHeaders, flags) => {
      const status = Number(responseHeaders[':status']);
      options.onResponse?.(status);
      // A trailers-only answer (gRPC's refusals: grpc-status in the headers) ends with its HEADERS frame.
      const endsAtHead = (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) !== 0;
      // Its pseudo-headers are left out with the hop-by-hop fields, in the one copy writeResponseHead makes.
      body.head(writeResponseHead(res, status, '', responseHeaders as Record<string, string | string[] | undefined>, options.answerHeaders, true, endsAtHead), responseHeaders['content-length']);
    });
    stream.on('trailers', (received) => {
      trailers = Object.fromEntries(Object.entries(received).filter(([name]) => !name.startsWith(':'))) as Record<string, string | string[]>;
    });
    stream.on('data', (chunk: Buffer) => {
      if (!settled && body.write(chunk)) settled = true;
    });
    stream.on('end', () => {
      if (settled) return;
      settled = true;
      endResponse(res, trailers);
    });
    stream.on('error', fail);
    stream.on('close', () => {
      if (!settled && !res.headersSent) fail(Object.assign(new Error('stream closed'), { code: `H2_${stream.rstCode}` }));
      else if (!settled) {
        settled = true;
        res.destroy();
      }
    });
  }

  return {
    forward,
    close() {
      for (const session of sessions.values()) session.close();
      sessions.clear();
    },
  };
}
