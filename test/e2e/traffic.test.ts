/**
 * What sits around the decision: the introspection cache counted at the AS, large bodies,
 * TLS session resumption, websocket upgrades, and failing closed when the AS dies.
 */
import { once } from 'node:events';
import { createServer as createNetServer, type AddressInfo, type Socket } from 'node:net';
import { freePort } from '../fixtures/processes.ts';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { baseConfig, curl, startDeployment, startGuard, type Deployment, type Guard } from '../fixtures/stack.ts';
import { connectTls, exchange, getRequest } from '../fixtures/raw-tls.ts';
import { waitFor } from '../fixtures/wait.ts';

let d: Deployment;
let guard: Guard;

beforeAll(async () => {
  d = await startDeployment();
  guard = await startGuard(d.pki, baseConfig(d.pki, d.as, d.upstream));
});
afterAll(async () => {
  await guard?.stop();
  await d?.stop();
});

describe('introspection cache', () => {
  it('10 sequential requests with one token make 1 introspection call', async () => {
    const token = await d.tokenFor('client1');
    const before = d.as.introspectionCalls();
    for (let i = 0; i < 10; i++) {
      const r = await curl(d.pki, `${guard.started.url}/seq/${i}`, { cert: d.pki.files.client1, token });
      expect(r.status).toBe(200);
    }
    expect(d.as.introspectionCalls() - before).toBe(1);
  });

  it('40 concurrent first requests with one token make 1 introspection call', async () => {
    const token = await d.tokenFor('client1');
    const agent = new Agent({ connect: { ca: d.pki.certs.ca.cert, ...d.pki.certs.clients.client1 } });
    try {
      const before = d.as.introspectionCalls();
      const statuses = await Promise.all(
        Array.from({ length: 40 }, async (_, i) => {
          const r = await request(`${guard.started.url}/concurrent/${i}`, { dispatcher: agent, headers: { authorization: `Bearer ${token}` } });
          await r.body.dump();
          return r.statusCode;
        }),
      );
      expect(statuses).toEqual(Array(40).fill(200));
      expect(d.as.introspectionCalls() - before).toBe(1);
    } finally {
      await agent.close();
    }
  });

  it('the binding is re-checked on a cache hit: a cached token replayed on another certificate is refused', async () => {
    const token = await d.tokenFor('client1');
    expect((await curl(d.pki, `${guard.started.url}/a`, { cert: d.pki.files.client1, token })).status).toBe(200);
    const calls = d.as.introspectionCalls();
    expect((await curl(d.pki, `${guard.started.url}/a`, { cert: d.pki.files.client2, token })).status).toBe(401);
    expect(d.as.introspectionCalls()).toBe(calls); // answered from the cache
    const metrics = await (await fetch(`${guard.started.adminUrl}/metrics`)).text();
    expect(metrics).toMatch(/cnfguard_token_cache_hits_total\{tier="local"\} \d+/);
    expect(metrics).toMatch(/cnfguard_introspection_requests_total\{outcome="active"\} \d+/);
  });
});

it('a 5 MB upload streams through to the upstream intact', async () => {
  const token = await d.tokenFor('client1');
  const body = randomBytes(5 * 1024 * 1024);
  const file = join(d.pki.dir, 'upload.bin');
  await writeFile(file, body);
  const r = await curl(d.pki, `${guard.started.url}/upload`, {
    cert: d.pki.files.client1,
    token,
    dataFile: file,
    headers: ['content-type: application/octet-stream'],
  });
  expect(r.status).toBe(200);
  expect(r.json()).toMatchObject({ method: 'POST', bodyBytes: body.length, bodySha256: createHash('sha256').update(body).digest('hex') });
});

describe('TLS session resumption keeps the binding', () => {
  it.each(['TLSv1.3', 'TLSv1.2'] as const)('%s: a resumed session is still bound to its certificate', async (maxVersion) => {
    const token = await d.tokenFor('client1');
    const stolen = await d.tokenFor('client2');
    const ca = d.pki.certs.ca.cert;
    const client = d.pki.certs.clients.client1;
    const first = await connectTls(guard.started.port, { ca, client, maxVersion });
    expect(first.socket.getProtocol()).toBe(maxVersion);
    const firstAnswer = exchange(first.socket, getRequest('/resume', { authorization: `Bearer ${token}` }));
    const session = await first.session;
    expect((await firstAnswer).status).toBe(200);

    // The resumed handshake carries no certificate: the server must use the session's.
    const resumed = await connectTls(guard.started.port, { ca, session, maxVersion });
    expect(resumed.socket.isSessionReused()).toBe(true);
    expect((await exchange(resumed.socket, getRequest('/resume', { authorization: `Bearer ${token}` }))).status).toBe(200);

    const again = await connectTls(guard.started.port, { ca, session, maxVersion });
    expect(again.socket.isSessionReused()).toBe(true);
    expect((await exchange(again.socket, getRequest('/resume', { authorization: `Bearer ${stolen}` }))).status).toBe(401);
  });
});

describe('websocket upgrades', () => {
  const upgrade = (token?: string) =>
    `GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\n${
      token ? `Authorization: Bearer ${token}\r\n` : ''
    }\r\n`;

  it('pass through after the same checks, then carry bytes both ways', async () => {
    const token = await d.tokenFor('client1');
    const { socket } = await connectTls(guard.started.port, { ca: d.pki.certs.ca.cert, client: d.pki.certs.clients.client1 });
    socket.write(upgrade(token));
    const [head] = (await once(socket, 'data')) as [Buffer];
    expect(head.toString()).toMatch(/^HTTP\/1\.1 101 /);
    socket.write('ping-through-cnfguard');
    const [echo] = (await once(socket, 'data')) as [Buffer];
    expect(echo.toString()).toBe('ping-through-cnfguard');
    socket.destroy();
    // One access line once the upgraded connection is over, with the upstream's 101.
    const line = await waitFor(() => guard.logs.entries().findLast((l) => l.msg === 'request' && l.path === '/ws'), 'the access line', { timeoutMs: 5000, intervalMs: 20 });
    expect(line).toMatchObject({ status: 101, upstreamStatus: 101, decision: 'allow' });
  });

  it('an Upgrade other than websocket (h2c) is answered as a plain request, its Upgrade not passed on (RFC 9110 §7.8)', async () => {
    const token = await d.tokenFor('client1');
    const { socket } = await connectTls(guard.started.port, { ca: d.pki.certs.ca.cert, client: d.pki.certs.clients.client1 });
    // The connection stays open (a plain keep-alive answer): the head is all there is to wait for.
    let head = '';
    socket.on('data', (c: Buffer) => (head += c.toString('latin1')));
    socket.write(`GET /h2c-upgrade HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nAuthorization: Bearer ${token}\r\n\r\n`);
    await waitFor(() => head.includes('\r\n\r\n') || undefined, 'the answer head', { timeoutMs: 5000, intervalMs: 10 });
    expect(head).toMatch(/^HTTP\/1\.1 200 /);
    const seen = d.upstream.requests.findLast((r) => r.url === '/h2c-upgrade');
    expect(seen?.headers.upgrade).toBeUndefined();
    expect(seen?.headers['http2-settings']).toBeUndefined();
    const line = await waitFor(() => guard.logs.entries().findLast((l) => l.msg === 'request' && l.path === '/h2c-upgrade'), 'the access line', { timeoutMs: 5000, intervalMs: 10 });
    expect(line).toMatchObject({ status: 200, upstreamStatus: 200 });
    socket.destroy();
  });

  it('an upstream that does not upgrade: its answer reaches the client and the access line as it is', async () => {
    const token = await d.tokenFor('client1');
    const { socket } = await connectTls(guard.started.port, { ca: d.pki.certs.ca.cert, client: d.pki.certs.clients.client1 });
    // No Sec-WebSocket-Key: the echo upstream answers 400 rather than 101.
    const answer = await exchange(socket, `GET /ws-refused HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nAuthorization: Bearer ${token}\r\n\r\n`);
    expect(answer.status).toBe(400);
    await waitFor(() => guard.logs.entries().findLast((l) => l.msg === 'request' && l.path === '/ws-refused'), 'the access line', { timeoutMs: 5000, intervalMs: 20 });
    expect(guard.logs.entries().findLast((l) => l.msg === 'request' && l.path === '/ws-refused')).toMatchObject({ status: 400, upstreamStatus: 400 });
  });

  it('an upstream that cannot be reached: the client gets the 502 its access line says; a client gone before any answer is 499', async () => {
    // A port nobody listens on, and an upstream that takes the connection and never answers.
    const dead = await freePort();
    let accepted = 0;
    const held: Socket[] = [];
    const silent = createNetServer((socket) => (accepted++, held.push(socket)));
    silent.listen(0, '127.0.0.1');
    await once(silent, 'listening');
    const g = await startGuard(d.pki, baseConfig(d.pki, d.as, d.upstream, { routes: [{ pathPrefix: '/ws-down', upstream: `http://127.0.0.1:${dead}` }, { pathPrefix: '/ws-silent', upstream: `http://127.0.0.1:${(silent.address() as AddressInfo).port}` }] }));
    try {
      const token = await d.tokenFor('client1');
      const lineOf = (path: string) => waitFor(() => g.logs.entries().findLast((l) => l.msg === 'request' && l.path === path), `the access line of ${path}`, { timeoutMs: 5000, intervalMs: 20 });
      const down = await connectTls(g.started.port, { ca: d.pki.certs.ca.cert, client: d.pki.certs.clients.client1 });
      const answer = await exchange(down.socket, upgrade(token).replace('GET /ws ', 'GET /ws-down '));
      expect(answer.status).toBe(502);
      expect(answer.raw).toMatch(/\r\nx-request-id: /i);
      expect(await lineOf('/ws-down')).toMatchObject({ status: 502, reason: 'upstream_unreachable' });

      const gone = await connectTls(g.started.port, { ca: d.pki.certs.ca.cert, client: d.pki.certs.clients.client1 });
      gone.socket.write(upgrade(token).replace('GET /ws ', 'GET /ws-silent '));
      await waitFor(() => accepted > 0 || undefined, 'the upstream connection', { timeoutMs: 5000, intervalMs: 10 });
      gone.socket.destroy();
      expect(await lineOf('/ws-silent')).toMatchObject({ status: 499, reason: 'client_aborted', decision: 'aborted' });
      expect(g.logs.entries().filter((l) => l.msg === 'request' && (l.path === '/ws-silent' || l.path === '/ws-down'))).toHaveLength(2);
    } finally {
      await g.stop();
      for (const socket of held) socket.destroy();
      silent.close();
    }
  });

  it('are refused like any request when the token is bound to another certificate', async () => {
    const token = await d.tokenFor('client1');
    const before = d.upstream.requests.length;
    const { socket } = await connectTls(guard.started.port, { ca: d.pki.certs.ca.cert, client: d.pki.certs.clients.client2 });
    const answer = await exchange(socket, upgrade(token));
    expect(answer.status).toBe(401);
    expect(answer.raw).toContain('error="invalid_token"');
    expect(d.upstream.requests.length).toBe(before);
  });
});

describe('admin endpoints', () => {
  it('healthz, readyz and the contract metric names', async () => {
    expect((await fetch(`${guard.started.adminUrl}/healthz`)).status).toBe(200);
    expect((await fetch(`${guard.started.adminUrl}/readyz`)).status).toBe(200);
    const metrics = await (await fetch(`${guard.started.adminUrl}/metrics`)).text();
    for (const name of [
      'cnfguard_requests_total',
      'cnfguard_introspection_requests_total',
      'cnfguard_token_cache_hits_total',
      'cnfguard_token_cache_misses_total',
      'cnfguard_introspection_duration_seconds',
      'cnfguard_upstream_duration_seconds',
    ]) {
      expect(metrics).toContain(`# TYPE ${name} `);
    }
  });
});

describe('the authorization server dies', () => {
  it('fails closed: 503 with the temporarily_unavailable challenge, and the upstream is never called', async () => {
    const own = await startDeployment();
    const g = await startGuard(own.pki, baseConfig(own.pki, own.as, own.upstream));
    try {
      const cached = await own.tokenFor('client1');
      const fresh = await own.tokenFor('client1');
      expect((await curl(own.pki, `${g.started.url}/x`, { cert: own.pki.files.client1, token: cached })).status).toBe(200);
      await own.as.stop();
      const before = own.upstream.requests.length;
      const r = await curl(own.pki, `${g.started.url}/x`, { cert: own.pki.files.client1, token: fresh });
      expect(r.status).toBe(503);
      expect(r.headers['www-authenticate']).toMatch(/^Bearer realm="[^"]*", error="temporarily_unavailable", error_description="/);
      expect(r.json()).toMatchObject({ error: 'temporarily_unavailable' });
      expect(own.upstream.requests.length).toBe(before);
      // A failure is not cached as an answer: the same token fails again, by a new attempt.
      expect((await curl(own.pki, `${g.started.url}/x`, { cert: own.pki.files.client1, token: fresh })).status).toBe(503);
      const metrics = await (await fetch(`${g.started.adminUrl}/metrics`)).text();
      expect(metrics).toMatch(/cnfguard_introspection_requests_total\{outcome="network_error"\} 2/);
      expect(metrics).toMatch(/cnfguard_requests_total\{decision="deny",reason="introspection_unavailable",route="default"\} 2/);
    } finally {
      await g.stop();
      await own.stop();
    }
  });
});
