/**
 * HTTP/2 clients that misbehave cannot end the process or hold the upstream (issue 26, findings 1,
 * 3 and 7). cnfguard runs as `cnfguard run` in a child process, so a crash is an exit the test
 * sees; the upstreams hold every request and count the open ones.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import http from 'node:http';
import http2 from 'node:http2';
import tls from 'node:tls';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { thumbprintS256 } from '../../src/tls/certificates.ts';
import { FLAG, FRAME, frame, rawConnection, requestBlock, requestBlockFor, type RawConnection } from '../fixtures/h2-frames.ts';
import { startIntrospectionStub, type IntrospectionStub } from '../fixtures/introspection-stub.ts';
import { baseConfig, startDeployment, type Deployment } from '../fixtures/stack.ts';

const BIN = join(import.meta.dirname, '..', '..', 'bin', 'cnfguard.js');
const MAX_STREAMS = 20;
const BOUND = 'bound-h2-abuse';

let d: Deployment;
let stub: IntrospectionStub;
let child: ChildProcess;
let output = '';
let port: number;
let url: string;

/** An upstream that holds every request until the client or the test ends it, and counts the open ones. */
interface HeldUpstream {
  url: string;
  open: () => number;
  total: () => number;
  close(): void;
}

async function heldHttp1(): Promise<HeldUpstream> {
  let open = 0;
  let total = 0;
  const server = http.createServer((req, res) => {
    open++;
    total++;
    res.once('close', () => open--);
    // Answered only for /fast; everything else is held until the client goes away.
    if (req.url?.startsWith('/h1/fast') === true) res.end('fast');
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, open: () => open, total: () => total, close: () => {
      server.close();
      server.closeAllConnections();
    },
  };
}

async function heldH2c(): Promise<HeldUpstream> {
  let open = 0;
  let total = 0;
  const server = http2.createServer();
  server.on('stream', (stream) => {
    open++;
    total++;
    stream.once('close', () => open--);
    stream.on('error', () => {});
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, open: () => open, total: () => total, close: () => void server.close() };
}

let h1: HeldUpstream;
let h2c: HeldUpstream;

beforeAll(async () => {
  d = await startDeployment();
  stub = await startIntrospectionStub(d.pki.certs.server);
  const thumbprint = thumbprintS256(new X509Certificate(d.pki.certs.clients.client1.cert).raw);
  stub.answers.set(BOUND, { active: true, sub: 'alice', client_id: 'app', scope: 'read', exp: Math.floor(Date.now() / 1000) + 600, cnf: { 'x5t#S256': thumbprint } });
  h1 = await heldHttp1();
  h2c = await heldH2c();
  const file = join(d.pki.dir, 'h2-abuse.yaml');
  await writeFile(
    file,
    stringify(
      baseConfig(d.pki, d.as, d.upstream, {
        introspection: { url: stub.url, clientId: 'rs', clientSecret: 'rs-secret', ca: d.pki.files.ca, timeoutMs: 1000, probeAtStartup: false },
        upstreamTimeoutMs: 60_000,
        routes: [
          { pathPrefix: '/h1', upstream: h1.url },
          { pathPrefix: '/h2c', upstream: h2c.url, upstreamHttp2: true },
        ],
        limits: { http2MaxConcurrentStreams: MAX_STREAMS },
        logLevel: 'info',
      }),
    ),
  );
  child = spawn(process.execPath, [BIN, 'run', '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout?.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr?.on('data', (c: Buffer) => (output += c.toString()));
  await new Promise<void>((resolve, reject) => {
    const read = () => output.includes('cnfguard started') && resolve();
    child.stdout?.on('data', read);
    child.once('exit', (code) => reject(new Error(`cnfguard exited ${code} before starting: ${output}`)));
  });
  const started = JSON.parse(output.split('\n').find((l) => l.includes('cnfguard started')) ?? '{}') as { listen: string };
  url = started.listen;
  port = Number(new URL(url).port);
});
afterAll(async () => {
  if (process.env.DUMP === '1') console.log(output);
  if (child !== undefined && child.exitCode === null) {
    child.kill('SIGTERM');
    await once(child, 'exit');
  }
  h1?.close();
  h2c?.close();
  await stub?.stop();
  await d?.stop();
});

const connect = () => {
  const session = http2.connect(url, { ca: d.pki.certs.ca.cert, ...d.pki.certs.clients.client1, servername: 'localhost' });
  session.on('error', () => {});
  return session;
};

/** One request on a fresh session: its status, or the error code. */
async function status(path: string, token = BOUND): Promise<number | string> {
  const session = connect();
  try {
    return await new Promise<number | string>((resolve) => {
      const stream = session.request({ ':path': path, authorization: `Bearer ${token}` });
      stream.on('response', (h) => resolve(Number(h[':status'])));
      stream.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
      stream.resume();
    });
  } finally {
    session.destroy();
  }
}

/** The access lines written so far for paths starting with `prefix`. */
const linesFor = (prefix: string) =>
  output
    .split('\n')
    .filter((l) => l.includes(`"path":"${prefix}`))
    .map((l) => JSON.parse(l) as { status: number; reason: string });
const alive = () => child.exitCode === null && child.signalCode === null;
const fatalLines = () => output.split('\n').filter((l) => l.includes('"level":"fatal"') || l.includes('uncaughtException'));

describe('a client that drops its HTTP/2 connection', () => {
  it.each([
    ['made-up tokens, introspection slow', '/h1/x', 'made-up'],
    ['valid tokens, upstream slow (HTTP/1.1)', '/h1/held', BOUND],
    ['valid tokens, upstream slow (h2c)', '/h2c/held', BOUND],
  ])('does not end the process: %s', async (_name, path, token) => {
    if (token === 'made-up') stub.mode = { kind: 'hang' };
    const calls = stub.calls();
    const upstream = path.startsWith('/h2c') ? h2c : h1;
    const total = upstream.total();
    try {
      const session = connect();
      await once(session, 'connect');
      const streams = Array.from({ length: 3 }, (_, i) => session.request({ ':path': `${path}/${i}`, authorization: `Bearer ${token === 'made-up' ? `made-up-${i}-${Math.random()}` : token}` }));
      for (const stream of streams) stream.on('error', () => {});
      // The requests are in cnfguard (waiting for the AS or the upstream) when the client goes away.
      if (token === 'made-up') await expect.poll(() => stub.calls(), { timeout: 5000 }).toBeGreaterThanOrEqual(calls + 3);
      else await expect.poll(() => upstream.total(), { timeout: 5000 }).toBe(total + 3);
      session.socket.destroy();
      session.destroy();
    } finally {
      stub.mode = { kind: 'normal' };
    }
    // The three requests are over (their access lines written), and the process serves on.
    await expect.poll(() => linesFor(`${path}/`).length, { timeout: 10_000 }).toBe(3);
    // Counted as what they were: the client went away.
    expect(linesFor(`${path}/`).map((l) => [l.status, l.reason])).toEqual(Array.from({ length: 3 }, () => [499, 'client_aborted']));
    await expect.poll(() => upstream.open(), { timeout: 5000 }).toBe(0);
    expect(await status('/h1/fast')).toBe(200);
    expect(alive()).toBe(true);
    expect(fatalLines()).toEqual([]);
  });
});

describe('many clients that drop or reset at different moments', () => {
  it('never end the process, and leave no upstream request open', async () => {
    const paths = ['/h1/fast', '/h1/held', '/h2c/held', '/h1/denied'];
    const runs = Array.from({ length: 40 }, async (_, i) => {
      const session = connect();
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
    await expect.poll(() => linesFor('/h1/held/chaos-').length + linesFor('/h2c/held/chaos-').length, { timeout: 10_000 }).toBe(80);
    await expect.poll(() => h1.open() + h2c.open(), { timeout: 5000 }).toBe(0);
    expect(await status('/h1/fast')).toBe(200);
    expect(alive()).toBe(true);
    expect(fatalLines()).toEqual([]);
  });
});

describe('a client gone while its token is introspected', () => {
  it.each(['1.1', '2'] as const)('gets nothing forwarded once the token is found valid (HTTP/%s)', async (version) => {
    const thumbprint = thumbprintS256(new X509Certificate(d.pki.certs.clients.client1.cert).raw);
    const token = `fresh-${version}-${Math.random()}`;
    stub.answers.set(token, { active: true, sub: 'alice', client_id: 'app', scope: 'read', exp: Math.floor(Date.now() / 1000) + 600, cnf: { 'x5t#S256': thumbprint } });
    stub.mode = { kind: 'delay', ms: 300 };
    const calls = stub.calls();
    const total = h1.total();
    try {
      const path = `/h1/gone-${version}`;
      if (version === '2') {
        const session = connect();
        session.request({ ':path': path, authorization: `Bearer ${token}` }).on('error', () => {});
        await expect.poll(() => stub.calls(), { timeout: 5000 }).toBe(calls + 1);
        session.destroy();
      } else {
        const socket = tls.connect({ host: '127.0.0.1', port: Number(new URL(url).port), ca: d.pki.certs.ca.cert, servername: 'localhost', ...d.pki.certs.clients.client1 });
        socket.on('error', () => {});
        await once(socket, 'secureConnect');
        socket.write(`GET ${path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${token}\r\n\r\n`);
        await expect.poll(() => stub.calls(), { timeout: 5000 }).toBe(calls + 1);
        socket.destroy();
      }
      await expect.poll(() => linesFor(path).length, { timeout: 5000 }).toBe(1);
      expect(linesFor(path)[0]).toMatchObject({ status: 499, reason: 'client_aborted' });
      // The verdict (allow) comes after the client left: the upstream never sees the request. The
      // same token again is answered after that verdict (it waits for the same introspection or
      // hits the cache), so by then a forwarded request would have reached the upstream first.
      expect(await status('/h1/fast', token)).toBe(200);
      expect(h1.total()).toBe(total + 1);
    } finally {
      stub.mode = { kind: 'normal' };
    }
  });
});

const raw = () => rawConnection(port, d.pki.certs.ca.cert, d.pki.certs.clients.client1);
/** Whether the server closes `c` within `ms` (a bound, not a wait for nothing: it resolves at the close). */
async function closedWithin(c: RawConnection, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const result = await Promise.race([c.closed.then(() => true), new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms)))]);
  clearTimeout(timer);
  return result;
}
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
      await expect.poll(() => linesFor('/h1/rapid/').length, { timeout: 10_000 }).toBe(count);
      expect(new Set(linesFor('/h1/rapid/').map((l) => l.status))).toEqual(new Set([499]));
      await expect.poll(() => h1.open(), { timeout: 5000 }).toBe(0);
      expect(c.isClosed).toBe(false);
      expect(c.goaway).toBeUndefined();
    } finally {
      c.destroy();
    }
  });

  it.each(['/h1', '/h2c'])('reset while the upstream holds them: every upstream request ends (%s)', async (prefix) => {
    const upstream = prefix === '/h1' ? h1 : h2c;
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

  it('past the budget the session gets GOAWAY(ENHANCE_YOUR_CALM) and is closed; another client is served', async () => {
    const c = await raw();
    try {
      c.write(Buffer.concat(ids(3 * MAX_STREAMS).flatMap((id) => [open(id, `/h1/flood/${id}`), reset(id)])));
      expect(await closedWithin(c, 10_000)).toBe(true);
      expect(c.goaway).toBe(http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
    } finally {
      c.destroy();
    }
    await expect.poll(() => h1.open(), { timeout: 5000 }).toBe(0);
    expect(await status('/h1/fast')).toBe(200);
    expect(alive()).toBe(true);
  });
});

describe('HTTP/2 control-frame floods', () => {
  it.each([
    ['SETTINGS', () => frame(FRAME.SETTINGS, 0, 0)],
    ['PING', () => frame(FRAME.PING, 0, 0, Buffer.alloc(8))],
  ])('a %s flood paced so that no ACK queue builds up is cut off by count', async (_name, make) => {
    const c = await raw();
    let sent = 0;
    try {
      // 100 frames, then a pause: nghttp2's queue limit (1000 unsent ACKs) is never reached.
      for (let batch = 0; batch < 200 && !c.isClosed; batch++) {
        c.write(Buffer.concat(Array.from({ length: 100 }, make)));
        sent += 100;
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      expect(await closedWithin(c, 10_000)).toBe(true);
      expect(c.goaway).toBe(http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
      expect(sent).toBeLessThan(20_000);
      expect(c.received.acks).toBeLessThan(sent);
    } finally {
      c.destroy();
    }
    expect(await status('/h1/fast')).toBe(200);
  });

  it('a CONTINUATION flood ends the session', async () => {
    const c = await raw();
    try {
      // HEADERS without END_HEADERS, then empty CONTINUATION frames that never end the block.
      c.write(frame(FRAME.HEADERS, FLAG.END_STREAM, 1, requestBlock));
      for (let batch = 0; batch < 100 && !c.isClosed; batch++) {
        c.write(Buffer.concat(Array.from({ length: 100 }, () => frame(FRAME.CONTINUATION, 0, 1))));
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      expect(await closedWithin(c, 10_000)).toBe(true);
      expect(c.goaway).toBeDefined();
    } finally {
      c.destroy();
    }
    expect(await status('/h1/fast')).toBe(200);
    expect(alive()).toBe(true);
  });
});
