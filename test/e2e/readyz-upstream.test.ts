/**
 * The readiness passthrough: `/readyz?upstream=1` on the admin listener is ready only when cnfguard
 * serves and its default upstream answers, so a kubelet can probe an app that listens on the pod's
 * loopback only. Real listeners on 127.0.0.1: cnfguard, an upstream that is started and stopped,
 * and an HTTP upstream whose health answer the test sets.
 */
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startEchoUpstream, type EchoUpstream } from '../../demo/echo-upstream.ts';
import { startIntrospectionStub } from '../fixtures/introspection-stub.ts';
import { createPki, curl, startGuard, type Guard, type Pki } from '../fixtures/stack.ts';
import { waitFor } from '../fixtures/wait.ts';

let pki: Pki;
const guards: Guard[] = [];

beforeAll(async () => {
  pki = await createPki();
});
afterEach(async () => {
  await Promise.all(guards.splice(0).map((g) => g.stop()));
});
afterAll(async () => {
  await pki.cleanup();
});

/** A guard in front of `upstream`; the AS is never called here (no request carries a token) unless `introspectionUrl` names one. */
async function guardFor(upstream: string, upstreamCheck?: Record<string, unknown>, introspectionUrl = 'https://127.0.0.1:9/introspect'): Promise<Guard> {
  const guard = await startGuard(pki, {
    listen: { host: '127.0.0.1', port: 0 },
    tls: { cert: pki.files.server.cert, key: pki.files.server.key },
    introspection: { url: introspectionUrl, clientId: 'rs', clientSecret: 'rs-secret', ca: pki.files.ca, timeoutMs: 10_000 },
    upstream,
    admin: { host: '127.0.0.1', port: 0, ...(upstreamCheck && { upstreamCheck }) },
  });
  guards.push(guard);
  return guard;
}

async function readyz(guard: Guard, query = ''): Promise<{ status: number; body: string }> {
  const res = await fetch(`${guard.started.adminUrl}/readyz${query}`);
  return { status: res.status, body: await res.text() };
}

async function listenOn(server: Server): Promise<string> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

describe('/readyz?upstream=1 (TCP connect by default)', () => {
  let upstream: EchoUpstream;
  beforeAll(async () => {
    upstream = await startEchoUpstream();
  });

  it('is ready while the upstream accepts connections, and not once it is gone; plain /readyz does not look', async () => {
    const guard = await guardFor(upstream.url);
    const up = await readyz(guard, '?upstream=1');
    expect(up.status).toBe(200);
    expect(up.body).toBe(`ready\nupstream: ok (tcp ${new URL(upstream.url).host})\n`);

    await upstream.stop();
    const down = await readyz(guard, '?upstream=1');
    expect(down.status).toBe(503);
    expect(down.body).toBe('not ready\nupstream: down (ECONNREFUSED)\n');
    // The kubelet's liveness and the plain readiness stay cnfguard's own.
    expect((await readyz(guard)).status).toBe(200);
    expect((await readyz(guard, '?upstream=0')).status).toBe(200);
    expect((await fetch(`${guard.started.adminUrl}/healthz`)).status).toBe(200);
  });

  it('is 503 without asking the upstream while cnfguard drains', async () => {
    const server = createServer((_req, res) => res.end());
    let connections = 0;
    server.on('connection', () => (connections += 1));
    const url = await listenOn(server);
    // An AS that never answers holds one request in flight, so the drain (and with it the admin
    // listener, closed after the main one) lasts until the test lets it go.
    const as = await startIntrospectionStub(pki.certs.server);
    as.mode = { kind: 'hang' };
    const guard = await guardFor(url, undefined, as.url);
    try {
      expect((await readyz(guard, '?upstream')).status).toBe(200);
      const held = curl(pki, `${guard.started.url}/x`, { cert: pki.files.client1, token: 'held-token' });
      await waitFor(() => as.calls() === 1, 'the held request to reach the AS');
      const seen = connections;
      const stopping = guard.app.stop(10_000);
      guards.splice(guards.indexOf(guard), 1);
      const draining = await readyz(guard, '?upstream=1');
      expect(draining.status).toBe(503);
      expect(connections, 'no upstream check while not ready').toBe(seen);
      await as.stop(); // the held request fails now, and the drain ends
      expect((await held).status).toBe(503);
      await stopping;
    } finally {
      await as.stop();
      server.close();
    }
  });
});

describe('/readyz?upstream=1 with admin.upstreamCheck.path (HTTP GET)', () => {
  let health = 200;
  let hang = false;
  const paths: string[] = [];
  const server = createServer((req, res) => {
    paths.push(req.url ?? '');
    if (hang) return; // never answers
    res.writeHead(health).end('health body never shown\n');
  });
  let url: string;
  beforeAll(async () => {
    url = await listenOn(server);
  });
  afterAll(() => {
    server.closeAllConnections();
    server.close();
  });

  it('follows the status of GET path: 2xx/3xx ready, 5xx not, no answer within timeoutMs not', async () => {
    const guard = await guardFor(`${url}/api`, { path: '/health?deep=1', timeoutMs: 300 });
    expect(await readyz(guard, '?upstream=1')).toEqual({ status: 200, body: 'ready\nupstream: ok (HTTP 200 from GET /health?deep=1)\n' });
    expect(paths.at(-1)).toBe('/health?deep=1');

    health = 503;
    expect(await readyz(guard, '?upstream=1')).toEqual({ status: 503, body: 'not ready\nupstream: down (HTTP 503 from GET /health?deep=1)\n' });
    health = 404;
    expect((await readyz(guard, '?upstream=1')).status).toBe(503);
    health = 204;
    expect((await readyz(guard, '?upstream=1')).status).toBe(200);

    hang = true;
    const started = Date.now();
    const slow = await readyz(guard, '?upstream=1');
    expect(slow).toEqual({ status: 503, body: 'not ready\nupstream: down (no answer to GET /health?deep=1 within 300 ms)\n' });
    expect(Date.now() - started).toBeLessThan(2000);
  });
});
