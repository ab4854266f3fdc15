/**
 * A client that stops reading holds the upstream back: cnfguard pauses the upstream's body while
 * the client takes no more (forward-common.ts BodyRelay), over HTTP/1.1 and HTTP/2, rather than
 * reading a large answer into its own memory.
 */
import http from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { baseConfig, startDeployment, startGuard, type Deployment, type Guard } from '../fixtures/stack.ts';
import { waitFor } from '../fixtures/wait.ts';

const SIZE = 64 * 1024 * 1024;
let d: Deployment;
let guard: Guard;
let token: string;
let upstream: http.Server;
/** Bytes of the current answer the upstream's socket has taken. */
let sent = 0;
/** Whether the upstream's current answer was closed before it ended (its connection cut). */
let cut: Promise<boolean> = Promise.resolve(false);

beforeAll(async () => {
  d = await startDeployment();
  upstream = http.createServer((_req, res) => {
    sent = 0;
    cut = new Promise((resolve) => res.once('close', () => resolve(!res.writableFinished)));
    res.writeHead(200, { 'content-length': SIZE });
    const chunk = Buffer.alloc(64 * 1024);
    const more = (): void => {
      while (sent < SIZE) {
        sent += chunk.length;
        if (!res.write(chunk)) return void res.once('drain', more);
      }
      res.end();
    };
    more();
  });
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
  // /stall: a route whose upstream time budget (1 s) also bounds how long a client may take none of the answer.
  guard = await startGuard(d.pki, { ...baseConfig(d.pki, d.as, d.upstream), upstream: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`, routes: [{ pathPrefix: '/stall', upstreamTimeoutMs: 1000 }] });
  token = await d.tokenFor('client1');
});
afterAll(async () => {
  await guard?.stop();
  upstream?.close();
  await d?.stop();
});

/** Reads one chunk, stops reading until the upstream's writes stall, then reads the rest; returns what the upstream had sent meanwhile and the bytes received. */
async function pauseThenRead(body: Readable): Promise<{ heldAt: number; received: number }> {
  let received = 0;
  await new Promise<void>((resolve) => body.once('data', (chunk: Buffer) => ((received += chunk.length), body.pause(), resolve())));
  // Stalled: the upstream's count stops moving (its socket full), bounded.
  let last = -1;
  const heldAt = await waitFor(() => (sent === last ? sent : ((last = sent), undefined)), 'the upstream to stall', { timeoutMs: 10_000, intervalMs: 200 });
  body.on('data', (chunk: Buffer) => (received += chunk.length));
  body.resume();
  await new Promise((resolve) => body.once('end', resolve));
  return { heldAt, received };
}

describe('a client that stops reading holds the upstream back', () => {
  it('HTTP/2', async () => {
    const session = http2.connect(guard.started.url, { ca: d.pki.certs.ca.cert, ...d.pki.certs.clients.client1, servername: 'localhost' });
    try {
      const { heldAt, received } = await pauseThenRead(session.request({ ':path': '/big', authorization: `Bearer ${token}` }));
      expect(heldAt).toBeLessThan(SIZE / 4);
      expect(received).toBe(SIZE);
    } finally {
      session.close();
    }
  });

  it('HTTP/1.1', async () => {
    const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
      https.get(`${guard.started.url}/big`, { ca: d.pki.certs.ca.cert, ...d.pki.certs.clients.client1, servername: 'localhost', headers: { authorization: `Bearer ${token}` }, agent: false }, resolve).on('error', reject);
    });
    const { heldAt, received } = await pauseThenRead(res);
    expect(heldAt).toBeLessThan(SIZE / 4);
    expect(received).toBe(SIZE);
  });
});

describe('a client that takes none of the answer for the upstream\'s time budget frees the upstream connection', () => {
  /** Reads one chunk and never another: the exchange is cut, the upstream's answer closed unfinished, the line says why. */
  async function stalls(body: Readable): Promise<void> {
    await new Promise<void>((resolve) => body.once('data', () => (body.pause(), resolve())));
    expect(await cut).toBe(true);
    const line = await waitFor(() => guard.logs.entries().findLast((l) => l.msg === 'request' && l.path === '/stall'), 'the access line', { timeoutMs: 5000, intervalMs: 50 });
    expect(line).toMatchObject({ reason: 'client_aborted', detail: 'the client took none of the answer for 1000 ms' });
  }

  it('HTTP/2 (a receive window the client never opens)', async () => {
    const session = http2.connect(guard.started.url, { ca: d.pki.certs.ca.cert, ...d.pki.certs.clients.client1, servername: 'localhost' });
    session.on('error', () => {});
    try {
      const stream = session.request({ ':path': '/stall', authorization: `Bearer ${token}` });
      stream.on('error', () => {});
      await stalls(stream);
    } finally {
      session.destroy();
    }
  });

  it('HTTP/1.1 (a TCP window the client never drains)', async () => {
    const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
      https.get(`${guard.started.url}/stall`, { ca: d.pki.certs.ca.cert, ...d.pki.certs.clients.client1, servername: 'localhost', headers: { authorization: `Bearer ${token}` }, agent: false }, resolve).on('error', reject);
    });
    res.on('error', () => {});
    try {
      await stalls(res);
    } finally {
      res.destroy();
    }
  });
});
