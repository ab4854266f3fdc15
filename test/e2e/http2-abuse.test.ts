/**
 * HTTP/2 clients that drop their connection or reset their streams cannot end the process or hold
 * the upstream (issue 26, findings 1 and 3). cnfguard runs as `cnfguard run` in a child process,
 * so a crash is an exit the test sees; the upstreams hold every request and count the open ones.
 */
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import http2 from 'node:http2';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { thumbprintS256 } from '../../src/tls/certificates.ts';
import { BOUND, startChildGuard, type ChildGuard } from '../fixtures/child-guard.ts';
import { FLAG, FRAME, frame, rawConnection, requestBlockFor } from '../fixtures/h2-frames.ts';

const MAX_STREAMS = 20;
let g: ChildGuard;

beforeAll(async () => {
  g = await startChildGuard(MAX_STREAMS);
});
afterAll(async () => {
  await g?.stop();
});

describe('a client that drops its HTTP/2 connection', () => {
  it.each([
    ['made-up tokens, introspection slow', '/h1/x', 'made-up'],
    ['valid tokens, upstream slow (HTTP/1.1)', '/h1/held', BOUND],
    ['valid tokens, upstream slow (h2c)', '/h2c/held', BOUND],
  ])('does not end the process: %s', async (_name, path, token) => {
    if (token === 'made-up') g.stub.mode = { kind: 'hang' };
    const calls = g.stub.calls();
    const upstream = path.startsWith('/h2c') ? g.h2c : g.h1;
    const total = upstream.total();
    try {
      const session = g.connect();
      await once(session, 'connect');
      const streams = Array.from({ length: 3 }, (_, i) => session.request({ ':path': `${path}/${i}`, authorization: `Bearer ${token === 'made-up' ? `made-up-${i}-${Math.random()}` : token}` }));
      for (const stream of streams) stream.on('error', () => {});
      // The requests are in cnfguard (waiting for the AS or the upstream) when the client goes away.
      if (token === 'made-up') await expect.poll(() => g.stub.calls(), { timeout: 5000 }).toBeGreaterThanOrEqual(calls + 3);
      else await expect.poll(() => upstream.total(), { timeout: 5000 }).toBe(total + 3);
      session.socket.destroy();
      session.destroy();
    } finally {
      g.stub.mode = { kind: 'normal' };
    }
    // The three requests are over (their access lines written), and the process serves on.
    await expect.poll(() => g.linesFor(`${path}/`).length, { timeout: 10_000 }).toBe(3);
    // Counted as what they were: the client went away.
    expect(g.linesFor(`${path}/`).map((l) => [l.status, l.reason])).toEqual(Array.from({ length: 3 }, () => [499, 'client_aborted']));
    await expect.poll(() => upstream.open(), { timeout: 5000 }).toBe(0);
    expect(await g.status('/h1/fast')).toBe(200);
    expect(g.alive()).toBe(true);
    expect(g.fatalLines()).toEqual([]);
  });
});

describe('many clients that drop or reset at different moments', () => {
  it('never end the process, and leave no upstream request open', async () => {
    const paths = ['/h1/fast', '/h1/held', '/h2c/held', '/h1/denied'];
    const runs = Array.from({ length: 40 }, async (_, i) => {
      const session = g.connect();
      const streams = paths.map((path, j) => session.request({ ':path': `${path}/chaos-${i}`, authorization: `Bearer ${path === '/h1/denied' ? `made-up-${i}-${j}` : BOUND}` }));
      for (const stream of streams) {
        stream.on('error', () => {});
        stream.resume();
      }
      // The answered streams tell that cnfguard has all four (frames arrive in order).
      await Promise.all([streams[0], streams[3]].map((stream) => new Promise((resolve) => stream?.once('response', resolve).once('close', resolve))));
      // Each client leaves at another moment (0 to 45 ms later), half by destroying its socket,
      // half by resetting each stream and then closing the session.
      await new Promise((resolve) => setTimeout(resolve, (i % 10) * 5));
      if (i % 2 === 0) session.socket?.destroy();
      else for (const stream of streams) stream.close(http2.constants.NGHTTP2_CANCEL);
      session.destroy();
    });
    await Promise.all(runs);
    await expect.poll(() => g.linesFor('/h1/held/chaos-').length + g.linesFor('/h2c/held/chaos-').length, { timeout: 10_000 }).toBe(80);
    await expect.poll(() => g.h1.open() + g.h2c.open(), { timeout: 5000 }).toBe(0);
    expect(await g.status('/h1/fast')).toBe(200);
    expect(g.alive()).toBe(true);
    expect(g.fatalLines()).toEqual([]);
  });
});

describe('a client gone while its token is introspected', () => {
  it.each(['1.1', '2'] as const)('gets nothing forwarded once the token is found valid (HTTP/%s)', async (version) => {
    const thumbprint = thumbprintS256(new X509Certificate(g.d.pki.certs.clients.client1.cert).raw);
    const token = `fresh-${version}-${Math.random()}`;
    g.stub.answers.set(token, { active: true, sub: 'alice', client_id: 'app', scope: 'read', exp: Math.floor(Date.now() / 1000) + 600, cnf: { 'x5t#S256': thumbprint } });
    g.stub.mode = { kind: 'delay', ms: 300 };
    const calls = g.stub.calls();
    const total = g.h1.total();
    try {
      const path = `/h1/gone-${version}`;
      if (version === '2') {
        const session = g.connect();
        session.request({ ':path': path, authorization: `Bearer ${token}` }).on('error', () => {});
        await expect.poll(() => g.stub.calls(), { timeout: 5000 }).toBe(calls + 1);
        session.destroy();
      } else {
        const socket = tls.connect({ host: '127.0.0.1', port: g.port, ca: g.d.pki.certs.ca.cert, servername: 'localhost', ...g.d.pki.certs.clients.client1 });
        socket.on('error', () => {});
        await once(socket, 'secureConnect');
        socket.write(`GET ${path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${token}\r\n\r\n`);
        await expect.poll(() => g.stub.calls(), { timeout: 5000 }).toBe(calls + 1);
        socket.destroy();
      }
      await expect.poll(() => g.linesFor(path).length, { timeout: 5000 }).toBe(1);
      expect(g.linesFor(path)[0]).toMatchObject({ status: 499, reason: 'client_aborted' });
      // The verdict (allow) comes after the client left: the upstream never sees the request. The
      // same token again is answered after that verdict (it waits for the same introspection or
      // hits the cache), so by then a forwarded request would have reached the upstream first.
      expect(await g.status('/h1/fast', token)).toBe(200);
      expect(g.h1.total()).toBe(total + 1);
    } finally {
      g.stub.mode = { kind: 'normal' };
    }
  });
});

const raw = () => rawConnection(g.port, g.d.pki.certs.ca.cert, g.d.pki.certs.clients.client1);
const RST_CANCEL = Buffer.from([0, 0, 0, http2.constants.NGHTTP2_CANCEL]);
const open = (id: number, path: string) => frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, id, requestBlockFor(path, { authorization: `Bearer ${BOUND}` }));
const reset = (id: number) => frame(FRAME.RST_STREAM, 0, id, RST_CANCEL);
/** Stream ids 1, 3, 5… for `count` streams. */
const ids = (count: number) => Array.from({ length: count }, (_, i) => 2 * i + 1);

describe('HTTP/2 streams the client resets (CVE-2023-44487)', () => {
  it('opened and reset at once: none holds the upstream, and the session serves on', async () => {
    // Within the budget (2 x 20 per session): the session is not closed.
    const count = MAX_STREAMS + 10;
    const c = await raw();
    try {
      c.write(Buffer.concat(ids(count).flatMap((id) => [open(id, `/h1/rapid/${id}`), reset(id)])));
      await expect.poll(() => g.linesFor('/h1/rapid/').length, { timeout: 10_000 }).toBe(count);
      expect(new Set(g.linesFor('/h1/rapid/').map((l) => l.status))).toEqual(new Set([499]));
      await expect.poll(() => g.h1.open(), { timeout: 5000 }).toBe(0);
      expect(c.isClosed).toBe(false);
      expect(c.goaway).toBeUndefined();
    } finally {
      c.destroy();
    }
  });

  it.each(['/h1', '/h2c'])('reset while the upstream holds them: every upstream request ends (%s)', async (prefix) => {
    const upstream = prefix === '/h1' ? g.h1 : g.h2c;
    const total = upstream.total();
    const c = await raw();
    try {
      c.write(Buffer.concat(ids(MAX_STREAMS).map((id) => open(id, `${prefix}/held-reset/${id}`))));
      await expect.poll(() => upstream.open(), { timeout: 10_000 }).toBe(MAX_STREAMS);
      expect(upstream.total()).toBe(total + MAX_STREAMS);
      c.write(Buffer.concat(ids(MAX_STREAMS).map(reset)));
      await expect.poll(() => upstream.open(), { timeout: 5000 }).toBe(0);
      expect(c.isClosed).toBe(false);
    } finally {
      c.destroy();
    }
  });

});
