/**
 * The nginx front-proxy fixture on its own: a real nginx terminating mTLS in front of a tiny HTTPS
 * echo server, with curl as the client. Skipped (visibly) where nginx is not installed; run
 * `scripts/install-test-deps.sh` (as root, on Debian) to install it.
 */
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { thumbprintS256 } from '../../src/tls/certificates.ts';
import { parseForwardedCertificate } from '../../src/tls/forwarded-certificate.ts';
import { findNginx, startNginx, type Nginx } from '../fixtures/nginx.ts';
import { createPki, curl, type Pki } from '../fixtures/stack.ts';

const HEADER = 'x-client-cert';
const nginxMissing = findNginx() === undefined;
const skipNote = nginxMissing ? ' [SKIPPED: no nginx binary; run scripts/install-test-deps.sh as root]' : '';
if (nginxMissing) console.warn(`nginx-fixture.test.ts:${skipNote}`);

interface Seen {
  headers: Record<string, string[]>;
}

describe('nginx fixture: mTLS at nginx, $ssl_client_escaped_cert to an HTTPS upstream', () => {
  let pki: Pki;
  let echo: Server;
  const seen: Seen[] = [];
  let proxy: Nginx;
  let verifying: Nginx;

  beforeAll(async () => {
    if (nginxMissing) return;
    pki = await createPki();
    echo = createServer({ key: pki.certs.server.key, cert: pki.certs.server.cert }, (req, res) => {
      seen.push({ headers: req.headersDistinct as Record<string, string[]> });
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ ok: true }));
    });
    echo.listen(0, '127.0.0.1');
    await once(echo, 'listening');
    const upstreamPort = (echo.address() as AddressInfo).port;
    const base = { serverCert: pki.files.server.cert, serverKey: pki.files.server.key, upstreamPort, headerName: HEADER };
    proxy = (await startNginx(base))!;
    verifying = (await startNginx({ ...base, clientCa: pki.files.ca }))!;
  });

  afterAll(async () => {
    await proxy?.stop();
    await verifying?.stop();
    echo?.close();
    await pki?.cleanup();
  });

  async function through(port: number, options: Parameters<typeof curl>[2]): Promise<{ status: number; headers: Record<string, string[]> | undefined }> {
    const before = seen.length;
    const response = await curl(pki, `https://127.0.0.1:${port}/echo`, options);
    return { status: response.status, headers: seen.length > before ? seen[seen.length - 1]!.headers : undefined };
  }

  it.skipIf(nginxMissing)(`passes the client certificate and Authorization; pem-urlencoded decodes it to the thumbprint${skipNote}`, async () => {
    const { status, headers } = await through(proxy.port, { cert: pki.files.client1, token: 'abc.def' });
    expect(status).toBe(200);
    expect(headers?.authorization).toEqual(['Bearer abc.def']);
    const lines = headers?.[HEADER];
    expect(lines).toHaveLength(1);
    expect(lines![0]).toMatch(/^-----BEGIN%20CERTIFICATE-----%0A/);
    const parsed = parseForwardedCertificate('pem-urlencoded', lines);
    expect(parsed?.thumbprint).toBe(thumbprintS256(new X509Certificate(pki.certs.clients.client1.cert).raw));
  });

  it.skipIf(nginxMissing)(`accepts a self-signed client certificate with optional_no_ca${skipNote}`, async () => {
    const { status, headers } = await through(proxy.port, { cert: pki.files.selfSigned });
    expect(status).toBe(200);
    const parsed = parseForwardedCertificate('pem-urlencoded', headers?.[HEADER]);
    expect(parsed?.thumbprint).toBe(thumbprintS256(new X509Certificate(pki.selfSigned.cert).raw));
  });

  it.skipIf(nginxMissing)(`replaces a client-sent copy of the header, and sends none without a certificate${skipNote}`, async () => {
    const spoof = encodeURIComponent(pki.certs.clients.client2.cert);
    const withCert = await through(proxy.port, { cert: pki.files.client1, headers: [`${HEADER}: ${spoof}`] });
    expect(withCert.headers?.[HEADER]).toHaveLength(1);
    expect(parseForwardedCertificate('pem-urlencoded', withCert.headers?.[HEADER])?.thumbprint).toBe(
      thumbprintS256(new X509Certificate(pki.certs.clients.client1.cert).raw),
    );
    const without = await through(proxy.port, { headers: [`${HEADER}: ${spoof}`], token: 'abc' });
    expect(without.status).toBe(200);
    expect(without.headers).toBeDefined();
    expect(without.headers?.[HEADER]).toBeUndefined();
  });

  it.skipIf(nginxMissing)(`with clientCa, nginx passes CA-issued certificates and refuses others itself${skipNote}`, async () => {
    const good = await through(verifying.port, { cert: pki.files.client2 });
    expect(good.status).toBe(200);
    expect(parseForwardedCertificate('pem-urlencoded', good.headers?.[HEADER])?.thumbprint).toBe(
      thumbprintS256(new X509Certificate(pki.certs.clients.client2.cert).raw),
    );
    const bad = await through(verifying.port, { cert: pki.files.selfSigned });
    expect(bad.status).toBe(400);
    expect(bad.headers).toBeUndefined();
  });
});
