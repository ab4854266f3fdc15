/**
 * The decision API (issue 16): a real nginx with auth_request, Envoy's ext_authz HTTP check
 * request and Traefik's forwardAuth request as those proxies send them, each allowed and denied,
 * and an untrusted caller refused without a decision.
 */
import { X509Certificate, createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { request, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../fixtures/wait.ts';
import { splitPemCertificates, thumbprintS256 } from '../../src/tls/certificates.ts';
import type { PemPair } from '../../src/tls/dev-certs.ts';
import { ENVOY_RECIPE, TRAEFIK_RECIPE, envoyApply, envoyCheckRequest, envoyRelaysUpstream, loadEnvoyRecipe, loadTraefikRecipe, traefikApply, traefikAuthRequest, type ClientRequest } from '../fixtures/fronts.ts';
import { findNginx } from '../fixtures/nginx.ts';
import { NGINX_RECIPE, startAuthNginx } from '../fixtures/nginx-auth.ts';
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
  guard = await startGuard(d.pki, baseConfig(d.pki, d.as, d.upstream, { trustedProxies, decisionApi: { host: '127.0.0.1', port: 0 }, routes: [{ pathPrefix: '/dpop', methods: ['dpop'], publicOrigin: 'https://api.test' }, { pathPrefix: '/admin', scopes: ['admin'] }] }));
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

  it('a refusal auth_request cannot relay (400, token in the URL) reaches the client as 400 with its challenge', async () => {
    const r = await curl(d.pki, via('/app?access_token=abc'), { cert: d.pki.files.client1, token: token1 });
    expect(r.status).toBe(400);
    expect(r.headers['www-authenticate']).toMatch(/^Bearer realm="cnfguard", error="invalid_request"/);
    expect(r.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('a 503 (the AS is down) reaches the client as 503, not as nginx\'s 500', async () => {
    const down = await startGuard(d.pki, baseConfig(d.pki, d.as, d.upstream, { introspection: { url: 'https://127.0.0.1:1/introspect', clientId: 'rs', clientSecret: 'rs-secret', ca: d.pki.files.ca, timeoutMs: 500 }, trustedProxies: [{ cidrs: ['127.0.0.1/32'], header: 'x-client-cert', format: 'pem-urlencoded' }], decisionApi: { host: '127.0.0.1', port: 0 } }));
    const front = await startAuthNginx({ serverCert: d.pki.files.server.cert, serverKey: d.pki.files.server.key, decisionUrl: down.started.decisionUrl as string, upstreamUrl: d.upstream.url });
    try {
      const r = await curl(d.pki, `https://127.0.0.1:${front?.port}/app`, { cert: d.pki.files.client1, token: await d.tokenFor('client1') });
      expect(r.status).toBe(503);
      // Counted as the 503 it is (CnfguardHighErrorRatio counts 5xx responses), though nginx was answered 403.
      const metrics = await (await fetch(`${down.started.adminUrl as string}/metrics`)).text();
      expect(metrics).toMatch(/^cnfguard_responses_total\{route="default",status="503"\} 1$/m);
      expect(metrics).not.toMatch(/^cnfguard_responses_total\{route="default",status="403"\}/m);
    } finally {
      await front?.stop();
      await down.stop();
    }
  });

  it('the access line names the client behind nginx (forwardedFor), as well as nginx (client)', async () => {
    const r = await curl(d.pki, via('/app/who'), { cert: d.pki.files.client1, token: token1 });
    expect(r.status).toBe(200);
    const line = await waitFor(() => guard.logs.entries().find((e) => e.edge === 'decision-api/nginx' && e.path === '/app/who'), 'the access line', { timeoutMs: 5000, intervalMs: 20 });
    expect(line).toMatchObject({ client: '127.0.0.1', forwardedFor: '127.0.0.1' });
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
    // The line says the status the decision stands for (the recipe gives the client that one), not nginx's 403.
    expect(lines[0]).toMatchObject({ status: 400, decision: 'deny', reason: 'token_in_query' });
    expect(guard.logs.text()).not.toContain(token1);
  });
});

describe('a front that goes away while the decision waits on the AS', () => {
  it('gets one access line, 499 client_aborted, not the status nobody received', async () => {
    // An AS that takes the introspection request and never answers: the check waits in the pipeline until the front goes.
    const held: ServerResponse[] = [];
    const silentAs = createHttpsServer({ ...d.pki.certs.server }, (_req, res) => held.push(res));
    await new Promise<void>((resolve) => silentAs.listen(0, '127.0.0.1', resolve));
    const asPort = (silentAs.address() as AddressInfo).port;
    const slow = await startGuard(d.pki, baseConfig(d.pki, d.as, d.upstream, { introspection: { url: `https://127.0.0.1:${asPort}/introspect`, clientId: 'rs', clientSecret: 'rs-secret', ca: d.pki.files.ca, timeoutMs: 1000 }, trustedProxies: [{ cidrs: ['127.0.0.1/32'], header: 'x-client-cert', format: 'pem-urlencoded' }], decisionApi: { host: '127.0.0.1', port: 0 } }));
    try {
      const req = request({ host: '127.0.0.1', port: slow.started.decisionPort, path: '/nginx', headers: { host: 'app.test', 'x-original-method': 'GET', 'x-original-uri': '/app', authorization: `Bearer ${token1}`, 'x-client-cert': encodeURIComponent(d.pki.certs.clients.client1.cert) } });
      req.on('error', () => {});
      req.end();
      await expect.poll(() => held.length, { timeout: 5000 }).toBeGreaterThan(0);
      req.destroy();
      const line = () => slow.logs.entries().find((e) => e.edge === 'decision-api/nginx');
      await expect.poll(line, { timeout: 8000 }).toBeDefined();
      expect(line()).toMatchObject({ status: 499, decision: 'aborted', reason: 'client_aborted' });
      expect(slow.logs.entries().filter((e) => e.edge === 'decision-api/nginx')).toHaveLength(1);
    } finally {
      silentAs.closeAllConnections();
      silentAs.close();
      await slow.stop();
    }
  });
});

describe('Envoy ext_authz HTTP service, as examples/decision-api/envoy.yaml configures it', () => {
  const recipe = loadEnvoyRecipe();
  const through = async (client: ClientRequest) => {
    const check = envoyCheckRequest(recipe, client);
    const answer = await ask(ENVOY, check.method, check.path, check.headers);
    return { check, answer, outcome: envoyApply(recipe, client, answer) };
  };

  it('the recipe calls the decision API port at /envoy, and authorizes before it routes', () => {
    expect(recipe.extAuthz.http_service.path_prefix).toBe('/envoy');
    expect(new URL(recipe.extAuthz.http_service.server_uri.uri).port).toBe(String(recipe.decisionAddress.port));
    expect(recipe.decisionAddress.port).toBe(9191);
    expect(recipe.filterNames).toEqual(['envoy.filters.http.ext_authz', 'envoy.filters.http.router']);
  });

  it('allowed: the identity headers overwrite the client\'s; the ones cnfguard leaves out are removed, not left as the client sent them', async () => {
    const client = { method: 'POST', target: '/orders/7?x=1', host: 'api.test', headers: { authorization: `Bearer ${token1}`, 'x-auth-subject': 'admin', 'x-auth-dpop-jkt': 'spoofed', 'x-auth-binding': 'spoofed' }, certificates: [d.pki.certs.clients.client1] };
    const { check, answer, outcome } = await through(client);
    expect(check.path).toBe('/envoy/orders/7?x=1');
    expect(check.headers['x-forwarded-client-cert']).toMatch(/^Hash=[0-9a-f]{64};Cert="-----BEGIN%20CERTIFICATE-----/);
    expect(check.headers['x-auth-subject'], 'Envoy does not pass headers outside allowed_headers').toBeUndefined();
    expect(answer.status).toBe(200);
    expect(answer.headers['x-envoy-auth-headers-to-remove']).toContain('x-auth-dpop-jkt');
    // Every identity header cnfguard answers is one the recipe lets through.
    for (const name of Object.keys(answer.headers).filter((n) => n.startsWith('x-auth-') || n === 'x-forwarded-client-cert')) expect(envoyRelaysUpstream(recipe, name), name).toBe(true);
    if (!outcome.forwarded) throw new Error('refused');
    expect(outcome.upstream['x-auth-cert-thumbprint']).toBe(thumbprintS256(der(d.pki.certs.clients.client1)));
    expect(outcome.upstream['x-auth-binding']).toBe('bound');
    expect(outcome.upstream['x-forwarded-client-cert']).toMatch(/^Hash=/);
    expect(outcome.upstream['x-auth-subject']).not.toBe('admin');
    expect(outcome.upstream['x-auth-dpop-jkt']).toBeUndefined();
  });

  it('denied: the client gets the proxy listener\'s 401, WWW-Authenticate and JSON body', async () => {
    const { outcome } = await through({ method: 'GET', target: '/orders', host: 'api.test', headers: { authorization: `Bearer ${token1}` }, certificates: [d.pki.certs.clients.client2] });
    if (outcome.forwarded) throw new Error('forwarded');
    expect(outcome.status).toBe(401);
    expect(outcome.headers['www-authenticate']).toContain('error="invalid_token"');
    expect(outcome.headers['content-type']).toMatch(/^application\/json/);
    expect(JSON.parse(outcome.body)).toMatchObject({ error: 'invalid_token', error_description: 'the access token is bound to a different client certificate' });
  });

  it('DPoP: the proof reaches cnfguard only because allowed_headers lists dpop; checked for the original URI; a replay is refused', async () => {
    const key = await generateKeyPair('ES256');
    const token = await d.as.issueToken({ clientId: 'plain-app', caCert: d.pki.certs.ca.cert, dpopProof: (htu, htm) => generateProof(key, htu, htm) });
    const proof = await generateProof(key, 'https://api.test/dpop/orders', 'GET', undefined, token);
    const client = { method: 'GET', target: '/dpop/orders', host: 'api.test', headers: { authorization: `DPoP ${token}`, dpop: proof } };
    const first = await through(client);
    expect(first.check.headers.dpop).toBe(proof);
    expect(first.answer.status).toBe(200);
    if (!first.outcome.forwarded) throw new Error('refused');
    expect(first.outcome.upstream['x-auth-dpop-jkt']).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(first.answer.headers['x-envoy-auth-headers-to-remove']).toContain('x-forwarded-client-cert');
    const replayed = await through(client);
    expect(replayed.answer.status).toBe(401);
    expect(replayed.answer.headers['www-authenticate']).toContain('DPoP error="invalid_dpop_proof"');
  });
});

describe('Traefik forwardAuth, as examples/decision-api/traefik.yaml configures it', () => {
  const recipe = loadTraefikRecipe();
  const through = async (client: ClientRequest, version: 2 | 3 = 3) => {
    const check = traefikAuthRequest(recipe, client, '198.51.100.7', version);
    const answer = await ask(TRAEFIK, check.method, check.path, check.headers);
    return { check, answer, outcome: traefikApply(recipe, client, answer, version) };
  };
  const client = (cert: PemPair, extra: Record<string, string> = {}): ClientRequest => ({ method: 'DELETE', target: '/cart/1?all=1', host: 'shop.test', headers: { authorization: `Bearer ${token1}`, ...extra }, certificates: [cert] });

  it('the recipe calls /traefik on the decision API port and passes the client certificate first', () => {
    expect(recipe.address.pathname).toBe('/traefik');
    expect(recipe.address.port).toBe('9191');
    expect(recipe.passesCertificate).toBe(true);
    expect(recipe.clientAuthType).toBe('RequestClientCert');
  });

  it('allowed (v3, raw base64 DER): identity headers replace the client\'s copies; the certificate header never reaches the application', async () => {
    const { check, answer, outcome } = await through(client(d.pki.certs.clients.client1, { 'x-auth-subject': 'admin', 'x-auth-dpop-jkt': 'spoofed', 'x-forwarded-tls-client-cert': 'forged' }));
    expect(check.headers['x-forwarded-tls-client-cert']).toBe(der(d.pki.certs.clients.client1).toString('base64'));
    expect(check.headers['x-forwarded-uri']).toBe('/cart/1?all=1');
    expect(answer.status).toBe(200);
    for (const name of Object.keys(answer.headers).filter((n) => n.startsWith('x-auth-') || n === 'x-forwarded-client-cert')) expect(recipe.authResponseHeaders.map((h) => h.toLowerCase()), name).toContain(name);
    if (!outcome.forwarded) throw new Error('refused');
    expect(outcome.upstream['x-auth-binding']).toBe('bound');
    expect(outcome.upstream['x-auth-subject']).not.toBe('admin');
    expect(outcome.upstream['x-auth-dpop-jkt']).toBeUndefined();
    expect(outcome.upstream['x-forwarded-tls-client-cert']).toBeUndefined();
  });

  it('Traefik v2\'s URL-escaped value with the chain (leaf first) is read the same way', async () => {
    const { check, answer } = await through({ ...client(d.pki.certs.clients.client1), certificates: [d.pki.certs.clients.client1, d.pki.certs.ca] }, 2);
    expect(check.headers['x-forwarded-tls-client-cert']).toMatch(/^[A-Za-z0-9%]+,[A-Za-z0-9%]+$/);
    expect(check.headers['x-forwarded-tls-client-cert']).toMatch(/%2[BF]|%3D/);
    expect(answer.status).toBe(200);
    expect(answer.headers['x-auth-cert-thumbprint']).toBe(thumbprintS256(der(d.pki.certs.clients.client1)));
  });

  it('a request Traefik received over plain HTTP (X-Forwarded-Proto: http) is refused with 400, whatever the token', async () => {
    const check = traefikAuthRequest(recipe, client(d.pki.certs.clients.client1), '198.51.100.7');
    for (const proto of ['http', undefined]) {
      const headers: Record<string, string> = { ...check.headers };
      if (proto === undefined) delete headers['x-forwarded-proto'];
      else headers['x-forwarded-proto'] = proto;
      const r = await ask(TRAEFIK, check.method, check.path, headers);
      expect(r.status, String(proto)).toBe(400);
      expect(JSON.parse(r.body)).toMatchObject({ error: 'invalid_request', error_description: 'the request did not arrive over TLS' });
    }
  });

  it('denied: the status, WWW-Authenticate and body go to the client', async () => {
    const { outcome } = await through(client(d.pki.certs.clients.client2));
    if (outcome.forwarded) throw new Error('forwarded');
    expect(outcome.status).toBe(401);
    expect(outcome.headers['www-authenticate']).toContain('invalid_token');
    expect(JSON.parse(outcome.body)).toMatchObject({ error: 'invalid_token' });
  });
});

describe('docs/front-proxies.md, "Recipes"', () => {
  it.each([
    ['nginx.conf', NGINX_RECIPE],
    ['envoy.yaml', ENVOY_RECIPE],
    ['traefik.yaml', TRAEFIK_RECIPE],
  ])('links examples/decision-api/%s, the very file the tests run', (file, run) => {
    const docs = readFileSync(join(import.meta.dirname, '..', '..', 'docs', 'front-proxies.md'), 'utf8');
    expect(docs).toContain(`](../examples/decision-api/${file})`);
    expect(run).toBe(join(import.meta.dirname, '..', '..', 'examples', 'decision-api', file));
    expect(existsSync(run)).toBe(true);
    // Linked, not copied: a copy would drift from the file the tests run.
    expect(docs).not.toContain(readFileSync(run, 'utf8').split('\n').slice(0, 3).join('\n'));
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
