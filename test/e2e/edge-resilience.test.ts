/**
 * Unauthenticated clients cannot hold the edge (issue 10): sockets that never finish TLS give back
 * their slot and never stop a shutdown, form bodies are not read before the token is checked and
 * share one memory budget, and an abandoned upload is a counted 499, not an error.
 */
import { once } from 'node:events';
import { X509Certificate } from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { thumbprintS256 } from '../../src/tls/certificates.ts';
import { startIntrospectionStub, type IntrospectionStub } from '../fixtures/introspection-stub.ts';
import { baseConfig, startDeployment, startGuard, type Deployment, type Guard } from '../fixtures/stack.ts';

let d: Deployment;
let stub: IntrospectionStub;
let guard: Guard;
const TOKEN = 'bound';

const config = (extra: Record<string, unknown> = {}) =>
  baseConfig(d.pki, d.as, d.upstream, {
    introspection: { url: stub.url, clientId: 'rs', clientSecret: 'rs-secret', ca: d.pki.files.ca, timeoutMs: 1000 },
    limits: { maxConnections: 20, handshakeTimeoutMs: 300, formBodyBytes: 1000, bufferedBodyBytes: 1500 },
    ...extra,
  });

beforeAll(async () => {
  d = await startDeployment();
  stub = await startIntrospectionStub(d.pki.certs.server);
  const thumbprint = thumbprintS256(new X509Certificate(d.pki.certs.clients.client1.cert).raw);
  stub.answers.set(TOKEN, { active: true, sub: 'alice', client_id: 'app', scope: 'read', exp: Math.floor(Date.now() / 1000) + 600, cnf: { 'x5t#S256': thumbprint } });
  guard = await startGuard(d.pki, config());
});
afterAll(async () => {
  await guard?.stop();
  await stub?.stop();
  await d?.stop();
});

async function connect(port = guard.started.port): Promise<tls.TLSSocket> {
  const socket = tls.connect({ host: '127.0.0.1', port, ca: d.pki.certs.ca.cert, servername: 'localhost', ...d.pki.certs.clients.client1 });
  socket.on('error', () => {});
  await once(socket, 'secureConnect');
  return socket;
}

/** Writes `head` (and `body`), then collects the answer until the server closes or `waitMs` pass. */
async function exchange(socket: tls.TLSSocket, head: string, waitMs = 3000): Promise<string> {
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  socket.write(head);
  const answered = new Promise((resolve) => socket.on('data', () => Buffer.concat(chunks).includes('\r\n\r\n') && resolve(undefined)));
  await Promise.race([answered, once(socket, 'close'), new Promise((resolve) => setTimeout(resolve, waitMs))]);
  return Buffer.concat(chunks).toString('latin1');
}

const status = (text: string) => Number(text.split(' ')[1]);
/** Resolves on close, whatever the reason (events.once would reject on the reset). */
const closed = (socket: net.Socket) => new Promise((resolve) => (socket.destroyed ? resolve(undefined) : socket.once('close', resolve)));
const silent = (port: number) =>
  new Promise<net.Socket>((resolve) => {
    const socket = net.connect(port, '127.0.0.1', () => resolve(socket));
    socket.on('error', () => {});
  });

describe('connections that never start TLS', () => {
  it('are dropped at handshakeTimeoutMs with no HTTP bytes, and give back their maxConnections slot', async () => {
    const sockets = await Promise.all(Array.from({ length: 20 }, () => silent(guard.started.port)));
    const received: Buffer[] = [];
    for (const socket of sockets) socket.on('data', (c: Buffer) => received.push(c));
    const started = Date.now();
    await Promise.all(sockets.map(closed));
    expect(Date.now() - started).toBeLessThan(2000);
    expect(Buffer.concat(received).length).toBe(0);
    const answer = await exchange(await connect(), `GET /after HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${TOKEN}\r\nConnection: close\r\n\r\n`);
    expect(status(answer)).toBe(200);
  });

  it('never hold up a shutdown', async () => {
    const other = await startGuard(d.pki, config({ limits: { handshakeTimeoutMs: 60_000 } }));
    const sockets = await Promise.all(Array.from({ length: 5 }, () => silent(other.started.port)));
    const started = Date.now();
    await other.app.stop(5000);
    expect(Date.now() - started).toBeLessThan(1000);
    await Promise.all(sockets.map(closed));
  });
});

describe('form bodies', () => {
  const formHead = (length: number, token?: string) =>
    `POST /form HTTP/1.1\r\nHost: localhost\r\n${token === undefined ? '' : `Authorization: Bearer ${token}\r\n`}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: ${length}\r\n\r\n`;

  it('are not read before the token is checked: no token is refused before the body is sent', async () => {
    const answer = await exchange(await connect(), formHead(900), 1500);
    expect(status(answer)).toBe(401);
  });

  it('share one budget: past limits.bufferedBodyBytes a form gets 503 with Retry-After', async () => {
    const holding = await connect();
    holding.write(formHead(900, TOKEN) + 'a=1&');
    await new Promise((resolve) => setTimeout(resolve, 200));
    const answer = await exchange(await connect(), formHead(900, TOKEN) + 'b=2&'.padEnd(900, 'x'));
    expect(status(answer)).toBe(503);
    expect(answer).toMatch(/retry-after: 1/i);
    holding.destroy();
  });
});

describe('an upload the client abandons', () => {
  it('is logged at info as 499 and counted as aborted, with no error line', async () => {
    const socket = await connect();
    socket.write(`POST /upload HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${TOKEN}\r\nContent-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n${'x'.repeat(1000)}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
    socket.destroy();
    await expect.poll(() => guard.logs.entries().find((e) => e.path === '/upload'), { timeout: 3000 }).toBeDefined();
    const line = guard.logs.entries().find((e) => e.path === '/upload');
    expect(line).toMatchObject({ level: 'info', status: 499, decision: 'aborted', reason: 'client_aborted' });
    expect(guard.logs.entries().filter((e) => (e.level as number) >= 50)).toEqual([]);
    const metrics = await guard.app.metrics.registry.getSingleMetricAsString('cnfguard_requests_total');
    expect(metrics).toMatch(/decision="aborted",reason="client_aborted"/);
  });
});
