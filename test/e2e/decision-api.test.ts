/**
 * The decision API (issue 16): a real nginx with auth_request, Envoy's ext_authz HTTP check
 * request and Traefik's forwardAuth request as those proxies send them, each allowed and denied,
 * and an untrusted caller refused without a decision.
 */
import { X509Certificate, createHash } from 'node:crypto';
import { request } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { splitPemCertificates, thumbprintS256 } from '../../src/tls/certificates.ts';
import type { PemPair } from '../../src/tls/dev-certs.ts';
import { findNginx } from '../fixtures/nginx.ts';
import { startAuthNginx } from '../fixtures/nginx-auth.ts';
import { generateKeyPair, generateProof } from 'dpop';
import { baseConfig, curl, startDeployment, startGuard, type Deployment, type Guard } from '../fixtures/stack.ts';

const der = (pair: PemPair) => new X509Certificate(splitPemCertificates(pair.cert)[0] as string).raw;
const xfcc = (p: PemPair) => `By=spiffe://cluster.local/ns/app/sa/app;Hash=${createHash('sha256').update(der(p)).digest('hex')};Cert="${encodeURIComponent(p.cert)}";Subject="CN=x"`;

const ENVOY = '127.0.0.11';
const TRAEFIK = '127.0.0.12';

let d: Deployment;
let guard: Guard;
let nginx: Awaited<ReturnType<typeof startAuthNginx>>;
let token1: string;

beforeAll(async () => {
  d = await startDeployment();
  const trustedProxies = [
    { cidrs: ['127.0.0.1/32'], header: 'x-client-cert', format: 'pem-urlencoded' },
    { cidrs: [`${ENVOY}/32`], header: 'x-forwarded-client-cert', format: 'xfcc' },
    { cidrs: [`${TRAEFIK}/32`], header: 'x-forwarded-tls-client-cert', format: 'base64-der' },
  ];
  guard = await startGuard(d.pki, baseConfig(d.pki, d.as, d.upstream, { trustedProxies, decisionApi: { host: '127.0.0.1', port: 0 }, routes: [{ pathPrefix: '/dpop', methods: ['dpop'] }, { pathPrefix: '/admin', scopes: ['admin'] }] }));
  nginx = await startAuthNginx({ serverCert: d.pki.files.server.cert, serverKey: d.pki.files.server.key, decisionUrl: guard.started.decisionUrl as string, upstreamUrl: d.upstream.url });
  token1 = await d.tokenFor('client1');
});
afterAll(async () => {
  await nginx?.stop();
  await guard?.stop();
  await d?.stop();
});

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

function ask(from: string, method: string, path: string, headers: Record<string, string>): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port: guard.started.decisionPort, localAddress: from, method, path, headers }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe.skipIf(findNginx() === undefined)('a real nginx with auth_request to /nginx', () => {
  const via = (path: string) => `https://127.0.0.1:${nginx?.port}${path}`;

  it('the bound request reaches the upstream with the identity headers; spoofed ones never do', async () => {
    const r = await curl(d.pki, via('/app?q=1'), { cert: d.pki.files.client1, token: token1, headers: ['X-Auth-Subject: admin', 'X-Auth-Binding: spoofed', 'X-Client-Cert: forged', 'X-Auth-Dpop-Jkt: spoofed', 'X-Original-URI: /other'] });
    expect(r.status).toBe(200);
    const seen = r.json<{ url: string; headers: Record<string, string> }>();
    expect(seen.url).toBe('/app?q=1');
    expect(seen.headers['x-auth-cert-thumbprint']).toBe(thumbprintS256(der(d.pki.certs.clients.client1)));
    expect(seen.headers['x-auth-binding']).toBe('bound');
    expect(seen.headers['x-auth-subject']).not.toBe('admin');
    expect(seen.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
    expect(seen.headers['x-client-cert']).toBeUndefined();
    expect(seen.headers['x-auth-dpop-jkt']).toBeUndefined();
  });

  it('a 403 (insufficient_scope) reaches the client with its WWW-Authenticate, which nginx relays only for 401 by itself', async () => {
    const r = await curl(d.pki, via('/admin/users'), { cert: d.pki.files.client1, token: token1 });
    expect(r.status).toBe(403);
    expect(r.headers['www-authenticate']).toMatch(/^Bearer realm="cnfguard", error="insufficient_scope"/);
    expect(r.headers['x-cnfguard-status']).toBeUndefined();
  });

  it('a refusal nginx cannot relay (400, token in the URL) reaches the client as 403 with X-Cnfguard-Status: 400', async () => {
    const r = await curl(d.pki, via('/app?access_token=abc'), { cert: d.pki.files.client1, token: token1 });
    expect(r.status).toBe(403);
    expect(r.headers['x-cnfguard-status']).toBe('400');
  });

  it('a stolen token (another certificate) gets 401 with WWW-Authenticate relayed; nothing reaches the upstream', async () => {
    const before = d.upstream.requests.length;
    const r = await curl(d.pki, via('/app'), { cert: d.pki.files.client2, token: token1 });
    expect(r.status).toBe(401);
    expect(r.headers['www-authenticate']).toMatch(/^Bearer realm="cnfguard", error="invalid_token"/);
    expect(r.headers['www-authenticate'], 'one challenge, not one from nginx and one from add_header').not.toMatch(/Bearer.*Bearer/);
    expect(d.upstream.requests.length).toBe(before);
  });

  it('a 400 (token in the URL) becomes 403 for nginx, the original status in X-Cnfguard-Status; one access line marked decision-api/nginx', async () => {
    const r = await ask('127.0.0.1', 'GET', '/nginx', { host: 'app.test', 'x-original-method': 'GET', 'x-original-uri': '/x?access_token=abc', authorization: `Bearer ${token1}` });
    expect(r.status).toBe(403);
    expect(r.headers['x-cnfguard-status']).toBe('400');
    expect(JSON.parse(r.body)).toMatchObject({ error: 'invalid_request' });
    const lines = guard.logs.entries().filter((e) => e.edge === 'decision-api/nginx' && e.reqId === r.headers['x-request-id']);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ status: 403, decision: 'deny', reason: 'token_in_query' });
    expect(guard.logs.text()).not.toContain(token1);
  });
});

describe('Envoy ext_authz HTTP service (path_prefix /envoy)', () => {
  it('DPoP: the client\'s proof, passed on by Envoy, is checked for the original URI; a replay is refused', async () => {
    const key = await generateKeyPair('ES256');
    const token = await d.as.issueToken({ clientId: 'plain-app', caCert: d.pki.certs.ca.cert, dpopProof: (htu, htm) => generateProof(key, htu, htm) });
    const proof = await generateProof(key, 'https://api.test/dpop/orders', 'GET', undefined, token);
    const headers = { host: 'api.test', authorization: `DPoP ${token}`, dpop: proof };
    const allowed = await ask(ENVOY, 'GET', '/envoy/dpop/orders', headers);
    expect(allowed.status).toBe(200);
    expect(allowed.headers['x-auth-dpop-jkt']).toMatch(/^[A-Za-z0-9_-]{43}$/);
    const replayed = await ask(ENVOY, 'GET', '/envoy/dpop/orders', headers);
    expect(replayed.status).toBe(401);
    expect(replayed.headers['www-authenticate']).toContain('DPoP error="invalid_dpop_proof"');
  });

  it('allowed: 200 with the identity headers for allowed_upstream_headers', async () => {
    const r = await ask(ENVOY, 'POST', '/envoy/orders/7?x=1', { host: 'api.test', authorization: `Bearer ${token1}`, 'x-forwarded-client-cert': xfcc(d.pki.certs.clients.client1), 'content-length': '0' });
    expect(r.status).toBe(200);
    expect(r.headers['x-auth-cert-thumbprint']).toBe(thumbprintS256(der(d.pki.certs.clients.client1)));
    expect(r.headers['x-auth-binding']).toBe('bound');
    expect(r.headers['x-forwarded-client-cert']).toMatch(/^Hash=/);
  });

  it('denied: the proxy listener\'s 401, WWW-Authenticate and JSON body', async () => {
    const r = await ask(ENVOY, 'GET', '/envoy/orders', { host: 'api.test', authorization: `Bearer ${token1}`, 'x-forwarded-client-cert': xfcc(d.pki.certs.clients.client2) });
    expect(r.status).toBe(401);
    expect(r.headers['www-authenticate']).toContain('error="invalid_token"');
    expect(JSON.parse(r.body)).toMatchObject({ error: 'invalid_token', error_description: 'the access token is bound to a different client certificate' });
  });
});

describe('Traefik forwardAuth', () => {
  const original = (cert: PemPair) => ({
    host: '127.0.0.1',
    'x-forwarded-method': 'DELETE',
    'x-forwarded-proto': 'https',
    'x-forwarded-host': 'shop.test',
    'x-forwarded-uri': '/cart/1',
    authorization: `Bearer ${token1}`,
    'x-forwarded-tls-client-cert': der(cert).toString('base64'),
  });

  it('allowed and denied', async () => {
    const ok = await ask(TRAEFIK, 'GET', '/traefik', original(d.pki.certs.clients.client1));
    expect(ok.status).toBe(200);
    expect(ok.headers['x-auth-binding']).toBe('bound');
    const no = await ask(TRAEFIK, 'GET', '/traefik', original(d.pki.certs.clients.client2));
    expect(no.status).toBe(401);
    expect(no.headers['www-authenticate']).toContain('invalid_token');
  });
});

describe('a caller that is not a trusted proxy', () => {
  it('gets 403 and nothing else: no decision, no access line', async () => {
    const before = guard.logs.lines.length;
    const r = await ask('127.0.0.2', 'GET', '/envoy/x', { host: 'api.test', authorization: `Bearer ${token1}`, 'x-forwarded-client-cert': xfcc(d.pki.certs.clients.client1) });
    expect(r.status).toBe(403);
    expect(r.body).toBe('');
    expect(r.headers['x-auth-binding']).toBeUndefined();
    expect(guard.logs.lines.length).toBe(before);
  });
});
