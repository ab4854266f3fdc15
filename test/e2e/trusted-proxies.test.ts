/**
 * Certificates from a trusted front proxy: a real nginx terminating mTLS in front of cnfguard,
 * every header format from its own trusted loopback address, and the same headers from an
 * untrusted peer (127.0.0.2), where they must be ignored and stripped.
 */
import { X509Certificate, createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { splitPemCertificates, thumbprintS256 } from '../../src/tls/certificates.ts';
import type { PemPair } from '../../src/tls/dev-certs.ts';
import { findNginx, startNginx, type Nginx } from '../fixtures/nginx.ts';
import { baseConfig, curl, startDeployment, startGuard, type Deployment, type Guard } from '../fixtures/stack.ts';

const der = (pair: PemPair) => new X509Certificate(splitPemCertificates(pair.cert)[0] as string).raw;

/** How each front proxy would put a certificate in its header. */
const ENCODERS = {
  xfcc: (p: PemPair) => `By=spiffe://cluster.local/ns/edge/sa/envoy;Hash=${createHash('sha256').update(der(p)).digest('hex')};Cert="${encodeURIComponent(p.cert)}";Subject="CN=x"`,
  rfc9440: (p: PemPair) => `:${der(p).toString('base64')}:`,
  'base64-der': (p: PemPair) => der(p).toString('base64'),
  'sha256-hex': (p: PemPair) => createHash('sha256').update(der(p)).digest('hex'),
  'pem-urlencoded': (p: PemPair) => encodeURIComponent(p.cert),
} as const;
type Format = keyof typeof ENCODERS;

const PROXIES: { format: Format; address: string; header: string }[] = [
  { format: 'pem-urlencoded', address: '127.0.0.1', header: 'x-client-cert' }, // nginx
  { format: 'xfcc', address: '127.0.0.11', header: 'x-forwarded-client-cert' },
  { format: 'rfc9440', address: '127.0.0.12', header: 'client-cert' },
  { format: 'base64-der', address: '127.0.0.13', header: 'x-forwarded-tls-client-cert' },
  { format: 'sha256-hex', address: '127.0.0.14', header: 'cloudfront-viewer-cert-sha256' },
];
const UNTRUSTED = '127.0.0.2';

let d: Deployment;
let guard: Guard;
let pkiGuard: Guard;
let nginx: Nginx | undefined;
let token1: string;

beforeAll(async () => {
  d = await startDeployment();
  const trustedProxies = PROXIES.map((p) => ({ cidrs: [`${p.address}/32`], header: p.header, format: p.format }));
  guard = await startGuard(d.pki, baseConfig(d.pki, d.as, d.upstream, { trustedProxies, routes: [{ pathPrefix: '/open', binding: 'off' }] }));
  pkiGuard = await startGuard(
    d.pki,
    baseConfig(d.pki, d.as, d.upstream, { trustedProxies, tls: { cert: d.pki.files.server.cert, key: d.pki.files.server.key, clientCa: d.pki.files.ca } }),
  );
  nginx = await startNginx({ serverCert: d.pki.files.server.cert, serverKey: d.pki.files.server.key, upstreamPort: guard.started.port, headerName: 'x-client-cert' });
  token1 = await d.tokenFor('client1');
});
afterAll(async () => {
  await nginx?.stop();
  await guard?.stop();
  await pkiGuard?.stop();
  await d?.stop();
});

const from = (address: string) => ['--interface', address];

describe.skipIf(findNginx() === undefined)('behind a real nginx terminating mTLS ($ssl_client_escaped_cert)', () => {
  const viaNginx = (path: string) => `https://127.0.0.1:${nginx?.port}${path}`;

  it('a bound token works with the right certificate; the identity is the client\'s, not nginx\'s', async () => {
    const r = await curl(d.pki, viaNginx('/x'), { cert: d.pki.files.client1, token: token1 });
    expect(r.status).toBe(200);
    const headers = r.json<{ headers: Record<string, string> }>().headers;
    expect(headers['x-auth-cert-thumbprint']).toBe(thumbprintS256(der(d.pki.certs.clients.client1)));
    expect(headers['x-client-cert']).toBeUndefined();
  });

  it('fails with another certificate, and with none', async () => {
    const other = await curl(d.pki, viaNginx('/x'), { cert: d.pki.files.client2, token: token1 });
    expect(other.status).toBe(401);
    expect(other.json()).toMatchObject({ error_description: 'the access token is bound to a different client certificate' });
    const none = await curl(d.pki, viaNginx('/x'), { token: token1 });
    expect(none.json()).toMatchObject({ error_description: 'the access token is bound to a client certificate, but none was presented' });
  });
});

if (findNginx() === undefined) {
  it.skip('nginx end-to-end tests [SKIPPED: no nginx binary; run scripts/install-test-deps.sh as root]', () => {});
}

describe('each header format from its trusted hop', () => {
  // HTTP/2 reads the header from the stream's field lines (no headersDistinct there): both are run.
  const cases = PROXIES.filter((p) => p.address !== '127.0.0.1').flatMap((p) => (['1.1', '2'] as const).map((http) => ({ ...p, http })));
  it.each(cases)('$format over HTTP/$http: the right certificate passes, another fails', async ({ format, address, header, http }) => {
    const ok = await curl(d.pki, `${guard.started.url}/x`, { http, token: token1, headers: [`${header}: ${ENCODERS[format](d.pki.certs.clients.client1)}`], extra: from(address) });
    expect(ok.status).toBe(200);
    expect(ok.json<{ headers: Record<string, string> }>().headers['x-auth-cert-thumbprint']).toBe(thumbprintS256(der(d.pki.certs.clients.client1)));
    const stolen = await curl(d.pki, `${guard.started.url}/x`, { http, token: token1, headers: [`${header}: ${ENCODERS[format](d.pki.certs.clients.client2)}`], extra: from(address) });
    expect(stolen.status).toBe(401);
  });

  it('the trusted hop\'s own TLS certificate is not used for binding', async () => {
    const r = await curl(d.pki, `${guard.started.url}/x`, {
      cert: d.pki.files.client1,
      token: token1,
      headers: [`client-cert: ${ENCODERS.rfc9440(d.pki.certs.clients.client2)}`],
      extra: from('127.0.0.12'),
    });
    expect(r.status).toBe(401);
  });

  it('a malformed header from a trusted hop: 400 invalid_request, never a crash', async () => {
    for (const value of [':not base64!:', 'Zm9v', ':' + 'A'.repeat(10) + ':']) {
      const r = await curl(d.pki, `${guard.started.url}/x`, { token: token1, headers: [`client-cert: ${value}`], extra: from('127.0.0.12') });
      expect(r.status).toBe(400);
      expect(r.json()).toEqual({ error: 'invalid_request', error_description: 'the forwarded client certificate header is malformed' });
    }
    const line = guard.logs.entries().find((e) => e.reason === 'forwarded_certificate_malformed');
    expect(line?.detail).toMatch(/^client-cert: /);
  });
});

describe('spoofing from an untrusted peer', () => {
  const spoofed = () => PROXIES.map((p) => `${p.header}: ${ENCODERS[p.format](d.pki.certs.clients.client1)}`);

  it('every certificate header is ignored: the request is judged on the connection\'s own certificate', async () => {
    const withHeaders = (cert?: 'client1' | 'client2') =>
      curl(d.pki, `${guard.started.url}/x`, { token: token1, headers: spoofed(), extra: from(UNTRUSTED), ...(cert && { cert: d.pki.files[cert] }) });
    expect((await withHeaders('client2')).status).toBe(401);
    expect((await withHeaders()).json()).toMatchObject({ error_description: 'the access token is bound to a client certificate, but none was presented' });
    expect((await withHeaders('client1')).status).toBe(200);
  });

  it('and stripped before the upstream sees them, even under binding: off', async () => {
    const r = await curl(d.pki, `${guard.started.url}/open`, { cert: d.pki.files.client2, token: token1, headers: spoofed(), extra: from(UNTRUSTED) });
    expect(r.status).toBe(200);
    const headers = r.json<{ headers: Record<string, string> }>().headers;
    for (const name of ['x-client-cert', 'client-cert', 'x-forwarded-tls-client-cert', 'cloudfront-viewer-cert-sha256']) expect(headers[name]).toBeUndefined();
    expect(headers['x-forwarded-client-cert']).toContain(`Hash=${createHash('sha256').update(der(d.pki.certs.clients.client2)).digest('hex')};`);
  });
});

describe('with tls.clientCa', () => {
  it('a forwarded certificate must chain to it; a forwarded thumbprint alone is taken as the proxy verified it', async () => {
    const token = await d.tokenFor('selfSigned');
    const pem = await curl(d.pki, `${pkiGuard.started.url}/x`, { token, headers: [`x-client-cert: ${ENCODERS['pem-urlencoded'](d.pki.selfSigned)}`], extra: from('127.0.0.1') });
    expect(pem.status).toBe(401);
    expect(pem.json()).toMatchObject({ error_description: 'the client certificate is not trusted' });
    const ok = await curl(d.pki, `${pkiGuard.started.url}/x`, { token: token1, headers: [`x-client-cert: ${ENCODERS['pem-urlencoded'](d.pki.certs.clients.client1)}`], extra: from('127.0.0.1') });
    expect(ok.status).toBe(200);
    const hashOnly = await curl(d.pki, `${pkiGuard.started.url}/x`, { token, headers: [`cloudfront-viewer-cert-sha256: ${ENCODERS['sha256-hex'](d.pki.selfSigned)}`], extra: from('127.0.0.14') });
    expect(hashOnly.status).toBe(200);
  });
});
