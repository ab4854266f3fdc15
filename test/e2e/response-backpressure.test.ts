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

beforeAll(async () => {
  d = await startDeployment();
  upstream = http.createServer((_req, res) => {
    sent = 0;
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
  guard = await startGuard(d.pki, { ...baseConfig(d.pki, d.as, d.upstream), upstream: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}` });
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
