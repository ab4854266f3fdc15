import { X509Certificate } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { chainsTo, createCertificateSource } from '../../src/pipeline/client-cert.ts';
import { createCertificateAuthority, issueClientCertificate } from '../../src/tls/dev-certs.ts';

const first = createCertificateAuthority('first CA');
const second = createCertificateAuthority('second CA');
const client = issueClientCertificate(second, 'client-of-second');
const der = new X509Certificate(client.cert).raw.toString('base64');

function request(source: ReturnType<typeof createCertificateSource>) {
  return source.certificateOf({ socket: undefined, peerAddress: '10.0.0.5', headerLines: (name) => (name === 'x-forwarded-tls-client-cert' ? [der] : undefined) });
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

  it('a reload that drops or changes a trusted proxy applies from the next call on, for the same peer', () => {
    const source = createCertificateSource({ trustedProxies: [proxy], clientCa: undefined });
    expect(source.isTrustedProxy('10.0.0.5')).toBe(true);
    expect(source.certificateHeaderOf('10.0.0.5')).toBe('x-forwarded-tls-client-cert');
    expect(request(source)?.thumbprint).toBeTypeOf('string');
    source.updateTrustedProxies([{ ...proxy, cidrs: ['192.0.2.0/24'] }]);
    expect(source.isTrustedProxy('10.0.0.5')).toBe(false);
    expect(source.certificateHeaderOf('10.0.0.5')).toBeUndefined();
    expect(request(source)).toBeUndefined();
    source.updateTrustedProxies([{ ...proxy, header: 'x-other' }]);
    expect(source.certificateHeaderOf('10.0.0.5')).toBe('x-other');
    expect(source.isTrustedProxy('10.0.0.6')).toBe(true);
    expect(source.isTrustedProxy('11.0.0.5')).toBe(false);
    expect(source.isTrustedProxy('10.0.0.5')).toBe(true);
  });

  it('a header value parsed under one format is never taken for another format', () => {
    const source = createCertificateSource({ trustedProxies: [proxy], clientCa: undefined });
    expect(request(source)?.thumbprint).toBeTypeOf('string');
    // The same value read as a SHA-256 hex thumbprint is malformed, cached parse or not.
    source.updateTrustedProxies([{ ...proxy, format: 'sha256-hex' }]);
    expect(() => request(source)).toThrow(/forwarded_certificate_malformed|sha256|hex/i);
  });

  it('header values that end alike are each read as themselves (the cache is keyed by the end of a value)', () => {
    const xfcc = { cidrs: ['10.0.0.0/8'], header: 'x-forwarded-client-cert', format: 'xfcc' as const, xfccElement: 'first' as const };
    const source = createCertificateSource({ trustedProxies: [xfcc], clientCa: undefined });
    const [a, b, c] = ['a', 'b', 'c'].map((digit) => digit.repeat(64));
    const thumbprintOf = (value: string) => source.certificateOf({ socket: undefined, peerAddress: '10.0.0.5', headerLines: (name) => (name === 'x-forwarded-client-cert' ? [value] : undefined) })?.sha256Hex;
    expect(thumbprintOf(`Hash=${a},Hash=${b}`)).toBe(a);
    expect(thumbprintOf(`Hash=${c},Hash=${b}`)).toBe(c);
    expect(thumbprintOf(`Hash=${a},Hash=${b}`)).toBe(a);
    expect(thumbprintOf(`Hash=${b}`)).toBe(b);
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
