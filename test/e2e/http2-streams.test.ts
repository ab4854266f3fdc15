/**
 * HTTP/2 streams through cnfguard (issue 15): per-stream slowloris (a body that trickles or never
 * ends is reset after limits.requestTimeoutMs while its session keeps serving), a header block
 * left open, request trailers relayed to an h2c upstream, and request bodies streamed, not
 * buffered, to HTTP/2 and HTTP/1.1 upstreams. Real TLS, Node's http2 client and raw frames.
 */
import { X509Certificate } from 'node:crypto';
import { EventEmitter, once } from 'node:events';
import http from 'node:http';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { thumbprintS256 } from '../../src/tls/certificates.ts';
import { FLAG, FRAME, frame, rawSession, requestBlock } from '../fixtures/h2-frames.ts';
import { startIntrospectionStub, type IntrospectionStub } from '../fixtures/introspection-stub.ts';
import { baseConfig, startDeployment, startGuard, type Deployment, type Guard } from '../fixtures/stack.ts';

const REQUEST_TIMEOUT_MS = 1500;
const BOUND = 'bound-h2';

let d: Deployment;
let stub: IntrospectionStub;
let guard: Guard;
let h2c: http2.Http2Server;
let h1: http.Server;
/** What the upstreams saw: `chunk` at each request's first body byte, `request` at its end. */
const seen = new EventEmitter<{ chunk: [path: string]; request: [path: string, trailers: http2.IncomingHttpHeaders] }>();

beforeAll(async () => {
  d = await startDeployment();
  stub = await startIntrospectionStub(d.pki.certs.server);
  const thumbprint = thumbprintS256(new X509Certificate(d.pki.certs.clients.client1.cert).raw);
  stub.answers.set(BOUND, { active: true, sub: 'alice', client_id: 'app', scope: 'read', exp: Math.floor(Date.now() / 1000) + 600, cnf: { 'x5t#S256': thumbprint } });
  h2c = http2.createServer();
  h2c.on('stream', (stream, headers) => {
    const path = String(headers[':path']);
    if (path === '/h2c/with-trailers') {
      // A plain (not gRPC) answer with a length and unannounced trailers.
      stream.respond({ ':status': 200, 'content-length': 4 }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'x-checksum': 'abc123' }));
      stream.end('body');
      return;
    }
    if (path === '/h2c/early') {
      // Answers before the request body ends, without waiting for it.
      stream.on('data', () => {});
      stream.respond({ ':status': 200 });
      stream.end('early');
      return;
    }
    let first = true;
    let trailers: http2.IncomingHttpHeaders = {};
    stream.on('data', () => {
      if (first) seen.emit('chunk', path);
      first = false;
    });
    stream.on('trailers', (received: http2.IncomingHttpHeaders) => (trailers = received));
    stream.on('end', () => {
      seen.emit('request', path, trailers);
      if (stream.destroyed) return;
      stream.respond({ ':status': 200 });
      stream.end('h2c');
    });
    stream.on('error', () => {});
  });
  h2c.listen(0, '127.0.0.1');
  h1 = http.createServer((req, res) => {
    let first = true;
    req.on('data', () => {
      if (first) seen.emit('chunk', req.url ?? '');
      first = false;
    });
    req.on('end', () => res.end('h1'));
  });
  h1.listen(0, '127.0.0.1');
  await Promise.all([once(h2c, 'listening'), once(h1, 'listening')]);
  guard = await startGuard(
    d.pki,
    baseConfig(d.pki, d.as, d.upstream, {
      introspection: { url: stub.url, clientId: 'rs', clientSecret: 'rs-secret', ca: d.pki.files.ca, timeoutMs: 800 },
      upstreamTimeoutMs: 60_000,
      routes: [
        { pathPrefix: '/h2c', upstream: `http://127.0.0.1:${(h2c.address() as AddressInfo).port}`, upstreamHttp2: true },
        { pathPrefix: '/h1', upstream: `http://127.0.0.1:${(h1.address() as AddressInfo).port}` },
      ],
      limits: { requestTimeoutMs: REQUEST_TIMEOUT_MS, headersTimeoutMs: REQUEST_TIMEOUT_MS },
    }),
  );
});
afterAll(async () => {
  await guard?.stop();
  h2c?.close();
  h1?.close();
  await stub?.stop();
  await d?.stop();
});

const connect = () => {
  const session = http2.connect(guard.started.url, { ca: d.pki.certs.ca.cert, ...d.pki.certs.clients.client1, servername: 'localhost' });
  session.on('error', () => {});
  return session;
};

/** Resolves with the stream's status and reset code when it closes, or 'still open' after `waitMs`. */
function outcome(stream: http2.ClientHttp2Stream, waitMs: number): Promise<{ status: number | undefined; rstCode: number | undefined } | 'still open'> {
  let status: number | undefined;
  stream.on('response', (headers) => (status = Number(headers[':status'])));
  stream.on('error', () => {});
  stream.resume();
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve('still open'), waitMs);
    stream.once('close', () => {
      clearTimeout(timer);
      resolve({ status, rstCode: stream.rstCode });
    });
  });
}

const post = (path: string, extra: http2.OutgoingHttpHeaders = {}) => ({ ':method': 'POST', ':path': path, authorization: `Bearer ${BOUND}`, 'content-type': 'application/octet-stream', ...extra });

describe('HTTP/2 stream-level slowloris', () => {
  it('a trickling body, a body that never starts and one the upstream answered early are reset after requestTimeoutMs; the session serves on', async () => {
    const session = connect();
    // The client stays active on the session (PINGs), so only a per-stream deadline can end the two streams.
    const pings = setInterval(() => session.ping(() => {}), 100);
    const trickle = session.request(post('/h1/trickle'));
    const drip = setInterval(() => trickle.write('x'), 100);
    const silent = session.request(post('/h2c/silent'));
    // Answered by the upstream before the body ends; the client keeps sending.
    const early = session.request(post('/h2c/early'));
    const drip2 = setInterval(() => early.write('x'), 100);
    const started = performance.now();
    const [trickled, stalled, answered] = await Promise.all([outcome(trickle, REQUEST_TIMEOUT_MS * 5), outcome(silent, REQUEST_TIMEOUT_MS * 5), outcome(early, REQUEST_TIMEOUT_MS * 5)]);
    clearInterval(drip);
    clearInterval(drip2);
    const elapsed = performance.now() - started;
    try {
      // 408 before any response byte, then RST_STREAM(NO_ERROR): stop sending (RFC 9113 §8.1).
      expect(trickled).toEqual({ status: 408, rstCode: http2.constants.NGHTTP2_NO_ERROR });
      expect(stalled).toEqual({ status: 408, rstCode: http2.constants.NGHTTP2_NO_ERROR });
      // Already answered: only told to stop sending.
      expect(answered).toEqual({ status: 200, rstCode: http2.constants.NGHTTP2_NO_ERROR });
      expect(elapsed).toBeGreaterThanOrEqual(REQUEST_TIMEOUT_MS * 0.9);
      // The same session still serves.
      expect(session.closed).toBe(false);
      const after = session.request({ ':path': '/h1/after', authorization: `Bearer ${BOUND}` });
      expect(await outcome(after, REQUEST_TIMEOUT_MS * 3)).toMatchObject({ status: 200 });
    } finally {
      clearInterval(pings);
      session.destroy();
    }
    // The server writes a stream's line when its side closes, which may come just after the client saw the reset.
    const lineOf = (path: string) => guard.logs.entries().find((entry) => entry.path === path);
    await expect.poll(() => lineOf('/h1/trickle'), { timeout: 5000 }).toMatchObject({ status: 408, reason: 'request_timeout' });
    await expect.poll(() => lineOf('/h2c/early'), { timeout: 5000 }).toMatchObject({ status: 200 });
    expect(lineOf('/h2c/early')?.reason).not.toBe('request_timeout');
  });

  it('a stream whose header block never ends (no CONTINUATION) does not hold the session', async () => {
    // HEADERS with END_STREAM but not END_HEADERS; the CONTINUATION never comes.
    const result = await rawSession(guard.started.port, d.pki.certs.ca.cert, d.pki.certs.clients.client1, (write) => write(frame(FRAME.HEADERS, FLAG.END_STREAM, 1, requestBlock)), REQUEST_TIMEOUT_MS * 5);
    expect(result.closed).toBe(true);
  });
});

describe('HTTP/2 response trailers', () => {
  // Trailers are waited for only when the client can use them: `TE: trailers` (RFC 9110 §10.1.4).
  // Otherwise the answer ends with its body's last DATA frame (see test/e2e/long-connections.test.ts).
  for (const [client, te, expected] of [['that said TE: trailers', { te: 'trailers' }, { 'x-checksum': 'abc123' }], ['that did not', {}, undefined]] as const) {
    it(`an HTTP/2 upstream's trailers reach a client ${client}${expected === undefined ? ' only as a clean end without them' : ''}`, async () => {
      const session = connect();
      try {
        const stream = session.request({ ':path': '/h2c/with-trailers', authorization: `Bearer ${BOUND}`, ...te });
        let trailers: http2.IncomingHttpHeaders | undefined;
        stream.on('trailers', (received) => (trailers = received));
        let body = '';
        stream.setEncoding('utf8').on('data', (chunk: string) => (body += chunk));
        const ended = await outcome(stream, 5000);
        expect({ ended, body, checksum: trailers?.['x-checksum'] }).toEqual({ ended: { status: 200, rstCode: 0 }, body: 'body', checksum: expected?.['x-checksum'] });
      } finally {
        session.close();
      }
    });
  }
});

describe('HTTP/2 request bodies and trailers', () => {
  it('request trailers reach an h2c upstream; identity and authentication fields in them do not', async () => {
    const session = connect();
    const arrived = new Promise<http2.IncomingHttpHeaders>((resolve) => seen.on('request', (path, trailers) => path === '/h2c/trailers' && resolve(trailers)));
    const stream = session.request(post('/h2c/trailers', { te: 'trailers' }), { waitForTrailers: true });
    stream.on('wantTrailers', () => stream.sendTrailers({ 'x-checksum': 'abc123', 'x-auth-subject': 'forged', authorization: 'Bearer other' }));
    stream.end('body');
    const answer = outcome(stream, 5000);
    const trailers = await arrived;
    expect(trailers['x-checksum']).toBe('abc123');
    expect(trailers['x-auth-subject']).toBeUndefined();
    expect(trailers.authorization).toBeUndefined();
    expect(await answer).toMatchObject({ status: 200 });
    session.destroy();
  });

  it.each(['/h2c/stream', '/h1/stream'])('the upstream sees the first chunk before the client ends the stream (%s)', async (path) => {
    const session = connect();
    const firstChunk = new Promise<void>((resolve) => seen.on('chunk', (p) => p === path && resolve()));
    const stream = session.request(post(path));
    const answer = outcome(stream, 5000);
    stream.write('first');
    // A buffering proxy would hold the chunk until the end: this would never resolve (the race fails).
    const reached = await Promise.race([firstChunk.then(() => true), new Promise<boolean>((resolve) => setTimeout(() => resolve(false), REQUEST_TIMEOUT_MS * 0.8))]);
    stream.end('last');
    expect(reached).toBe(true);
    expect(await answer).toMatchObject({ status: 200 });
    session.destroy();
  });
});
