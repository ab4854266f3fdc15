/**
 * Hostile input and a failing AS. Raw TLS sockets send what curl will not (smuggling shapes,
 * oversized and slow requests); a scripted introspection endpoint fails in every way an AS can.
 * Each test would fail without its protection: the upstream must never see these requests.
 */
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { join } from 'node:path';
import tls from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { thumbprintS256 } from '../../src/tls/certificates.ts';
import { createCertificateAuthority, issueServerCertificate } from '../../src/tls/dev-certs.ts';
import { startIntrospectionStub, type IntrospectionStub } from '../fixtures/introspection-stub.ts';
import { manualClock } from '../fixtures/clock.ts';
import { baseConfig, curl, startDeployment, startGuard, type Deployment, type Guard } from '../fixtures/stack.ts';
import { closedWithin, waitFor } from '../fixtures/wait.ts';

let d: Deployment;
let stub: IntrospectionStub;
let guard: Guard;
let thumbprint1: string;
const TOKEN = 'stub-token-1';

beforeAll(async () => {
  d = await startDeployment();
  stub = await startIntrospectionStub(d.pki.certs.server);
  thumbprint1 = thumbprintS256(new X509Certificate(d.pki.certs.clients.client1.cert).raw);
  stub.answers.set(TOKEN, { active: true, client_id: 'app', scope: 'read', exp: Math.floor(Date.now() / 1000) + 600, cnf: { 'x5t#S256': thumbprint1 } });
  guard = await startGuard(
    d.pki,
    baseConfig(d.pki, d.as, d.upstream, {
      introspection: { url: stub.url, clientId: 'rs', clientSecret: 'rs-secret', ca: d.pki.files.ca, timeoutMs: 600, circuitBreaker: { failureThreshold: 1000 } },
      routes: [{ pathPrefix: '/small', maxBodyBytes: 1000 }],
      limits: { headersTimeoutMs: 800, maxConnections: 50 },
    }),
  );
});
afterAll(async () => {
  await guard?.stop();
  await stub?.stop();
  await d?.stop();
});

/** Sends raw bytes on a fresh mTLS connection and returns everything the server wrote before closing. */
async function raw(port: number, request: string | (() => Promise<string>)[], waitMs = 5000): Promise<string> {
  const socket = tls.connect({ host: '127.0.0.1', port, ca: d.pki.certs.ca.cert, ...d.pki.certs.clients.client1 });
  await once(socket, 'secureConnect');
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  socket.on('error', () => {});
  // In parts: each written once the promise before it settled (a body that arrives in steps).
  if (typeof request === 'string') socket.write(request);
  else for (const part of request) if (socket.writable) socket.write(await part());
  await closedWithin(socket, waitMs);
  socket.destroy();
  return Buffer.concat(chunks).toString('latin1');
}

/** An HTTP upstream that records each request whose body ended, and can tell when it has read everything sent to it. */
async function trackedUpstream(): Promise<{ url: string; started: string[]; completed: string[]; settled(): Promise<void>; close(): Promise<void> }> {
  const started: string[] = [];
  const completed: string[] = [];
  const sockets = new Set<Socket>();
  const server = createServer((req, res) => {
    started.push(req.url ?? '');
    req.resume();
    req.on('end', () => {
      completed.push(req.url ?? '');
      res.end('ok');
    });
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    started,
    completed,
    /** Once every connection opened before the call was accepted (a marker connection, accepted after them) and has closed. */
    async settled() {
      const marker = connect({ host: '127.0.0.1', port });
      await once(marker, 'connect');
      await waitFor(() => [...sockets].some((s) => s.remotePort === marker.localPort), 'the marker connection to be accepted');
      marker.destroy();
      await waitFor(() => sockets.size === 0, 'every connection to the upstream to close');
    },
    async close() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

const status = (response: string) => Number(response.split(' ')[1]);
const auth = `Authorization: Bearer ${TOKEN}\r\n`;

describe('request smuggling and confusion (raw sockets)', () => {
  it.each([
    ['Content-Length with Transfer-Encoding', `POST /x HTTP/1.1\r\nHost: a\r\n${auth}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`],
    ['two different Content-Lengths', `POST /x HTTP/1.1\r\nHost: a\r\n${auth}Content-Length: 4\r\nContent-Length: 5\r\n\r\nabcde`],
    ['obs-fold', `GET /x HTTP/1.1\r\nHost: a\r\n${auth}X-Folded: one\r\n two\r\n\r\n`],
    ['a control character in a header value', `GET /x HTTP/1.1\r\nHost: a\r\n${auth}X-Bad: a\x01b\r\n\r\n`],
    ['a space before the colon', `GET /x HTTP/1.1\r\nHost: a\r\n${auth}X-Bad : v\r\n\r\n`],
    ['a bare LF line ending', `GET /x HTTP/1.1\nHost: a\n${auth.trimEnd()}\n\n`],
    ['no Host in HTTP/1.1', `GET /x HTTP/1.1\r\n${auth}\r\n`],
  ])('%s: 400 from the parser, nothing forwarded', async (_name, request) => {
    const before = d.upstream.requests.length;
    const response = await raw(guard.started.port, request);
    expect(status(response)).toBe(400);
    expect(d.upstream.requests.length).toBe(before);
  });

  it('a pipelined request that fails to parse while the one before it is answered: its 400 comes after that answer, never inside it', async () => {
    const first = `GET /pipelined-first HTTP/1.1\r\nHost: a\r\n${auth}x-echo-delay-ms: 400\r\n\r\n`;
    const response = await raw(guard.started.port, `${first}GARBAGE\x01\r\n\r\n`);
    // The first answer whole (its content-length honoured), then the 400, then the end.
    const head = /^HTTP\/1\.1 200 [^]*?\r\n\r\n/.exec(response)?.[0] ?? '';
    expect(head).not.toBe('');
    const length = Number(/content-length: (\d+)/i.exec(head)?.[1]);
    const rest = response.slice(head.length);
    expect(JSON.parse(rest.slice(0, length)) as { url: string }).toMatchObject({ url: '/pipelined-first' });
    expect(rest.slice(length)).toMatch(/^HTTP\/1\.1 400 /);
  });

  it('a request line that says HTTP/2.0 over HTTP/1.1 is an HTTP/1.1 request: answered, and the process lives on', async () => {
    for (let i = 0; i < 3; i++) {
      const response = await raw(guard.started.port, 'GET / HTTP/2.0\r\nHost: localhost\r\nConnection: close\r\n\r\n');
      expect(status(response)).toBe(401);
    }
    // Its connection closed (the close handler ran), and the guard still answers.
    expect((await curl(d.pki, `${guard.started.url}/after-http20`, { cert: d.pki.files.client1, token: TOKEN })).status).toBe(200);
  });

  it.each([
    ['an absolute-form target', `GET https://evil.example/x HTTP/1.1\r\nHost: a\r\n${auth}\r\n`],
    ['two Host headers', `GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n${auth}\r\n`],
    ['a Host with userinfo', `GET /x HTTP/1.1\r\nHost: a@evil.example\r\n${auth}\r\n`],
    ['a Host with a path', `GET /x HTTP/1.1\r\nHost: a/b\r\n${auth}\r\n`],
  ])('%s: 400 invalid_request before routing', async (_name, request) => {
    const before = d.upstream.requests.length;
    const response = await raw(guard.started.port, request.replace('\r\n\r\n', '\r\nConnection: close\r\n\r\n'));
    expect(status(response)).toBe(400);
    expect(response).toContain('"error":"invalid_request"');
    expect(d.upstream.requests.length).toBe(before);
  });
});

describe('limits', () => {
  /** The access line of a request refused by Node's parser: it names the peer and the answer's request id. */
  const parserLine = async (response: string, reason: string): Promise<void> => {
    const requestId = /x-request-id: ([0-9a-f-]{36})/i.exec(response)?.[1];
    expect(requestId).toBeDefined();
    const line = await waitFor(() => guard.logs.entries().find((e) => e.msg === 'request' && e.reqId === requestId), 'the access line', { timeoutMs: 5000, intervalMs: 20 });
    expect(line).toMatchObject({ reason, client: '127.0.0.1' });
  };

  it('header bytes over the limit: 431, headers_too_large', async () => {
    const response = await raw(guard.started.port, `GET /x HTTP/1.1\r\nHost: a\r\n${auth}X-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
    expect(status(response)).toBe(431);
    await parserLine(response, 'headers_too_large');
  });

  it('more header lines than the limit (far more: Node\'s parser refuses them): 431, headers_too_many', async () => {
    const many = Array.from({ length: 120 }, (_, i) => `X-H${i}: v\r\n`).join('');
    const response = await raw(guard.started.port, `GET /x HTTP/1.1\r\nHost: a\r\n${auth}${many}Connection: close\r\n\r\n`);
    expect(status(response)).toBe(431);
    await parserLine(response, 'headers_too_many');
  });

  it('a target over the limit: 414', async () => {
    const response = await raw(guard.started.port, `GET /${'a'.repeat(9000)} HTTP/1.1\r\nHost: a\r\n${auth}Connection: close\r\n\r\n`);
    expect(status(response)).toBe(414);
  });

  it('a declared body over the route limit: 413 before the AS or the upstream is asked', async () => {
    const calls = stub.calls();
    const r = await curl(d.pki, `${guard.started.url}/small`, { cert: d.pki.files.client1, token: TOKEN, data: 'x'.repeat(2000), headers: ['content-type: application/octet-stream'] });
    expect(r.status).toBe(413);
    expect(stub.calls()).toBe(calls);
  });

  it('a chunked body over the route limit: 413, and the upstream never receives a whole body', async () => {
    const upstream = await trackedUpstream();
    const g = await startGuard(d.pki, {
      ...baseConfig(d.pki, d.as, d.upstream, { introspection: { url: stub.url, clientId: 'rs', clientSecret: 'rs-secret', ca: d.pki.files.ca }, routes: [{ pathPrefix: '/small', maxBodyBytes: 1000 }] }),
      upstream: upstream.url,
    });
    let stopped = false;
    try {
      const file = join(d.pki.dir, 'chunked.bin');
      await writeFile(file, 'y'.repeat(5000));
      const r = await curl(d.pki, `${g.started.url}/small`, {
        cert: d.pki.files.client1,
        token: TOKEN,
        dataFile: file,
        headers: ['Transfer-Encoding: chunked', 'content-type: application/octet-stream'],
      });
      expect(r.status).toBe(413);
      expect(r.json()).toMatchObject({ error: 'request_too_large' });
      // Past the point where a whole body could still arrive: cnfguard has stopped (it sends nothing
      // more) and the upstream has read every connection it was sent to the end.
      await g.stop();
      stopped = true;
      await upstream.settled();
      expect(upstream.completed.filter((url) => url === '/small')).toEqual([]);
    } finally {
      if (!stopped) await g.stop();
      await upstream.close();
    }
  });

  it('a chunked body that passes the route limit in its second chunk: 413 (not the 502 of the upstream call it cut), the connection closed', async () => {
    const chunk = `258\r\n${'y'.repeat(600)}\r\n`;
    const upstream = await trackedUpstream();
    const g = await startGuard(d.pki, { ...baseConfig(d.pki, d.as, d.upstream, { introspection: { url: stub.url, clientId: 'rs', clientSecret: 'rs-secret', ca: d.pki.files.ca }, routes: [{ pathPrefix: '/small', maxBodyBytes: 1000 }] }), upstream: upstream.url });
    let response: string;
    try {
      // The first chunk is forwarded (the upstream call is under way) before the second passes the limit.
      response = await raw(g.started.port, [
        () => Promise.resolve(`POST /small/chunks HTTP/1.1\r\nHost: a\r\n${auth}Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n${chunk}`),
        () => waitFor(() => upstream.started.includes('/small/chunks') || undefined, 'the upstream call to start', { timeoutMs: 5000, intervalMs: 10 }).then(() => `${chunk}0\r\n\r\n`),
      ]);
    } finally {
      await g.stop();
      await upstream.close();
    }
    expect(status(response)).toBe(413);
    expect(response).toMatch(/\r\nconnection: close\r\n/i);
    expect(g.logs.entries().find((e) => e.msg === 'request' && e.path === '/small/chunks')).toMatchObject({ status: 413, reason: 'body_too_large' });
  });

  describe('a body that goes wrong after the request was forwarded: one answer, one access line', () => {
    /** A guard whose upstream answers only once it has a request's whole body, so a broken body holds the call open. */
    async function withWaitingUpstream(run: (g: Guard) => Promise<void>): Promise<void> {
      const upstream = await trackedUpstream();
      const g = await startGuard(d.pki, { ...baseConfig(d.pki, d.as, d.upstream, { introspection: { url: stub.url, clientId: 'rs', clientSecret: 'rs-secret', ca: d.pki.files.ca }, limits: { headersTimeoutMs: 1000, requestTimeoutMs: 1500 } }), upstream: upstream.url });
      let stopped: Promise<void> | undefined;
      const stopOnce = (): Promise<void> => (stopped ??= g.stop());
      try {
        await run({ ...g, stop: stopOnce });
      } finally {
        await stopOnce();
        await upstream.close();
      }
    }
    const linesOf = (g: Guard, path: string) => g.logs.entries().filter((e) => e.msg === 'request' && e.path === path);
    /** The request's access lines once the guard has stopped (every line written), each as status/reason. */
    async function finalLines(g: Guard, path: string): Promise<string[]> {
      await waitFor(() => linesOf(g, path).length > 0 || undefined, `an access line for ${path}`, { timeoutMs: 5000, intervalMs: 20 });
      await g.stop();
      return linesOf(g, path).map((e) => `${String(e.status)}/${String(e.reason)}`);
    }

    it('an upload slower than requestTimeoutMs: the client gets 408 and the connection closes', async () => {
      await withWaitingUpstream(async (g) => {
        const response = await raw(g.started.port, `POST /slow-upload HTTP/1.1\r\nHost: a\r\n${auth}Content-Length: 100\r\n\r\n0123456789`, 8000);
        expect(status(response)).toBe(408);
        expect(response).toMatch(/\r\nconnection: close\r\n/i);
        expect(await finalLines(g, '/slow-upload')).toEqual(['408/request_timeout']);
      });
    });

    it('a malformed chunk: the client gets 400 http_malformed', async () => {
      await withWaitingUpstream(async (g) => {
        const response = await raw(g.started.port, `POST /bad-chunk HTTP/1.1\r\nHost: a\r\n${auth}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZ\r\nxx\r\n`, 8000);
        expect(status(response)).toBe(400);
        expect(await finalLines(g, '/bad-chunk')).toEqual(['400/http_malformed']);
      });
    });

    it('a client that ends its connection mid-upload: one line, 499 client_aborted', async () => {
      await withWaitingUpstream(async (g) => {
        const socket = tls.connect({ host: '127.0.0.1', port: g.started.port, ca: d.pki.certs.ca.cert, ...d.pki.certs.clients.client1 });
        socket.on('error', () => {});
        await once(socket, 'secureConnect');
        socket.resume();
        socket.end(`POST /left-upload HTTP/1.1\r\nHost: a\r\n${auth}Content-Length: 100000\r\n\r\n${'x'.repeat(1000)}`);
        await closedWithin(socket, 8000);
        expect(await finalLines(g, '/left-upload')).toEqual(['499/client_aborted']);
      });
    });
  });

  it('a transfer coding other than chunked alone: 501 before anything is forwarded; no Host over HTTP/1.1: 400 host_malformed; each with its line', async () => {
    const before = d.upstream.requests.length;
    const coded = await raw(guard.started.port, `POST /te-gzip HTTP/1.1\r\nHost: a\r\n${auth}Transfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n`);
    expect(status(coded)).toBe(501);
    expect(coded).toMatch(/\r\nx-request-id: /i);
    const hostless = await raw(guard.started.port, `GET /no-host HTTP/1.1\r\n${auth}Connection: close\r\n\r\n`);
    expect(status(hostless)).toBe(400);
    expect(hostless).toMatch(/\r\nx-request-id: /i);
    expect(d.upstream.requests.length).toBe(before);
    const lineOf = (path: string) => waitFor(() => guard.logs.entries().find((e) => e.msg === 'request' && e.path === path), `the line of ${path}`, { timeoutMs: 5000, intervalMs: 20 });
    expect(await lineOf('/te-gzip')).toMatchObject({ status: 501, reason: 'transfer_coding_unsupported' });
    expect(await lineOf('/no-host')).toMatchObject({ status: 400, reason: 'host_malformed' });
  });

  it('an idle keep-alive connection is closed after keepAliveTimeoutMs', async () => {
    const g = await startGuard(d.pki, baseConfig(d.pki, d.as, d.upstream, { introspection: { url: stub.url, clientId: 'rs', clientSecret: 'rs-secret', ca: d.pki.files.ca }, limits: { keepAliveTimeoutMs: 300 } }));
    try {
      const socket = tls.connect({ host: '127.0.0.1', port: g.started.port, ca: d.pki.certs.ca.cert, ...d.pki.certs.clients.client1 });
      await once(socket, 'secureConnect');
      socket.on('data', () => {});
      socket.write(`GET /x HTTP/1.1\r\nHost: a\r\n${auth}\r\n`);
      const started = Date.now();
      await closedWithin(socket, 5000);
      expect(socket.destroyed).toBe(true);
      expect(Date.now() - started).toBeLessThan(2000);
    } finally {
      await g.stop();
    }
  });

  it('connections past maxConnections are refused at accept', async () => {
    const g = await startGuard(d.pki, baseConfig(d.pki, d.as, d.upstream, { introspection: { url: stub.url, clientId: 'rs', clientSecret: 'rs-secret', ca: d.pki.files.ca }, limits: { maxConnections: 2 } }));
    const open: tls.TLSSocket[] = [];
    try {
      for (let i = 0; i < 2; i++) {
        const socket = tls.connect({ host: '127.0.0.1', port: g.started.port, ca: d.pki.certs.ca.cert });
        await once(socket, 'secureConnect');
        open.push(socket);
      }
      /** One more connection: whether the handshake completed; closed either way. */
      const another = async (): Promise<'connected' | 'refused'> => {
        const socket = tls.connect({ host: '127.0.0.1', port: g.started.port, ca: d.pki.certs.ca.cert });
        const outcome = await new Promise<'connected' | 'refused'>((resolve) => {
          socket.once('secureConnect', () => resolve('connected'));
          socket.once('error', () => resolve('refused'));
          socket.once('close', () => resolve('refused'));
        });
        socket.destroy();
        return outcome;
      };
      expect(await another()).toBe('refused');
      open.pop()?.destroy();
      // The slot frees when the server has seen the close: poll until a connection is accepted again.
      await waitFor(async () => (await another()) === 'connected', 'a connection accepted once one of the two closed');
    } finally {
      for (const socket of open) socket.destroy();
      await g.stop();
    }
  });

  it('slowloris: headers trickling in past headersTimeoutMs get 408 and the connection closed', async () => {
    const socket = tls.connect({ host: '127.0.0.1', port: guard.started.port, ca: d.pki.certs.ca.cert });
    await once(socket, 'secureConnect');
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.write('GET /x HTTP/1.1\r\nHost: a\r\n');
    const drip = setInterval(() => socket.writable && socket.write('X-Slow: 1\r\n'), 200);
    const started = Date.now();
    await closedWithin(socket, 5000);
    clearInterval(drip);
    expect(Date.now() - started).toBeLessThan(4000);
    const response = Buffer.concat(chunks).toString();
    expect(response).toMatch(/^HTTP\/1\.1 408 /);
    await parserLine(response, 'request_timeout');
    // How long the peer held it: the line's latency is the wait, not 0.
    const line = guard.logs.entries().find((e) => e.msg === 'request' && e.reason === 'request_timeout');
    expect(line?.latencyMs as number).toBeGreaterThan(500);
  });
});

describe('introspection faults', () => {
  const fresh = () => {
    const token = `tok-${Math.random().toString(36).slice(2)}`;
    stub.answers.set(token, { active: true, client_id: 'app', exp: Math.floor(Date.now() / 1000) + 600, cnf: { 'x5t#S256': thumbprint1 } });
    return token;
  };
  const outcome = async (name: string) => {
    const text = await (await fetch(`${guard.started.adminUrl}/metrics`)).text();
    const line = text.split('\n').find((l) => l.startsWith(`cnfguard_introspection_requests_total{outcome="${name}"}`));
    return line === undefined ? 0 : Number(line.split(' ').pop());
  };

  it.each([
    ['an AS that never answers', { kind: 'hang' } as const, 'timeout'],
    ['a 500', { kind: 'status', status: 500 } as const, 'http_error'],
    ['a 429 with Retry-After', { kind: 'status', status: 429, retryAfter: '7' } as const, 'rate_limited'],
    ['a non-JSON answer', { kind: 'garbage' } as const, 'invalid_response'],
    ['a huge answer', { kind: 'huge', bytes: 2_000_000 } as const, 'invalid_response'],
    ['a slow drip', { kind: 'drip', intervalMs: 100 } as const, 'timeout'],
  ])('%s: 503 within timeoutMs, nothing forwarded, counted by outcome', async (_name, mode, expected) => {
    const before = { upstream: d.upstream.requests.length, outcome: await outcome(expected) };
    stub.mode = mode;
    try {
      const started = Date.now();
      const r = await curl(d.pki, `${guard.started.url}/x`, { cert: d.pki.files.client1, token: fresh() });
      expect(r.status).toBe(503);
      expect(Date.now() - started).toBeLessThan(600 + 1500);
      expect(d.upstream.requests.length).toBe(before.upstream);
      expect(await outcome(expected)).toBe(before.outcome + 1);
    } finally {
      stub.mode = { kind: 'normal' };
    }
  });

  it('TLS errors and DNS failures are network errors: 503', async () => {
    const otherCa = createCertificateAuthority('someone else');
    const untrusted = issueServerCertificate(otherCa, { dns: ['localhost'], ips: ['127.0.0.1'] });
    const rogue = await startIntrospectionStub(untrusted);
    const g1 = await startGuard(d.pki, baseConfig(d.pki, d.as, d.upstream, { introspection: { url: rogue.url, clientId: 'rs', clientSecret: 'rs-secret', ca: d.pki.files.ca } }));
    const g2 = await startGuard(d.pki, baseConfig(d.pki, d.as, d.upstream, { introspection: { url: 'https://introspection.invalid/x', clientId: 'rs', clientSecret: 'rs-secret' } }));
    try {
      for (const g of [g1, g2]) {
        const r = await curl(d.pki, `${g.started.url}/x`, { cert: d.pki.files.client1, token: TOKEN });
        expect(r.status).toBe(503);
        expect(await (await fetch(`${g.started.adminUrl}/metrics`)).text()).toMatch(/cnfguard_introspection_requests_total\{outcome="network_error"\} 1/);
      }
      expect(rogue.calls()).toBe(0); // the handshake failed before any request
    } finally {
      await g1.stop();
      await g2.stop();
      await rogue.stop();
    }
  });
});

describe('circuit breaker and stale-if-error', () => {
  it('stops calling a failing AS after the threshold, answers 503 with Retry-After, then probes it back', async () => {
    const own = await startIntrospectionStub(d.pki.certs.server);
    const token = 'breaker-token';
    own.answers.set(token, { active: true, client_id: 'app', exp: Math.floor(Date.now() / 1000) + 600, cnf: { 'x5t#S256': thumbprint1 } });
    const clock = manualClock();
    const g = await startGuard(
      d.pki,
      baseConfig(d.pki, d.as, d.upstream, {
        introspection: { url: own.url, clientId: 'rs', clientSecret: 'rs-secret', ca: d.pki.files.ca, circuitBreaker: { failureThreshold: 3, openSeconds: 1 }, cache: { maxEntries: 0 } },
      }),
      { now: clock.now },
    );
    try {
      own.mode = { kind: 'status', status: 500 };
      for (let i = 0; i < 3; i++) expect((await curl(d.pki, `${g.started.url}/x`, { cert: d.pki.files.client1, token })).status).toBe(503);
      expect(own.calls()).toBe(3);
      const open = await curl(d.pki, `${g.started.url}/x`, { cert: d.pki.files.client1, token });
      expect(open.status).toBe(503);
      expect(open.headers['retry-after']).toBe('1');
      expect(own.calls()).toBe(3); // not called while open
      own.mode = { kind: 'normal' };
      clock.advance(1100); // past openSeconds
      expect((await curl(d.pki, `${g.started.url}/x`, { cert: d.pki.files.client1, token })).status).toBe(200);
      expect(own.calls()).toBe(4);
      expect(g.logs.entries().map((e) => e.msg)).toEqual(
        expect.arrayContaining([`introspection circuit open: ${own.url} is failing (last: HTTP 500); the AS is failing: see its logs`, 'introspection circuit half-open', 'introspection circuit closed']),
      );
    } finally {
      await g.stop();
      await own.stop();
    }
  });

  it('staleIfErrorSeconds serves a cached active answer while the AS fails; off by default', async () => {
    const own = await startIntrospectionStub(d.pki.certs.server);
    const token = 'stale-token';
    own.answers.set(token, { active: true, client_id: 'app', exp: Math.floor(Date.now() / 1000) + 600, cnf: { 'x5t#S256': thumbprint1 } });
    const introspection = { url: own.url, clientId: 'rs', clientSecret: 'rs-secret', ca: d.pki.files.ca, cache: { maxTtlSeconds: 0.3 } };
    const clock = manualClock();
    const stale = await startGuard(d.pki, baseConfig(d.pki, d.as, d.upstream, { introspection: { ...introspection, staleIfErrorSeconds: 30 } }), { now: clock.now });
    const strict = await startGuard(d.pki, baseConfig(d.pki, d.as, d.upstream, { introspection }), { now: clock.now });
    try {
      for (const g of [stale, strict]) expect((await curl(d.pki, `${g.started.url}/x`, { cert: d.pki.files.client1, token })).status).toBe(200);
      clock.advance(400); // past the cache's maxTtlSeconds
      own.mode = { kind: 'status', status: 502 };
      expect((await curl(d.pki, `${stale.started.url}/x`, { cert: d.pki.files.client1, token })).status).toBe(200);
      expect((await curl(d.pki, `${strict.started.url}/x`, { cert: d.pki.files.client1, token })).status).toBe(503);
      // The binding is still checked on a stale answer.
      expect((await curl(d.pki, `${stale.started.url}/x`, { cert: d.pki.files.client2, token })).status).toBe(401);
      expect(await (await fetch(`${stale.started.adminUrl}/metrics`)).text()).toMatch(/cnfguard_token_cache_stale_total [1-9]/);
    } finally {
      await stale.stop();
      await strict.stop();
      await own.stop();
    }
  });
});

describe('secrets', () => {
  it('the client secret comes from a file and appears in no log line, even when the AS rejects it', async () => {
    const secretFile = join(d.pki.dir, 'introspection-secret');
    await writeFile(secretFile, 'wrong-secret-value\n', { mode: 0o600 });
    const g = await startGuard(d.pki, baseConfig(d.pki, d.as, d.upstream, { introspection: { url: stub.url, clientId: 'rs', clientSecretFile: secretFile, ca: d.pki.files.ca } }));
    try {
      const r = await curl(d.pki, `${g.started.url}/x`, { cert: d.pki.files.client1, token: TOKEN, headers: ['x-probe: "<script>"'] });
      expect(r.status).toBe(503); // the stub answers 401 invalid_client: cnfguard's fault, not the token's
      expect(g.logs.text()).not.toContain('wrong-secret-value');
      expect(g.logs.text()).not.toContain(TOKEN);
      expect(r.body).not.toContain('<script>');
    } finally {
      await g.stop();
    }
  });
});

describe('introspection client authentication (RFC 7662 §2.1)', () => {
  it.each(['client_secret_basic', 'client_secret_post', 'tls_client_auth'] as const)('%s authenticates to the AS', async (authMethod) => {
    const secret = 'p@ss:w/rd +&=';
    const own = await startIntrospectionStub(d.pki.certs.server, { secret, clientCa: d.pki.certs.ca.cert });
    own.answers.set(TOKEN, { active: true, client_id: 'app', exp: Math.floor(Date.now() / 1000) + 600, cnf: { 'x5t#S256': thumbprint1 } });
    const introspection = {
      url: own.url,
      clientId: 'rs',
      authMethod,
      ca: d.pki.files.ca,
      ...(authMethod === 'tls_client_auth' ? { cert: d.pki.files.client2.cert, key: d.pki.files.client2.key } : { clientSecret: secret }),
    };
    const g = await startGuard(d.pki, baseConfig(d.pki, d.as, d.upstream, { introspection }));
    try {
      expect((await curl(d.pki, `${g.started.url}/x`, { cert: d.pki.files.client1, token: TOKEN })).status).toBe(200);
      expect(own.lastAuth).toBe(authMethod);
    } finally {
      await g.stop();
      await own.stop();
    }
  });
});
