/**
 * The nginx recipe (examples/decision-api/nginx.conf) carries everything cnfguard's /nginx answer
 * says, and nginx never answers for cnfguard (issue 27, findings 2, 3, 4 and 6), through a real
 * nginx with real curl and a raw TLS client:
 * - the signed identity assertion replaces a client's forged copy; without `assertion`, a forged
 *   copy never reaches the upstream;
 * - client headers past `limits.headerBytes` are 431, a client certificate far larger than it
 *   (the front's header, not the client's) is judged, a request without Host is 400: each a
 *   decision with one access line, never nginx's 500 for a status auth_request cannot relay;
 * - a 429 over the introspection budget keeps its Retry-After;
 * - an original method that is not an RFC 9110 token is refused as a missing one.
 */
import { X509Certificate, createHash, createPublicKey, generateKeyPairSync, verify } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import forge from 'node-forge';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PemPair } from '../../src/tls/dev-certs.ts';
import { findNginx, type Nginx } from '../fixtures/nginx.ts';
import { startAuthNginx } from '../fixtures/nginx-auth.ts';
import { rawRequest, sendRaw } from '../fixtures/raw-http.ts';
import { baseConfig, curl, startDeployment, startGuard, type Deployment, type Guard } from '../fixtures/stack.ts';

const TRUSTED = [{ cidrs: ['127.0.0.1/32'], header: 'x-client-cert', format: 'pem-urlencoded' }];
const ISSUER = 'https://cnfguard.test';

let d: Deployment;
/** With `assertion`. */
let signed: { guard: Guard; nginx: Nginx | undefined; publicKey: string };
/** No assertion; an introspection budget of one new token per peer (so only `token` and the budget test's tokens go to it). */
let plain: { guard: Guard; nginx: Nginx | undefined };
let token: string;

beforeAll(async () => {
  d = await startDeployment();
  const keys = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const keyFile = join(d.pki.dir, 'assertion.key');
  writeFileSync(keyFile, keys.privateKey.export({ type: 'pkcs8', format: 'pem' }));
  const front = (guard: Guard) => startAuthNginx({ serverCert: d.pki.files.server.cert, serverKey: d.pki.files.server.key, decisionUrl: guard.started.decisionUrl as string, upstreamUrl: d.upstream.url });
  const [signedGuard, plainGuard] = await Promise.all([
    startGuard(d.pki, baseConfig(d.pki, d.as, d.upstream, { trustedProxies: TRUSTED, decisionApi: { host: '127.0.0.1', port: 0 }, assertion: { keyFile, issuer: ISSUER } })),
    startGuard(d.pki, baseConfig(d.pki, d.as, d.upstream, { trustedProxies: TRUSTED, decisionApi: { host: '127.0.0.1', port: 0 }, introspection: { ...(baseConfig(d.pki, d.as, d.upstream).introspection as object), budget: { perPeerPerSecond: 0.01, perPeerBurst: 1 } } })),
  ]);
  signed = { guard: signedGuard, nginx: await front(signedGuard), publicKey: keys.publicKey.export({ type: 'spki', format: 'pem' }) as string };
  plain = { guard: plainGuard, nginx: await front(plainGuard) };
  token = await d.tokenFor('client1');
});

afterAll(async () => {
  await signed?.nginx?.stop();
  await plain?.nginx?.stop();
  await signed?.guard.stop();
  await plain?.guard.stop();
  await d?.stop();
});

const via = (nginx: Nginx | undefined, path: string) => `https://127.0.0.1:${nginx?.port}${path}`;

interface Seen {
  url: string;
  headers: Record<string, string>;
}

/** A compact JWS's claims, once its ES256 signature verifies with `publicKey`. */
function verifiedClaims(jws: string, publicKey: string): Record<string, unknown> {
  const [header, payload, signature] = jws.split('.') as [string, string, string];
  expect(JSON.parse(Buffer.from(header, 'base64url').toString('utf8'))).toMatchObject({ alg: 'ES256' });
  const ok = verify('sha256', Buffer.from(`${header}.${payload}`), { key: createPublicKey(publicKey), dsaEncoding: 'ieee-p1363' }, Buffer.from(signature, 'base64url'));
  expect(ok, 'the assertion verifies with cnfguard\'s key').toBe(true);
  return JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as Record<string, unknown>;
}

/** The decision API's access lines of one guard (each decision is one). */
const decisionLines = (guard: Guard) => guard.logs.entries().filter((e) => e.edge === 'decision-api/nginx');

describe.skipIf(findNginx() === undefined)('the nginx recipe relays the identity assertion', () => {
  it('with `assertion`: the upstream receives cnfguard\'s signed assertion, never the client\'s forged copy', async () => {
    const r = await curl(d.pki, via(signed.nginx, '/app'), { cert: d.pki.files.client1, token, headers: ['X-Auth-Assertion: forged.by.client'] });
    expect(r.status).toBe(200);
    const assertion = r.json<Seen>().headers['x-auth-assertion'];
    expect(assertion).toMatch(/^eyJ[\w-]*\.[\w-]+\.[\w-]+$/);
    expect(verifiedClaims(assertion as string, signed.publicKey)).toMatchObject({ iss: ISSUER });
  });

  it('with `assertion`, a request without a forged copy gets the signed one too', async () => {
    const r = await curl(d.pki, via(signed.nginx, '/app'), { cert: d.pki.files.client1, token });
    expect(r.status).toBe(200);
    verifiedClaims(r.json<Seen>().headers['x-auth-assertion'] as string, signed.publicKey);
  });

  it('without `assertion`: a client\'s forged copy is removed, none is sent', async () => {
    const r = await curl(d.pki, via(plain.nginx, '/app'), { cert: d.pki.files.client1, token, headers: ['X-Auth-Assertion: forged.by.client'] });
    expect(r.status).toBe(200);
    expect(r.json<Seen>().headers['x-auth-assertion']).toBeUndefined();
  });
});

/**
 * A client certificate of about `bytes` DER bytes, signed by the dev CA: the bulk is a private,
 * non-critical extension, or (`dnsNames`) DNS names, which the allow answer's XFCC lists too.
 */
function bigClientCertificate(ca: PemPair, bytes: number, dnsNames: string[] = []): PemPair {
  const { privateKey: keyPem } = generateKeyPairSync('rsa', { modulusLength: 2048, privateKeyEncoding: { type: 'pkcs8', format: 'pem' }, publicKeyEncoding: { type: 'spki', format: 'pem' } });
  const key = forge.pki.privateKeyFromPem(keyPem);
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.setRsaPublicKey(key.n, key.e);
  cert.serialNumber = '01' + createHash('sha256').update(keyPem).digest('hex').slice(0, 16);
  cert.validity.notBefore = new Date(Date.now() - 3600_000);
  cert.validity.notAfter = new Date(Date.now() + 86_400_000);
  const caCert = forge.pki.certificateFromPem(ca.cert);
  cert.setSubject([{ name: 'commonName', value: 'big-client' }]);
  cert.setIssuer(caCert.subject.attributes);
  const filler = forge.asn1.create(forge.asn1.Class.UNIVERSAL, forge.asn1.Type.OCTETSTRING, false, 'x'.repeat(bytes));
  cert.setExtensions([
    { name: 'basicConstraints', cA: false, critical: true },
    { name: 'extKeyUsage', clientAuth: true },
    { id: '1.3.6.1.4.1.55555.1', value: forge.asn1.toDer(filler).getBytes() },
    ...(dnsNames.length > 0 ? [{ name: 'subjectAltName', altNames: dnsNames.map((value) => ({ type: 2, value })) }] : []),
  ]);
  cert.sign(forge.pki.privateKeyFromPem(ca.key), forge.md.sha256.create());
  return { cert: forge.pki.certificateToPem(cert), key: keyPem };
}

describe.skipIf(findNginx() === undefined)('refusals nginx would turn into 500 are decisions, relayed with their status', () => {
  it('three 7 KB client headers (over limits.headerBytes, 16384) are 431, with one access line', async () => {
    const before = decisionLines(signed.guard).length;
    const filler = ['A', 'B', 'C'].map((n) => `X-Filler-${n}: ${'f'.repeat(7 * 1024)}`);
    const r = await curl(d.pki, via(signed.nginx, '/app'), { cert: d.pki.files.client1, token, headers: filler });
    expect(r.status).toBe(431);
    const lines = decisionLines(signed.guard).slice(before);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ decision: 'deny', reason: 'headers_too_large' });
  });

  it('client headers just within limits.headerBytes, with the front\'s own lines on top, are judged as usual', async () => {
    const r = await curl(d.pki, via(signed.nginx, '/app'), { cert: d.pki.files.client1, token, headers: ['A', 'B'].map((n) => `X-Filler-${n}: ${'f'.repeat(7 * 1024)}`) });
    expect(r.status).toBe(200);
  });

  it('a client certificate of ~13 KB DER (its URL-encoded PEM over limits.headerBytes) is read, and the bound token allowed', async () => {
    const big = bigClientCertificate(d.pki.certs.ca, 12_500);
    const der = new X509Certificate(big.cert).raw;
    expect(der.length).toBeGreaterThan(12_500);
    expect(encodeURIComponent(big.cert).length).toBeGreaterThan(16_384);
    const certFile = join(d.pki.dir, 'big-client.crt');
    const keyFile = join(d.pki.dir, 'big-client.key');
    writeFileSync(certFile, big.cert);
    writeFileSync(keyFile, big.key);
    const bound = await d.as.issueToken({ clientCert: big, caCert: d.pki.certs.ca.cert });
    const r = await curl(d.pki, via(signed.nginx, '/app'), { cert: { cert: certFile, key: keyFile }, token: bound });
    expect(r.status).toBe(200);
    expect(r.json<Seen>().headers['x-auth-cert-thumbprint']).toBe(createHash('sha256').update(der).digest('base64url'));
  });

  it('a client certificate with 250 DNS names: the allow answer (its XFCC lists them, ~9 KB) fits what nginx reads of it', async () => {
    const names = Array.from({ length: 250 }, (_, i) => `workload-${i}.payments.svc.cluster.local`);
    const many = bigClientCertificate(d.pki.certs.ca, 16, names);
    const certFile = join(d.pki.dir, 'many-names.crt');
    const keyFile = join(d.pki.dir, 'many-names.key');
    writeFileSync(certFile, many.cert);
    writeFileSync(keyFile, many.key);
    const bound = await d.as.issueToken({ clientCert: many, caCert: d.pki.certs.ca.cert });
    const r = await curl(d.pki, via(signed.nginx, '/app'), { cert: { cert: certFile, key: keyFile }, token: bound });
    expect(r.status).toBe(200);
    const xfcc = r.json<Seen>().headers['x-forwarded-client-cert'] as string;
    expect(xfcc.length).toBeGreaterThan(8192);
    expect(xfcc).toContain('DNS=workload-249.payments.svc.cluster.local');
  });

  it('HTTP/1.0 without Host is 400 (host_malformed), as on the proxy listener, with one access line', async () => {
    const before = decisionLines(signed.guard).length;
    const r = await sendRaw({ port: signed.nginx?.port as number, tls: { ca: d.pki.certs.ca.cert, client: d.pki.certs.clients.client1 } }, rawRequest('/hello', { version: '1.0', host: null, headers: [['Authorization', `Bearer ${token}`]] }));
    expect(r.status).toBe(400);
    const lines = decisionLines(signed.guard).slice(before);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ decision: 'deny', reason: 'host_malformed' });
  });
});

describe.skipIf(findNginx() === undefined)('Retry-After through the nginx recipe', () => {
  it('a 429 over the introspection budget reaches the client with its Retry-After', async () => {
    // The budget lets one new token through per peer (nginx, here) and refills in 100 s: of two new ones, the second is over it.
    const [first, second] = await Promise.all([d.tokenFor('client1'), d.tokenFor('client1')]);
    expect([200, 429]).toContain((await curl(d.pki, via(plain.nginx, '/app'), { cert: d.pki.files.client1, token: first })).status);
    const r = await curl(d.pki, via(plain.nginx, '/app'), { cert: d.pki.files.client1, token: second });
    expect(r.status).toBe(429);
    expect(r.headers['retry-after']).toMatch(/^\d+$/);
  });
});

describe('an original method that is not an RFC 9110 token (nginx, Traefik; Envoy\'s is the check request\'s own, parsed by Node)', () => {
  function ask(path: string, headers: Record<string, string>): Promise<{ status: number; headers: Record<string, string | string[] | undefined> }> {
    return new Promise((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port: signed.guard.started.decisionPort, method: 'GET', path, headers }, (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers }));
      });
      req.on('error', reject);
      req.end();
    });
  }
  const askNginx = (headers: Record<string, string>) => ask('/nginx', headers);
  const original = (method?: string): Record<string, string> => ({ host: 'app.test', 'x-original-uri': '/x', authorization: `Bearer ${token}`, 'x-client-cert': encodeURIComponent(d.pki.certs.clients.client1.cert), ...(method !== undefined && { 'x-original-method': method }) });

  it('is refused as a missing one: 400 (403 to nginx, X-Cnfguard-Status 400)', async () => {
    const missing = await askNginx(original());
    expect(missing.status).toBe(403);
    expect(missing.headers['x-cnfguard-status']).toBe('400');
    for (const method of ['', 'G ET', 'G(ET', 'GÉT', 'GET,POST']) {
      const r = await askNginx(original(method));
      expect([r.status, r.headers['x-cnfguard-status']], JSON.stringify(method)).toEqual([403, '400']);
    }
    expect((await askNginx(original('GET'))).status).toBe(200);
    expect((await askNginx(original('M-SEARCH'))).status).toBe(200);
  });

  it('Traefik\'s X-Forwarded-Method likewise: 400', async () => {
    const traefik = (method?: string): Record<string, string> => ({
      host: 'cnfguard',
      'x-forwarded-proto': 'https',
      'x-forwarded-host': 'app.test',
      'x-forwarded-uri': '/x',
      authorization: `Bearer ${token}`,
      'x-client-cert': encodeURIComponent(d.pki.certs.clients.client1.cert),
      ...(method !== undefined && { 'x-forwarded-method': method }),
    });
    expect((await ask('/traefik', traefik())).status).toBe(400);
    for (const method of ['', 'G ET', 'GET,POST']) expect((await ask('/traefik', traefik(method))).status, JSON.stringify(method)).toBe(400);
    expect((await ask('/traefik', traefik('GET'))).status).toBe(200);
  });
});
