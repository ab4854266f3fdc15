// End-to-end checks of the test fixtures themselves: the oidc-provider authorization server (real
// mTLS at the token endpoint, real introspection) and the echo upstream.
import { execFile } from 'node:child_process';
import { X509Certificate, createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAuthorizationServer } from '../../demo/authorization-server.ts';
import type { AuthorizationServer } from '../../demo/authorization-server.ts';
import { startEchoUpstream } from '../../demo/echo-upstream.ts';
import type { EchoUpstream, RecordedRequest } from '../../demo/echo-upstream.ts';
import { writeDevCertificates } from '../../src/tls/dev-certs.ts';
import type { PemPair } from '../../src/tls/dev-certs.ts';
import { waitFor } from '../fixtures/wait.ts';

function thumbprint(pem: string): string {
  return createHash('sha256').update(new X509Certificate(pem).raw).digest('base64url');
}

function basic(id: string, secret: string): string {
  return `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}`;
}

async function hasCurl(): Promise<boolean> {
  return new Promise((resolve) => {
    execFile('curl', ['--version'], (err) => resolve(!err));
  });
}

/** Resolves with the error code of a fresh TCP connection attempt ('connected' if it succeeds). */
function tryConnect(port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve('connected');
    });
    socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
}

describe('authorization server (oidc-provider over real mTLS)', () => {
  let dir: string;
  let files: Record<string, string>;
  let ca: string;
  let client1: PemPair;
  let as: AuthorizationServer;
  let dispatcher: Agent;

  async function pair(name: string): Promise<PemPair> {
    return { cert: await readFile(files[`${name}.crt`]!, 'utf8'), key: await readFile(files[`${name}.key`]!, 'utf8') };
  }

  async function introspect(token: string, secret = 'rs-secret'): Promise<{ status: number; body: Record<string, unknown> }> {
    const res = await request(as.introspectionUrl, {
      method: 'POST',
      dispatcher,
      headers: { authorization: basic('rs', secret), 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token }).toString(),
    });
    return { status: res.statusCode, body: (await res.body.json()) as Record<string, unknown> };
  }

  beforeAll(async () => {
    // The certificates go through the files writeDevCertificates writes, as `cnfguard dev-certs` users get them.
    dir = await mkdtemp(join(tmpdir(), 'cnfguard-as-'));
    files = await writeDevCertificates(dir);
    ca = await readFile(files['ca.crt']!, 'utf8');
    client1 = await pair('client1');
    as = await startAuthorizationServer({ tls: await pair('tls') });
    dispatcher = new Agent({ connect: { ca } });
  });

  afterAll(async () => {
    await dispatcher?.close();
    await as?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('listens on the issuer it advertises', async () => {
    expect(as.issuer).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    expect(as.tokenUrl).toBe(`${as.issuer}/token`);
    expect(as.introspectionUrl).toBe(`${as.issuer}/token/introspection`);
    const res = await request(`${as.issuer}/.well-known/openid-configuration`, { dispatcher });
    const metadata = (await res.body.json()) as Record<string, unknown>;
    expect(metadata.issuer).toBe(as.issuer);
    expect(metadata.introspection_endpoint).toBe(as.introspectionUrl);
    expect(metadata.tls_client_certificate_bound_access_tokens).toBe(true);
  });

  it('issues a token bound to the certificate presented at the token endpoint', async () => {
    const before = as.introspectionCalls();
    const token = await as.issueToken({ clientId: 'app', clientSecret: 'app-secret', clientCert: client1, caCert: ca });
    expect(token).toMatch(/^[\w-]{20,}$/); // opaque, not a JWT
    const { status, body } = await introspect(token);
    expect(status).toBe(200);
    expect(body).toMatchObject({
      active: true,
      client_id: 'app',
      scope: 'read write',
      token_type: 'Bearer',
      iss: as.issuer,
      aud: 'https://rs.cnfguard.test/',
      cnf: { 'x5t#S256': thumbprint(client1.cert) },
    });
    expect(body.exp).toBe((body.iat as number) + 300);
    expect(as.introspectionCalls() - before).toBe(1);
  });

  it('counts every introspection POST, starting from zero on a fresh server', async () => {
    const other = await startAuthorizationServer({ tls: await pair('tls'), scope: 'read', accessTokenTtlSeconds: 60 });
    try {
      expect(other.introspectionCalls()).toBe(0);
      const token = await other.issueToken({ clientCert: client1, caCert: ca, scope: 'read write' });
      const res = await request(other.introspectionUrl, {
        method: 'POST',
        dispatcher,
        headers: { authorization: basic('rs', 'rs-secret'), 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ token }).toString(),
      });
      const body = (await res.body.json()) as Record<string, unknown>;
      // The resource server offers only 'read', so 'write' is dropped; the TTL option applies.
      expect(body).toMatchObject({ active: true, scope: 'read' });
      expect(body.exp).toBe((body.iat as number) + 60);
      expect(other.introspectionCalls()).toBe(1);
    } finally {
      await other.stop();
    }
  });

  it('issues unbound tokens to plain-app', async () => {
    const token = await as.issueToken({ clientId: 'plain-app', clientSecret: 'plain-app-secret', caCert: ca });
    const { body } = await introspect(token);
    expect(body).toMatchObject({ active: true, client_id: 'plain-app', scope: 'read write', token_type: 'Bearer' });
    expect(body.cnf).toBeUndefined();
  });

  it('refuses a bound client that presents no certificate', async () => {
    await expect(as.issueToken({ clientId: 'app', caCert: ca })).rejects.toThrow(/invalid_grant/);
  });

  it('answers inactive for unknown and revoked tokens, and 401 to a wrong secret', async () => {
    expect((await introspect('not-a-token')).body).toEqual({ active: false });
    const token = await as.issueToken({ clientCert: client1, caCert: ca });
    expect((await introspect(token)).body.active).toBe(true);
    await as.revoke(token);
    expect((await introspect(token)).body).toEqual({ active: false });
    const wrong = await introspect(token, 'wrong');
    expect(wrong.status).toBe(401);
    expect(wrong.body.error).toBe('invalid_client');
  });

  it('works with curl / OpenSSL as the client', async (ctx) => {
    if (!(await hasCurl())) ctx.skip();
    const out = await new Promise<string>((resolve, reject) => {
      execFile(
        'curl',
        ['-sS', '--fail-with-body', '--cacert', files['ca.crt']!, '--cert', files['client1.crt']!, '--key', files['client1.key']!,
          '-u', 'app:app-secret', '-d', 'grant_type=client_credentials', '-d', 'scope=read write', as.tokenUrl],
        (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}\n${stdout}`)) : resolve(stdout)),
      );
    });
    const token = (JSON.parse(out) as { access_token: string }).access_token;
    expect((await introspect(token)).body).toMatchObject({ active: true, cnf: { 'x5t#S256': thumbprint(client1.cert) } });
  });

  it('stop() closes idle keep-alive connections and the listener', async () => {
    const victim = await startAuthorizationServer({ tls: await pair('tls') });
    const port = Number(new URL(victim.issuer).port);
    const keepAlive = new Agent({ connect: { ca }, keepAliveTimeout: 60_000 });
    try {
      const res = await request(`${victim.issuer}/jwks`, { dispatcher: keepAlive });
      expect(res.statusCode).toBe(200);
      await res.body.dump(); // the connection now idles in the agent's pool
      const started = Date.now();
      await victim.stop();
      expect(Date.now() - started).toBeLessThan(1000);
      expect(await tryConnect(port)).toBe('ECONNREFUSED');
      await expect(victim.issueToken({ clientCert: client1, caCert: ca })).rejects.toThrow();
      await victim.stop(); // idempotent
    } finally {
      await keepAlive.close();
    }
  });
});

describe('echo upstream', () => {
  let upstream: EchoUpstream;

  beforeAll(async () => {
    upstream = await startEchoUpstream();
  });

  afterAll(async () => {
    await upstream?.stop();
  });

  it('streams a 1 MB body through SHA-256 and records the request', async () => {
    const body = randomBytes(1024 * 1024);
    const res = await request(`${upstream.url}/upload?x=1`, {
      method: 'POST',
      headers: { 'content-type': 'application/octet-stream', 'x-test': 'yes' },
      body,
    });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toBe('application/json');
    const echoed = (await res.body.json()) as RecordedRequest;
    const sha = createHash('sha256').update(body).digest('hex');
    expect(echoed).toMatchObject({ method: 'POST', url: '/upload?x=1', bodyBytes: body.length, bodySha256: sha });
    expect(echoed.headers['x-test']).toBe('yes');
    const recorded = upstream.requests.at(-1);
    expect(recorded).toMatchObject({ method: 'POST', url: '/upload?x=1', bodyBytes: body.length, bodySha256: sha });
  });

  it('delays the answer by x-echo-delay-ms', async () => {
    const started = performance.now();
    const res = await request(`${upstream.url}/slow`, { headers: { 'x-echo-delay-ms': '300' } });
    await res.body.dump();
    expect(res.statusCode).toBe(200);
    expect(performance.now() - started).toBeGreaterThanOrEqual(290);

    const quick = performance.now();
    await (await request(`${upstream.url}/fast`)).body.dump();
    expect(performance.now() - quick).toBeLessThan(250);
  });

  it('completes a websocket handshake and echoes raw bytes', async () => {
    const socket = connect({ host: '127.0.0.1', port: Number(new URL(upstream.url).port) });
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once('connect', resolve);
        socket.once('error', reject);
      });
      let received = Buffer.alloc(0);
      socket.on('data', (chunk: Buffer) => {
        received = Buffer.concat([received, chunk]);
      });
      const got = () => `more bytes; got ${JSON.stringify(received.toString('latin1'))}`;
      // The key and accept value are RFC 6455 §1.3's example.
      socket.write(
        'GET /ws HTTP/1.1\r\nHost: upstream\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
          'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
      );
      await waitFor(() => received.includes('\r\n\r\n'), got, { intervalMs: 5 });
      const head = received.toString('latin1');
      expect(head).toMatch(/^HTTP\/1\.1 101 /);
      expect(head).toMatch(/\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK\+xOo=\r\n/i);
      received = received.subarray(received.indexOf('\r\n\r\n') + 4);

      const payload = Buffer.from([0x81, 0x85, 1, 2, 3, 4, 0x69, 0x67, 0x6f, 0x68, 0x6e]);
      socket.write(payload);
      await waitFor(() => received.length >= payload.length, got, { intervalMs: 5 });
      expect(received.equals(payload)).toBe(true);
      expect(upstream.requests.at(-1)).toMatchObject({ method: 'GET', url: '/ws', bodyBytes: 0 });
      expect(upstream.requests.at(-1)?.headers.upgrade).toBe('websocket');
    } finally {
      socket.destroy();
    }
  });
});
