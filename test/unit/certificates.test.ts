import { execFileSync } from 'node:child_process';
import { createHash, generateKeyPairSync, X509Certificate } from 'node:crypto';
import fc from 'fast-check';
import forge from 'node-forge';
import { beforeAll, describe, expect, it } from 'vitest';
import { pemCertificateBlocks, PemSyntaxError, sha256, splitPemCertificates, subjectAltNames, subjectRfc4514, thumbprintS256, validityProblem } from '../../src/tls/certificates.ts';
import { createCertificateAuthority, generateDevCertificates, issueClientCertificate, issueServerCertificate } from '../../src/tls/dev-certs.ts';
import type { DevCertificates, PemPair } from '../../src/tls/dev-certs.ts';

function hasTools(): boolean {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    execFileSync('basenc', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** `openssl x509 -outform der | openssl dgst -sha256 -binary | basenc --base64url`, without the padding. */
function opensslThumbprint(pem: string): string {
  const der = execFileSync('openssl', ['x509', '-outform', 'der'], { input: pem });
  const digest = execFileSync('openssl', ['dgst', '-sha256', '-binary'], { input: der });
  return execFileSync('basenc', ['--base64url'], { input: digest }).toString('ascii').trim().replace(/=+$/, '');
}

/** A self-signed certificate with a caller-chosen subject (dev-certs only makes CN-only subjects). */
function certificateWithSubject(attributes: { shortName: string; value: string }[]): string {
  const { privateKey: keyPem } = generateKeyPairSync('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  const key = forge.pki.privateKeyFromPem(keyPem);
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.setRsaPublicKey(key.n, key.e);
  cert.serialNumber = '01';
  cert.validity.notBefore = new Date(Date.now() - 60_000);
  cert.validity.notAfter = new Date(Date.now() + 86_400_000);
  cert.setSubject(attributes);
  cert.setIssuer(attributes);
  cert.sign(key, forge.md.sha256.create());
  return forge.pki.certificateToPem(cert);
}

describe('certificates', () => {
  let dev: DevCertificates;
  let client1: X509Certificate;
  let client2: X509Certificate;

  beforeAll(() => {
    dev = generateDevCertificates();
    client1 = new X509Certificate(dev.clients.client1.cert);
    client2 = new X509Certificate(dev.clients.client2.cert);
  });

  describe('thumbprintS256', () => {
    it('is base64url(SHA-256(DER)), 43 characters, no padding', () => {
      const thumbprint = thumbprintS256(client1.raw);
      expect(thumbprint).toBe(createHash('sha256').update(client1.raw).digest('base64url'));
      expect(thumbprint).toMatch(/^[A-Za-z0-9_-]{43}$/);
      expect(Buffer.from(thumbprint, 'base64url').equals(createHash('sha256').update(client1.raw).digest())).toBe(true);
    });

    it('hashes the DER bytes, not the PEM text', () => {
      expect(thumbprintS256(client1.raw)).not.toBe(createHash('sha256').update(dev.clients.client1.cert).digest('base64url'));
    });

    it('differs between certificates', () => {
      expect(thumbprintS256(client1.raw)).not.toBe(thumbprintS256(client2.raw));
    });

    it('matches a fixed vector', () => {
      // SHA-256("abc"), FIPS 180-2 appendix B.1.
      expect(thumbprintS256(Buffer.from('abc'))).toBe('ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0');
      expect(sha256(Buffer.from('abc')).toString('hex')).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
    });

    it.skipIf(!hasTools())('agrees with openssl for generated client certificates', () => {
      for (const pair of [dev.clients.client1, dev.clients.client2, dev.server]) {
        expect(thumbprintS256(new X509Certificate(pair.cert).raw)).toBe(opensslThumbprint(pair.cert));
      }
    });
  });

  describe('subjectAltNames', () => {
    it('reads URI and DNS names', () => {
      expect(subjectAltNames(client1)).toEqual({ dns: ['client1.cnfguard.dev'], uri: ['spiffe://cnfguard.dev/client1'] });
    });

    it('is empty for a certificate without SANs', () => {
      expect(subjectAltNames(client2)).toEqual({ dns: [], uri: [] });
    });

    it('ignores IP addresses', () => {
      expect(subjectAltNames(new X509Certificate(dev.server.cert))).toEqual({ dns: ['localhost'], uri: [] });
    });

    it('keeps several names in order', () => {
      const cert = new X509Certificate(issueClientCertificate(dev.ca, 'multi', { uri: 'spiffe://example/a', dns: ['a.example', 'b.example'] }).cert);
      expect(subjectAltNames(cert)).toEqual({ dns: ['a.example', 'b.example'], uri: ['spiffe://example/a'] });
    });

    it('reads a value containing separators as one value, never as extra names', () => {
      const ca: PemPair = createCertificateAuthority('sep CA');
      const cert = new X509Certificate(
        issueClientCertificate(ca, 'sep', { uri: 'spiffe://example/a, DNS:evil.example', dns: ['x.example, URI:spiffe://evil'] }).cert,
      );
      expect(subjectAltNames(cert)).toEqual({ dns: ['x.example, URI:spiffe://evil'], uri: ['spiffe://example/a, DNS:evil.example'] });
    });
  });

  describe('subjectRfc4514', () => {
    it('gives a CN-only subject', () => {
      expect(subjectRfc4514(client1)).toBe('CN=client1');
    });

    it('puts the most specific RDN first, comma-separated', () => {
      const pem = certificateWithSubject([
        { shortName: 'C', value: 'US' },
        { shortName: 'O', value: 'Acme' },
        { shortName: 'OU', value: 'Payments' },
        { shortName: 'CN', value: 'svc' },
      ]);
      expect(subjectRfc4514(new X509Certificate(pem))).toBe('CN=svc,OU=Payments,O=Acme,C=US');
    });

    it('escapes a comma inside a value (RFC 4514 §2.4)', () => {
      const pem = certificateWithSubject([
        { shortName: 'O', value: 'Acme, Inc.' },
        { shortName: 'CN', value: 'svc' },
      ]);
      expect(subjectRfc4514(new X509Certificate(pem))).toBe('CN=svc,O=Acme\\, Inc.');
    });
  });

  describe('splitPemCertificates', () => {
    it('returns the certificates of a bundle in file order, ignoring other text and keys', () => {
      const bundle = `# chain\n${dev.clients.client1.cert}\nsome text\n${dev.ca.cert}${dev.ca.key}`;
      const blocks = splitPemCertificates(bundle);
      expect(blocks).toHaveLength(2);
      expect(new X509Certificate(blocks[0] ?? '').fingerprint256).toBe(client1.fingerprint256);
      expect(new X509Certificate(blocks[1] ?? '').fingerprint256).toBe(new X509Certificate(dev.ca.cert).fingerprint256);
      for (const block of blocks) {
        expect(block).toMatch(/^-----BEGIN CERTIFICATE-----/);
        expect(block).toMatch(/-----END CERTIFICATE-----$/);
      }
    });

    it('handles CRLF line endings', () => {
      const blocks = splitPemCertificates(dev.ca.cert.replace(/\n/g, '\r\n'));
      expect(blocks).toHaveLength(1);
      expect(new X509Certificate(blocks[0] ?? '').fingerprint256).toBe(new X509Certificate(dev.ca.cert).fingerprint256);
    });

    it.each([
      ['empty text', ''],
      ['a private key only', '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n'],
      ['a BEGIN line with no END', '-----BEGIN CERTIFICATE-----\nAAAA\n'],
      ['plain text', 'not a pem'],
    ])('finds nothing in %s', (_name, text) => {
      expect(splitPemCertificates(text)).toEqual([]);
    });

    it('finds what a plain regular expression over the armour lines finds, for text made of PEM pieces', () => {
      // The oracle is the bundle reader this one replaced: non-empty blocks, first END after each BEGIN.
      const oracle = (text: string) => text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
      const piece = fc.constantFrom('-----BEGIN CERTIFICATE-----', '-----END CERTIFICATE-----', '\n', ' ', 'MIIB', 'AA==', '# note', '-----BEGIN PRIVATE KEY-----', '-');
      const text = fc.array(piece, { maxLength: 12 }).map((pieces) => pieces.join(''));
      fc.assert(
        fc.property(text, (t) => {
          // A block with nothing between its lines is the one spelling the two readers split differently (neither is a certificate).
          fc.pre(!t.includes('-----BEGIN CERTIFICATE----------END CERTIFICATE-----'));
          expect(splitPemCertificates(t)).toEqual(oracle(t));
        }),
        { numRuns: 500 },
      );
    });
  });

  describe('pemCertificateBlocks, strict (forwarded headers)', () => {
    it('reads the blocks and their bodies when only whitespace surrounds them', () => {
      const text = ` \r\n${dev.clients.client1.cert}\n\t${dev.ca.cert}\n`;
      const blocks = pemCertificateBlocks(text, 'strict');
      expect(blocks.map((block) => block.text)).toEqual(splitPemCertificates(text));
      expect(Buffer.from(blocks[0]!.body.replace(/\s+/g, ''), 'base64')).toEqual(client1.raw);
    });

    it.each([
      ['text before a block', (ca: PemPair) => `x${ca.cert}`, 'text_outside_blocks'],
      ['text after a block', (ca: PemPair) => `${ca.cert}x`, 'text_outside_blocks'],
      ['a key after a block', (ca: PemPair) => `${ca.cert}${ca.key}`, 'text_outside_blocks'],
      ['a BEGIN line with no END', () => '-----BEGIN CERTIFICATE-----\nAAAA\n', 'unterminated_block'],
    ])('refuses %s, which lenient reading skips', (_name, textOf, problem) => {
      const text = textOf(dev.ca);
      expect(() => pemCertificateBlocks(text, 'strict')).toThrow(PemSyntaxError);
      try {
        pemCertificateBlocks(text, 'strict');
      } catch (err) {
        expect((err as PemSyntaxError).problem).toBe(problem);
      }
      expect(() => pemCertificateBlocks(text)).not.toThrow();
    });

    it('finds no block, without error, in empty or whitespace-only text', () => {
      expect(pemCertificateBlocks(' \n', 'strict')).toEqual([]);
    });
  });
});

describe('validityProblem', () => {
  it('is undefined within notBefore..notAfter (both included), names the date passed or not reached outside', () => {
    const ca = createCertificateAuthority('validity CA');
    const pair = issueServerCertificate(ca, { dns: ['localhost'], ips: [] }, { notBefore: new Date('2030-01-01T00:00:00Z'), notAfter: new Date('2031-01-01T00:00:00Z') });
    const cert = new X509Certificate(pair.cert);
    const at = (iso: string) => validityProblem(cert, Date.parse(iso));
    expect(at('2030-01-01T00:00:00Z')).toBeUndefined();
    expect(at('2031-01-01T00:00:00Z')).toBeUndefined();
    const period = { notBefore: '2030-01-01T00:00:00Z', notAfter: '2031-01-01T00:00:00Z' };
    expect(at('2031-01-01T00:00:01Z')).toEqual({ reason: 'expired', ...period, message: 'expired on 2031-01-01T00:00:00Z (notAfter)' });
    expect(at('2029-12-31T23:59:59Z')).toEqual({ reason: 'not_yet_valid', ...period, message: 'is not valid before 2030-01-01T00:00:00Z (notBefore)' });
  });
});
