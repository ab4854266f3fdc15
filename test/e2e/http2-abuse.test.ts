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
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { thumbprintS256 } from '../../src/tls/certificates.ts';
import { startIntrospectionStub, type IntrospectionStub } from '../fixtures/introspection-stub.ts';
import { baseConfig, startDeployment, type Deployment } from '../fixtures/stack.ts';

const BIN = join(import.meta.dirname, '..', '..', 'bin', 'cnfguard.js');
const MAX_STREAMS = 20;
const BOUND = 'bound-h2-abuse';

let d: Deployment;
let stub: IntrospectionStub;
let child: ChildProcess;
let output = '';
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
    expect(await status('/h1/fast')).toBe(200);
    expect(alive()).toBe(true);
    expect(fatalLines()).toEqual([]);
  });
});
