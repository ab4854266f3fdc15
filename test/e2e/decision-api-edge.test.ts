/**
 * The decision API holds what the proxy listener holds (issue 26, finding 12): RFC 9728 metadata
 * reaches the client through the front (the challenge's resource_metadata URL answers), the
 * front's own check-request headers do not count against the client's header limit, and the
 * listener's timeouts are `limits`, not constants of its own.
 */
import { connect } from 'node:net';
import { once } from 'node:events';
import { request } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findNginx } from '../fixtures/nginx.ts';
import { startAuthNginx } from '../fixtures/nginx-auth.ts';
import { baseConfig, curl, startDeployment, startGuard, type Deployment, type Guard } from '../fixtures/stack.ts';
import { closedWithin } from '../fixtures/wait.ts';

const HEADER_COUNT = 20;
const HEADERS_TIMEOUT_MS = 400;

let d: Deployment;
let guard: Guard;
let nginx: Awaited<ReturnType<typeof startAuthNginx>>;
let token: string;

beforeAll(async () => {
  d = await startDeployment();
  guard = await startGuard(
    d.pki,
    baseConfig(d.pki, d.as, d.upstream, {
      trustedProxies: [{ cidrs: ['127.0.0.1/32'], header: 'x-client-cert', format: 'pem-urlencoded' }],
      decisionApi: { host: '127.0.0.1', port: 0 },
      resource: 'https://app.test/api',
      authorizationServers: ['https://as.test'],
      limits: { headerCount: HEADER_COUNT, headersTimeoutMs: HEADERS_TIMEOUT_MS },
    }),
  );
  nginx = await startAuthNginx({ serverCert: d.pki.files.server.cert, serverKey: d.pki.files.server.key, decisionUrl: guard.started.decisionUrl as string, upstreamUrl: d.upstream.url });
  token = await d.tokenFor('client1');
});
afterAll(async () => {
  await nginx?.stop();
  await guard?.stop();
  await d?.stop();
});

function askNginx(headers: Record<string, string>): Promise<{ status: number; headers: Record<string, string | string[] | undefined> }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port: guard.started.decisionPort, method: 'GET', path: '/nginx', headers }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe.skipIf(findNginx() === undefined)('RFC 9728 metadata behind the README nginx recipe', () => {
  it('a refusal points at resource_metadata, and that URL, asked through nginx, answers the document', async () => {
    const refused = await curl(d.pki, `https://127.0.0.1:${nginx?.port}/api/x`, { headers: ['Host: app.test'] });
    expect(refused.status).toBe(401);
    const url = /resource_metadata="([^"]+)"/.exec(refused.headers['www-authenticate'] ?? '')?.[1];
    expect(url).toBe('https://app.test/.well-known/oauth-protected-resource/api');
    const path = new URL(url as string).pathname;
    const document = await curl(d.pki, `https://127.0.0.1:${nginx?.port}${path}`, { headers: ['Host: app.test'] });
    expect(document.status).toBe(200);
    expect(document.json()).toMatchObject({ resource: 'https://app.test/api', authorization_servers: ['https://as.test'] });
  });
});

describe('the decision API listener', () => {
  it('the front\'s own headers do not count against the client\'s header limit; one client header more does', async () => {
    // The client's lines: Host, Authorization and filler up to the limit; the front adds its own.
    const client = (count: number): Record<string, string> => {
      const headers: Record<string, string> = { host: 'app.test', authorization: `Bearer ${token}` };
      for (let i = 0; Object.keys(headers).length < count; i++) headers[`x-filler-${i}`] = 'x';
      return headers;
    };
    const front = { 'x-original-method': 'GET', 'x-original-uri': '/x', 'x-client-cert': encodeURIComponent(d.pki.certs.clients.client1.cert) };
    const within = await askNginx({ ...client(HEADER_COUNT - 1), ...front });
    expect(within.status).toBe(200);
    const over = await askNginx({ ...client(HEADER_COUNT + 1), ...front });
    expect(over.status).toBe(403);
    expect(over.headers['x-cnfguard-status']).toBe('431');
  });

  it('a check request whose headers never end is closed after limits.headersTimeoutMs', async () => {
    const socket = connect(guard.started.decisionPort as number, '127.0.0.1');
    await once(socket, 'connect');
    socket.write('GET /nginx HTTP/1.1\r\nHost: app.test\r\nX-Original-Method: GET\r\n');
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    const started = performance.now();
    // Bounded: the default (10 s) would outlast this wait; limits.headersTimeoutMs (400 ms) does not.
    const closed = await closedWithin(socket, 5000);
    socket.destroy();
    expect(closed).toBe(true);
    expect(performance.now() - started).toBeLessThan(5000);
    expect(Buffer.concat(chunks).toString('latin1')).toMatch(/^HTTP\/1\.1 408/);
  });
});
