/**
 * The decision API on a Unix socket (`decisionApi.socket`): a real nginx running the recipe with its
 * upstream pointed at the socket, the trust rule for a peer with no address (only a
 * `unixSocket: true` entry believes it, and it believes no TCP peer), the socket file's
 * permissions, and what start-up does with a file already at the path.
 */
import { execFileSync, spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { existsSync, statSync, writeFileSync, readFileSync } from 'node:fs';
import { request } from 'node:http';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { configWarnings } from '../../src/config/checks.ts';
import { loadConfigFile } from '../../src/config/load.ts';
import { splitPemCertificates, thumbprintS256 } from '../../src/tls/certificates.ts';
import { findNginx } from '../fixtures/nginx.ts';
import { startAuthNginx } from '../fixtures/nginx-auth.ts';
import { baseConfig, curl, startDeployment, startGuard, type Deployment, type Guard } from '../fixtures/stack.ts';

let d: Deployment;
let token1: string;
const NGINX_ENTRY = { unixSocket: true, header: 'x-client-cert', format: 'pem-urlencoded' };

beforeAll(async () => {
  d = await startDeployment();
  token1 = await d.tokenFor('client1');
});
afterAll(async () => {
  await d?.stop();
});

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
}

/** A check request as nginx's auth_request sends it, over the socket or to a TCP port. */
function ask(where: { socketPath: string } | { port: number }, headers: Record<string, string>): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request({ ...where, host: '127.0.0.1', method: 'GET', path: '/nginx', headers: { host: 'api.test', 'x-original-method': 'GET', 'x-original-uri': '/app', ...headers }, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers }));
    });
    req.on('error', reject);
    req.end();
  });
}

const socketIn = (name: string) => join(d.pki.dir, `${name}-${Math.random().toString(36).slice(2, 8)}.sock`);
const modeOf = (path: string) => statSync(path).mode & 0o777;

describe.skipIf(findNginx() === undefined)('a real nginx asking over the Unix socket', () => {
  let guard: Guard;
  let nginx: Awaited<ReturnType<typeof startAuthNginx>>;
  let socket: string;

  beforeAll(async () => {
    socket = socketIn('nginx');
    guard = await startGuard(d.pki, baseConfig(d.pki, d.as, d.upstream, { trustedProxies: [NGINX_ENTRY], decisionApi: { socket } }));
    nginx = await startAuthNginx({ serverCert: d.pki.files.server.cert, serverKey: d.pki.files.server.key, decisionUrl: `unix:${socket}`, upstreamUrl: d.upstream.url });
  });
  afterAll(async () => {
    await nginx?.stop();
    await guard?.stop();
  });

  it('the bound request reaches the upstream with the identity headers; the access line names the socket peer', async () => {
    expect(guard.started.decisionSocket).toBe(socket);
    expect(guard.started.decisionUrl).toBeUndefined();
    expect(guard.logs.entries().find((l) => l.msg === 'cnfguard started')).toMatchObject({ decisionSocket: socket });
    const r = await curl(d.pki, `https://127.0.0.1:${nginx?.port}/app?q=1`, { cert: d.pki.files.client1, token: token1, headers: ['X-Auth-Binding: spoofed', 'X-Client-Cert: forged'] });
    expect(r.status).toBe(200);
    const seen = r.json<{ url: string; headers: Record<string, string> }>();
    expect(seen.url).toBe('/app?q=1');
    const der = new X509Certificate(splitPemCertificates(d.pki.certs.clients.client1.cert)[0] as string).raw;
    expect(seen.headers['x-auth-cert-thumbprint']).toBe(thumbprintS256(der));
    expect(seen.headers['x-auth-binding']).toBe('bound');
    expect(seen.headers['x-client-cert']).toBeUndefined();
    const line = guard.logs.entries().find((l) => l.msg === 'request' && l.path === '/app');
    expect(line).toMatchObject({ edge: 'decision-api/nginx', client: 'unix', status: 200, reason: 'bound' });
  });

  it('a request without a certificate gets the 401 the proxy listener would send', async () => {
    const r = await curl(d.pki, `https://127.0.0.1:${nginx?.port}/app`, { token: token1 });
    expect(r.status).toBe(401);
    expect(r.headers['www-authenticate']).toMatch(/^Bearer realm="cnfguard"/);
  });

  it('the socket file has the default mode 0660 and is gone after stop', async () => {
    expect(modeOf(socket)).toBe(0o660);
    const other = socketIn('mode');
    const g = await startGuard(d.pki, baseConfig(d.pki, d.as, d.upstream, { trustedProxies: [NGINX_ENTRY], decisionApi: { socket: other, socketMode: '0600' } }));
    expect(modeOf(other)).toBe(0o600);
    await g.stop();
    expect(existsSync(other)).toBe(false);
  });
});

describe('who is believed on the socket', () => {
  it('a CIDR entry does not believe the socket peer, and a unixSocket entry believes no TCP peer', async () => {
    const socket = socketIn('trust');
    const guard = await startGuard(
      d.pki,
      baseConfig(d.pki, d.as, d.upstream, {
        // The TCP entry reads another header, so each answer shows which entry (if any) believed the caller.
        trustedProxies: [{ cidrs: ['127.0.0.1/32'], header: 'x-tcp-cert', format: 'pem-urlencoded' }, NGINX_ENTRY],
        decisionApi: { host: '127.0.0.1', port: 0, socket },
      }),
    );
    try {
      const pem = encodeURIComponent(d.pki.certs.clients.client1.cert);
      const bearer = { authorization: `Bearer ${token1}` };
      // Over the socket: believed through the unixSocket entry's header only.
      expect((await ask({ socketPath: socket }, { ...bearer, 'x-client-cert': pem })).status).toBe(200);
      expect((await ask({ socketPath: socket }, { ...bearer, 'x-tcp-cert': pem })).status).toBe(401);
      // Over TCP from 127.0.0.1: believed through the CIDR entry's header only.
      const port = guard.started.decisionPort as number;
      expect((await ask({ port }, { ...bearer, 'x-tcp-cert': pem })).status).toBe(200);
      expect((await ask({ port }, { ...bearer, 'x-client-cert': pem })).status).toBe(401);
    } finally {
      await guard.stop();
    }
  });

  it('without a unixSocket entry every check over the socket is refused with a bare 403, and check warns', async () => {
    const socket = socketIn('untrusted');
    const config = baseConfig(d.pki, d.as, d.upstream, { trustedProxies: [{ cidrs: ['127.0.0.1/32'], header: 'x-client-cert', format: 'pem-urlencoded' }], decisionApi: { socket } });
    const guard = await startGuard(d.pki, config);
    try {
      const r = await ask({ socketPath: socket }, { authorization: `Bearer ${token1}`, 'x-client-cert': encodeURIComponent(d.pki.certs.clients.client1.cert) });
      expect(r.status).toBe(403);
      expect(r.headers['www-authenticate']).toBeUndefined();
      expect(guard.logs.entries().some((l) => l.msg === 'request')).toBe(false);
    } finally {
      await guard.stop();
    }
    const warnings = configWarnings(loadConfigFile(guard.configFile, process.env).settings);
    expect(warnings.find((w) => w.path === 'decisionApi.socket')?.message).toMatch(/^no trustedProxies entry has unixSocket: true/);
  });
});

describe('a file already at the socket path', () => {
  const config = (socket: string) => baseConfig(d.pki, d.as, d.upstream, { trustedProxies: [NGINX_ENTRY], decisionApi: { socket } });

  it('a stale socket (its process died) is replaced', async () => {
    const socket = socketIn('stale');
    // A socket file nobody listens on: bound by a process that exits without removing it.
    execFileSync('python3', ['-c', `import socket; s = socket.socket(socket.AF_UNIX); s.bind(${JSON.stringify(socket)})`]);
    expect(statSync(socket).isSocket()).toBe(true);
    const guard = await startGuard(d.pki, config(socket));
    try {
      const r = await ask({ socketPath: socket }, { authorization: `Bearer ${token1}`, 'x-client-cert': encodeURIComponent(d.pki.certs.clients.client1.cert) });
      expect(r.status).toBe(200);
    } finally {
      await guard.stop();
    }
  });

  it('a live socket of another process is an error naming the key, and keeps serving its owner', async () => {
    const socket = socketIn('live');
    // The start-up's probe connects and leaves at once: its reset is not this server's error.
    const other: Server = createServer((c) => c.on('error', () => {}).end('other\n'));
    await new Promise<void>((resolve) => other.listen(socket, resolve));
    try {
      await expect(startGuard(d.pki, config(socket))).rejects.toThrow(/the decision API's socket \(decisionApi\.socket\) cannot listen on .*: EADDRINUSE: another process listens on that socket/);
      const answer = await new Promise<string>((resolve, reject) => {
        const child = spawn('python3', ['-c', `import socket; s = socket.socket(socket.AF_UNIX); s.connect(${JSON.stringify(socket)}); print(s.recv(16).decode(), end='')`]);
        let out = '';
        child.stdout.on('data', (c: Buffer) => (out += c.toString()));
        child.on('error', reject).on('close', () => resolve(out));
      });
      expect(answer).toBe('other\n');
    } finally {
      await new Promise((resolve) => other.close(resolve));
    }
  });

  it('a regular file is an error and is left as it is', async () => {
    const socket = socketIn('file');
    writeFileSync(socket, 'keep me\n');
    await expect(startGuard(d.pki, config(socket))).rejects.toThrow(/decisionApi\.socket\) cannot listen on .*: EADDRINUSE/);
    expect(readFileSync(socket, 'utf8')).toBe('keep me\n');
  });
});
