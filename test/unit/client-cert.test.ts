import { X509Certificate } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { chainsTo, createCertificateSource } from '../../src/pipeline/client-cert.ts';
import { createCertificateAuthority, issueClientCertificate } from '../../src/tls/dev-certs.ts';

const first = createCertificateAuthority('first CA');
const second = createCertificateAuthority('second CA');
const client = issueClientCertificate(second, 'client-of-second');
const der = new X509Certificate(client.cert).raw.toString('base64');

function request(source: ReturnType<typeof createCertificateSource>) {
  const headers: Record<string, string> = { 'x-forwarded-tls-client-cert': der };
  return source.certificateOf({ socket: undefined, peerAddress: '10.0.0.5', headers, headersDistinct: { 'x-forwarded-tls-client-cert': [der] } });
}

describe('forwarded certificates and tls.clientCa', () => {
  const proxy = { cidrs: ['10.0.0.0/8'], header: 'x-forwarded-tls-client-cert', format: 'base64-der' as const, xfccElement: 'last' as const };

  it('a certificate from another CA is untrusted until a reload brings that CA', () => {
    const source = createCertificateSource({ trustedProxies: [proxy], clientCa: first.cert });
    expect(request(source)?.trusted).toBe(false);
    source.updateClientCa(`${first.cert}${second.cert}`);
    expect(request(source)?.trusted).toBe(true);
    source.updateClientCa(first.cert);
    expect(request(source)?.trusted).toBe(false);
  });

  it('without tls.clientCa any forwarded certificate is accepted, and a reload does not start checking', () => {
    const source = createCertificateSource({ trustedProxies: [proxy], clientCa: undefined });
    source.updateClientCa(first.cert);
    expect(request(source)?.trusted).toBe(true);
  });

  it('chainsTo checks the issuer signature and the validity period', () => {
    const leaf = new X509Certificate(client.cert);
    const authorities = [new X509Certificate(second.cert)];
    expect(chainsTo(leaf, authorities, Date.now())).toBe(true);
    expect(chainsTo(leaf, [new X509Certificate(first.cert)], Date.now())).toBe(false);
    expect(chainsTo(leaf, authorities, Date.parse(leaf.validTo) + 1000)).toBe(false);
    expect(chainsTo(leaf, authorities, Date.parse(leaf.validFrom) - 1000)).toBe(false);
  });
});
