import { X509Certificate } from 'node:crypto';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { thumbprintS256 } from '../../src/tls/certificates.ts';
import { createSelfSignedClientCertificate, generateDevCertificates } from '../../src/tls/dev-certs.ts';
import {
  FORWARDED_CERTIFICATE_FORMATS,
  ForwardedCertificateError,
  MAX_FORWARDED_HEADER_LENGTH,
  parseForwardedCertificate,
  type ForwardedCertificate,
  type ForwardedCertificateFormat,
} from '../../src/tls/forwarded-certificate.ts';
import { parseCidrList, peerInList, UNIX_SOCKET_PEER } from '../../src/tls/peers.ts';
import { loadCertificate, type TestCertificate } from '../fixtures/certificate.ts';


const REASONS = ['too_large', 'ambiguous', 'malformed_header', 'not_a_certificate', 'hash_mismatch'];

let certs: TestCertificate[] = [];
/** client1, client2, server, CA: a CA-issued chain to put after a leaf. */
let client1: TestCertificate;
let client2: TestCertificate;
let ca: TestCertificate;

const load = loadCertificate;

beforeAll(() => {
  const dev = generateDevCertificates();
  const selfSigned = createSelfSignedClientCertificate('self-signed "client", with; separators=');
  certs = [dev.clients.client1.cert, dev.clients.client2.cert, dev.server.cert, dev.ca.cert, selfSigned.cert].map(load);
  [client1, client2, , ca] = certs as [TestCertificate, TestCertificate, TestCertificate, TestCertificate];
});

// --- encoders: what each front proxy sends ----------------------------------------------------

/** PEM with `\n` line ends (OpenSSL, as nginx/Envoy/ALB see it); forge writes `\r\n`. */
function lfPem(cert: TestCertificate): string {
  return cert.pem.replace(/\r\n/g, '\n');
}

/** nginx `$ssl_client_escaped_cert` / Envoy `Cert=`: every reserved character percent-encoded. */
function escapedPem(cert: TestCertificate): string {
  return encodeURIComponent(lfPem(cert));
}

/** AWS ALB `X-Amzn-Mtls-Clientcert-Leaf`: URL-encoded PEM that leaves `+`, `=` and `/` raw. */
function albEscape(pem: string): string {
  return encodeURIComponent(pem).replace(/%2B/g, '+').replace(/%3D/g, '=').replace(/%2F/g, '/');
}

function albPem(cert: TestCertificate): string {
  return albEscape(lfPem(cert));
}

function rfc9440(cert: TestCertificate): string {
  return `:${cert.der.toString('base64')}:`;
}

/** Traefik `X-Forwarded-Tls-Client-Cert`: base64 DER list; v1/v2 `url.QueryEscape` it. */
function traefik(chain: TestCertificate[], escaped: boolean): string {
  const value = chain.map((c) => c.der.toString('base64')).join(',');
  return escaped ? encodeURIComponent(value) : value;
}

/** An Envoy XFCC element the way Envoy writes one (By, Hash, Cert, Subject, URI, DNS). */
function xfccElement(cert: TestCertificate, parts: { by?: string; hash?: boolean; cert?: boolean; chain?: TestCertificate[] } = {}): string {
  const fields: string[] = [];
  fields.push(`By=${parts.by ?? 'spiffe://cluster.local/ns/edge/sa/envoy'}`);
  if (parts.hash ?? true) fields.push(`Hash=${cert.hex}`);
  if (parts.cert ?? true) fields.push(`Cert="${escapedPem(cert)}"`);
  if (parts.chain) fields.push(`Chain="${parts.chain.map(escapedPem).join('')}"`);
  fields.push('Subject="CN=client,OU=say \\"hi\\",O=Acme\\, Inc.;x=y"', 'URI=spiffe://cnfguard.dev/client', 'DNS=a.example', 'DNS=b.example');
  return fields.join(';');
}

// --- checks ----------------------------------------------------------------------------------

function reasonOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ForwardedCertificateError);
    return (err as ForwardedCertificateError).reason;
  }
  throw new Error('expected a ForwardedCertificateError');
}

function expectCertificate(result: ForwardedCertificate | undefined, cert: TestCertificate, withDer = true): void {
  expect(result).toBeDefined();
  expect(result!.thumbprint).toBe(cert.thumbprint);
  expect(result!.sha256Hex).toBe(cert.hex);
  if (withDer) expect(result!.der?.equals(cert.der)).toBe(true);
  else expect(result!.der).toBeUndefined();
}

/** The contract for any input: a self-consistent result, undefined, or a typed error. */
function parsesOrRefuses(format: ForwardedCertificateFormat, value: string | string[] | undefined, options?: { xfccElement?: 'last' | 'first' }): boolean {
  let result: ForwardedCertificate | undefined;
  try {
    result = parseForwardedCertificate(format, value, options);
  } catch (err) {
    if (!(err instanceof ForwardedCertificateError) || !REASONS.includes(err.reason)) throw err;
    return true;
  }
  if (result === undefined) return true;
  if (Buffer.from(result.sha256Hex, 'hex').toString('base64url') !== result.thumbprint) return false;
  if (!/^[0-9a-f]{64}$/.test(result.sha256Hex)) return false;
  if (result.der !== undefined && thumbprintS256(result.der) !== result.thumbprint) return false;
  return true;
}

// --- examples per format ----------------------------------------------------------------------

describe('parseForwardedCertificate: common', () => {
  it.each(FORWARDED_CERTIFICATE_FORMATS)('%s: absent, no lines, empty or whitespace-only means no certificate', (format) => {
    for (const value of [undefined, [], '', '  \t', ['']]) expect(parseForwardedCertificate(format, value)).toBeUndefined();
  });

  it.each(FORWARDED_CERTIFICATE_FORMATS)('%s: values over 64 KiB are refused before parsing', (format) => {
    const huge = 'A'.repeat(MAX_FORWARDED_HEADER_LENGTH + 1);
    expect(reasonOf(() => parseForwardedCertificate(format, huge))).toBe('too_large');
  });

  it('xfcc: too many field lines, or lines adding up to over 64 KiB, are refused', () => {
    expect(reasonOf(() => parseForwardedCertificate('xfcc', Array.from({ length: 65 }, () => 'Hash=00')))).toBe('too_large');
    const line = 'x'.repeat(MAX_FORWARDED_HEADER_LENGTH / 2);
    expect(reasonOf(() => parseForwardedCertificate('xfcc', [line, line, line]))).toBe('too_large');
  });

  it.each(['rfc9440', 'pem-urlencoded', 'base64-der', 'sha256-hex'] as const)('%s: two field lines of a singleton are ambiguous', (format) => {
    const one = { rfc9440: rfc9440, 'pem-urlencoded': escapedPem, 'base64-der': (c: TestCertificate) => traefik([c], false), 'sha256-hex': (c: TestCertificate) => c.hex }[format];
    expect(reasonOf(() => parseForwardedCertificate(format, [one(client1), one(client2)]))).toBe('ambiguous');
    // One line in an array is just the value.
    expectCertificate(parseForwardedCertificate(format, [one(client1)]), client1, format !== 'sha256-hex');
  });

  it('rejects unknown formats and options as programming errors (TypeError), not header errors', () => {
    expect(() => parseForwardedCertificate('pem' as ForwardedCertificateFormat, 'x')).toThrow(TypeError);
    expect(() => parseForwardedCertificate('xfcc', 'Hash=00', { xfccElement: 'middle' as 'last' })).toThrow(TypeError);
  });

  it('error messages never carry the header value', () => {
    const secretish = `Hash=${'zz'.repeat(32)};Cert="not-a-cert-SECRET"`;
    try {
      parseForwardedCertificate('xfcc', secretish);
      expect.unreachable();
    } catch (err) {
      expect((err as Error).message).not.toContain('SECRET');
      expect((err as Error).message).not.toContain('zz');
    }
  });
});

describe('parseForwardedCertificate: xfcc (Envoy)', () => {
  it('reads the last element of a real two-element header (By, Hash, Cert, quoted Subject, URI, DNS)', () => {
    const header = `${xfccElement(client2, { by: 'spiffe://cluster.local/ns/a/sa/outer' })},${xfccElement(client1)}`;
    expectCertificate(parseForwardedCertificate('xfcc', header), client1);
    expectCertificate(parseForwardedCertificate('xfcc', header, { xfccElement: 'first' }), client2);
  });

  it('handles the Envoy docs shape and OWS after commas (Node joins repeated lines with ", ")', () => {
    const header =
      `By=http://frontend.lyft.com;Hash=${client2.hex};Subject="/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test Client";URI=spiffe://lyft.com/test-team, ` +
      `By=http://backend.lyft.com;Hash=${client1.hex};URI=`;
    expectCertificate(parseForwardedCertificate('xfcc', header), client1, false);
    expectCertificate(parseForwardedCertificate('xfcc', [xfccElement(client2), `By=x;Hash=${client1.hex}`]), client1, false);
  });

  it('Hash alone is enough: hex (either case) becomes the base64url thumbprint, der undefined', () => {
    expectCertificate(parseForwardedCertificate('xfcc', `Hash=${client1.hex.toUpperCase()}`), client1, false);
    expectCertificate(parseForwardedCertificate('xfcc', xfccElement(client1, { cert: false })), client1, false);
  });

  it('Cert alone gives the DER; keys are case-insensitive', () => {
    expectCertificate(parseForwardedCertificate('xfcc', `cert="${escapedPem(client1)}"`), client1);
    expectCertificate(parseForwardedCertificate('xfcc', `HASH=${client1.hex};CERT="${escapedPem(client1)}"`), client1);
    // Envoy quotes Cert, but a bare URL-encoded PEM has no separators either.
    expectCertificate(parseForwardedCertificate('xfcc', `Cert=${escapedPem(client1)}`), client1);
  });

  it('without Cert, the leaf of Chain (which includes it, leaf first) gives the DER', () => {
    const header = xfccElement(client1, { cert: false, chain: [client1, ca] });
    expectCertificate(parseForwardedCertificate('xfcc', header), client1);
  });

  it('Hash and Cert must agree', () => {
    const header = `Hash=${client2.hex};Cert="${escapedPem(client1)}"`;
    expect(reasonOf(() => parseForwardedCertificate('xfcc', header))).toBe('hash_mismatch');
    const chain = xfccElement(client2, { cert: false, chain: [client1, ca] });
    expect(reasonOf(() => parseForwardedCertificate('xfcc', chain))).toBe('hash_mismatch');
  });

  it('a quoted value may contain , ; = and escaped quotes without splitting the element', () => {
    const header = `Subject="a,b;c=d \\"e\\" \\\\";Hash=${client1.hex},Subject="x, y";By=q`;
    // The last element has no Hash or Cert.
    expect(reasonOf(() => parseForwardedCertificate('xfcc', header))).toBe('malformed_header');
    expectCertificate(parseForwardedCertificate('xfcc', header, { xfccElement: 'first' }), client1, false);
  });

  it('a repeated Hash or Cert, or several certificates in Cert, is ambiguous', () => {
    expect(reasonOf(() => parseForwardedCertificate('xfcc', `Hash=${client1.hex};hash=${client2.hex}`))).toBe('ambiguous');
    expect(reasonOf(() => parseForwardedCertificate('xfcc', `Cert="${escapedPem(client1)}";Cert="${escapedPem(client1)}"`))).toBe('ambiguous');
    expect(reasonOf(() => parseForwardedCertificate('xfcc', `Cert="${escapedPem(client1)}${escapedPem(ca)}"`))).toBe('ambiguous');
  });

  it.each([
    ['unterminated quote', `Hash=${'a'.repeat(64)};Subject="CN=x`],
    ['backslash at the end of a quoted value', 'Subject="x\\'],
    ['empty element', `Hash=${'a'.repeat(64)},,Hash=${'b'.repeat(64)}`],
    ['trailing comma', `Hash=${'a'.repeat(64)},`],
    ['trailing semicolon', `Hash=${'a'.repeat(64)};`],
    ['pair without =', `Hash=${'a'.repeat(64)};Subject`],
    ['text after a quoted value', 'Subject="x"y;Hash=00'],
    ['quote inside a bare value', 'By=a"b;Hash=00'],
    ['no Hash, Cert or Chain', 'By=spiffe://x;URI=spiffe://y'],
    ['short Hash', `Hash=${'a'.repeat(63)}`],
    ['non-hex Hash', `Hash=${'g'.repeat(64)}`],
    ['Hash in base64url', `Hash=${'A'.repeat(43)}`],
    ['bad percent-encoding in Cert', 'Cert="%E0%A4%A"'],
    ['Cert without PEM armour', 'Cert="MIIBAA=="'],
  ])('%s is malformed_header', (_name, header) => {
    expect(reasonOf(() => parseForwardedCertificate('xfcc', header))).toBe('malformed_header');
  });

  it('a Cert that is not a certificate is not_a_certificate', () => {
    const pem = `-----BEGIN CERTIFICATE-----\n${Buffer.from('hello world').toString('base64')}\n-----END CERTIFICATE-----\n`;
    expect(reasonOf(() => parseForwardedCertificate('xfcc', `Cert="${encodeURIComponent(pem)}"`))).toBe('not_a_certificate');
  });
});

describe('parseForwardedCertificate: rfc9440 (Client-Cert)', () => {
  it('parses an sf byte sequence of standard base64 DER, with OWS, with or without padding', () => {
    expectCertificate(parseForwardedCertificate('rfc9440', rfc9440(client1)), client1);
    expectCertificate(parseForwardedCertificate('rfc9440', ` ${rfc9440(client1)}\t`), client1);
    expectCertificate(parseForwardedCertificate('rfc9440', rfc9440(client1).replace(/=+:$/, ':')), client1);
  });

  it('the RFC 9440 appendix example shape: HAProxy `:%[ssl_c_der,base64]:`', () => {
    expectCertificate(parseForwardedCertificate('rfc9440', `:${client2.der.toString('base64')}:`), client2);
  });

  it.each([
    ['no colons', () => client1.der.toString('base64')],
    ['one colon', () => `:${client1.der.toString('base64')}`],
    ['base64url alphabet', () => `:${client1.der.toString('base64url')}:`],
    ['parameters', () => `${rfc9440(client1)};v=1`],
    ['whitespace inside', () => `:${client1.der.toString('base64').replace(/(.{64})/g, '$1 ')}:`],
    ['a lone colon', () => ':'],
    ['bad padding', () => ':QUJD=:'],
    ['a lone trailing sextet', () => ':QUJDR:'],
  ])('%s is malformed_header', (_name, value) => {
    expect(reasonOf(() => parseForwardedCertificate('rfc9440', value()))).toBe('malformed_header');
  });

  it('a list (Node joins repeated lines) is ambiguous', () => {
    expect(reasonOf(() => parseForwardedCertificate('rfc9440', `${rfc9440(client1)}, ${rfc9440(client2)}`))).toBe('ambiguous');
  });

  it('bytes that are not exactly one DER certificate are not_a_certificate', () => {
    for (const bytes of [
      Buffer.alloc(0),
      Buffer.from('hello'),
      Buffer.from(client1.pem), // Node would parse PEM text; the header must carry DER
      Buffer.concat([client1.der, Buffer.from([0])]), // trailing bytes after the certificate
      client1.der.subarray(0, client1.der.length - 1),
    ]) {
      expect(reasonOf(() => parseForwardedCertificate('rfc9440', `:${bytes.toString('base64')}:`))).toBe('not_a_certificate');
    }
  });
});

describe('parseForwardedCertificate: pem-urlencoded (nginx, AWS ALB)', () => {
  it('decodes nginx $ssl_client_escaped_cert', () => {
    const value = escapedPem(client1);
    expect(value).toMatch(/^-----BEGIN%20CERTIFICATE-----%0A/);
    expectCertificate(parseForwardedCertificate('pem-urlencoded', value), client1);
  });

  it('keeps a literal + from an ALB leaf header a plus (no form decoding)', () => {
    const value = albPem(client1);
    expect(value).toContain('+');
    expectCertificate(parseForwardedCertificate('pem-urlencoded', value), client1);
    // What form decoding would have made of it is not the same certificate.
    let formDecoded: string | undefined;
    try {
      formDecoded = parseForwardedCertificate('pem-urlencoded', value.replace(/\+/g, ' '))?.thumbprint;
    } catch (err) {
      expect(err).toBeInstanceOf(ForwardedCertificateError);
    }
    expect(formDecoded).not.toBe(client1.thumbprint);
  });

  it('accepts CRLF line ends, folded (space-separated) PEM and an unescaped armour', () => {
    expectCertificate(parseForwardedCertificate('pem-urlencoded', encodeURIComponent(client1.pem)), client1);
    const folded = lfPem(client1).replace(/\n/g, ' ').trim();
    expectCertificate(parseForwardedCertificate('pem-urlencoded', folded), client1);
  });

  it('takes the leaf (first) of an ALB passthrough chain', () => {
    expectCertificate(parseForwardedCertificate('pem-urlencoded', albPem(client1) + albPem(ca)), client1);
  });

  it.each([
    ['no PEM', () => encodeURIComponent(client1.der.toString('base64'))],
    ['bad percent-encoding', () => `${escapedPem(client1)}%G0`],
    ['text before the block', () => `x${escapedPem(client1)}`],
    ['a comma between blocks', () => `${escapedPem(client1)}, ${escapedPem(client2)}`],
    ['unterminated block', () => escapedPem(client1).replace(/-----END.*$/, '')],
    ['non-base64 body', () => escapedPem(client1).replace('MII', 'M*I')],
  ])('%s is malformed_header', (_name, value) => {
    expect(reasonOf(() => parseForwardedCertificate('pem-urlencoded', value()))).toBe('malformed_header');
  });
});

describe('parseForwardedCertificate: base64-der (Traefik)', () => {
  it('v3: unescaped base64 DER list, the first element is the leaf', () => {
    expectCertificate(parseForwardedCertificate('base64-der', traefik([client1], false)), client1);
    expectCertificate(parseForwardedCertificate('base64-der', traefik([client1, ca], false)), client1);
  });

  it('v1/v2: the url.QueryEscape form', () => {
    const value = traefik([client1, ca], true);
    expect(value).toMatch(/%2C/);
    expectCertificate(parseForwardedCertificate('base64-der', value), client1);
  });

  it('strips PEM armour and whitespace when a proxy leaves them in', () => {
    const armoured = [client1, ca].map((c) => lfPem(c).trim()).join(',');
    expectCertificate(parseForwardedCertificate('base64-der', armoured.replace(/\n/g, ' ')), client1);
  });

  it.each([
    ['an empty element', () => `${traefik([client1], false)},`],
    ['a non-base64 element', () => `${traefik([client1], false)},abc*`],
    ['bad percent-encoding', () => `${traefik([client1], true)}%`],
  ])('%s is malformed_header', (_name, value) => {
    expect(reasonOf(() => parseForwardedCertificate('base64-der', value()))).toBe('malformed_header');
  });

  it('a leaf that is not a certificate is not_a_certificate, even if a later element is', () => {
    expect(reasonOf(() => parseForwardedCertificate('base64-der', `AAAA,${traefik([client1], false)}`))).toBe('not_a_certificate');
  });
});

describe('parseForwardedCertificate: sha256-hex', () => {
  it('converts 64 hex digits (either case) to the base64url thumbprint', () => {
    expectCertificate(parseForwardedCertificate('sha256-hex', client1.hex), client1, false);
    expectCertificate(parseForwardedCertificate('sha256-hex', ` ${client1.hex.toUpperCase()} `), client1, false);
  });

  it.each([
    ['63 digits', () => client1.hex.slice(1)],
    ['65 digits', () => `${client1.hex}0`],
    ['colon-separated', () => client1.hex.match(/../g)!.join(':')],
    ['base64url thumbprint', () => client1.thumbprint],
    ['SHA-1', () => 'a'.repeat(40)],
  ])('%s is malformed_header', (_name, value) => {
    expect(reasonOf(() => parseForwardedCertificate('sha256-hex', value()))).toBe('malformed_header');
  });
});

// --- properties -------------------------------------------------------------------------------

describe('parseForwardedCertificate: properties', () => {
  const pick = (): fc.Arbitrary<TestCertificate> => fc.integer({ min: 0, max: 4 }).map((i) => certs[i]!);
  const ows = fc.constantFrom('', ' ', '\t', '  ');

  it('every format round-trips generated certificates to thumbprintS256(x509.raw)', () => {
    const encodings: Record<ForwardedCertificateFormat, fc.Arbitrary<{ cert: TestCertificate; value: string; der: boolean }>> = {
      xfcc: fc
        .record({ cert: pick(), before: fc.array(pick(), { maxLength: 2 }), hash: fc.boolean(), cert_: fc.boolean(), upper: fc.boolean(), sep: fc.constantFrom(',', ', ') })
        .map(({ cert, before, hash, cert_, upper, sep }) => {
          const withHash = hash || !cert_;
          let own = xfccElement(cert, { hash: withHash, cert: cert_ });
          if (upper) own = own.replace(/^By=/, 'BY=').replace(';Hash=', ';HASH=');
          return { cert, value: [...before.map((c) => xfccElement(c)), own].join(sep), der: cert_ };
        }),
      rfc9440: fc.record({ cert: pick(), pad: fc.boolean(), s: ows }).map(({ cert, pad, s }) => ({
        cert,
        value: `${s}${pad ? rfc9440(cert) : rfc9440(cert).replace(/=+:$/, ':')}${s}`,
        der: true,
      })),
      'pem-urlencoded': fc
        .record({ cert: pick(), chain: fc.array(pick(), { maxLength: 2 }), alb: fc.boolean(), crlf: fc.boolean() })
        .map(({ cert, chain, alb, crlf }) => {
          const encode = (c: TestCertificate): string => {
            const pem = crlf ? lfPem(c).replace(/\n/g, '\r\n') : lfPem(c);
            return alb ? albEscape(pem) : encodeURIComponent(pem);
          };
          return { cert, value: [cert, ...chain].map(encode).join(''), der: true };
        }),
      'base64-der': fc
        .record({ cert: pick(), chain: fc.array(pick(), { maxLength: 2 }), escaped: fc.boolean() })
        .map(({ cert, chain, escaped }) => ({ cert, value: traefik([cert, ...chain], escaped), der: true })),
      'sha256-hex': fc.record({ cert: pick(), upper: fc.boolean(), s: ows }).map(({ cert, upper, s }) => ({
        cert,
        value: `${s}${upper ? cert.hex.toUpperCase() : cert.hex}${s}`,
        der: false,
      })),
    };
    for (const format of FORWARDED_CERTIFICATE_FORMATS) {
      fc.assert(
        fc.property(encodings[format], ({ cert, value, der }) => {
          const result = parseForwardedCertificate(format, value);
          expect(result?.thumbprint).toBe(thumbprintS256(new X509Certificate(cert.pem).raw));
          expect(result?.sha256Hex).toBe(cert.hex);
          if (der) expect(result?.der?.equals(cert.der)).toBe(true);
          else expect(result?.der).toBeUndefined();
        }),
        { numRuns: 120 },
      );
    }
  });

  it('arbitrary strings and field lines: a result, undefined or a ForwardedCertificateError, nothing else', () => {
    // Strings biased towards each format's syntax, so the parsers get past the first check.
    const alphabet = fc.constantFrom(...'abAB09+/=%:;,"\\ \t-_CertHash'.split(''), '-----BEGIN CERTIFICATE-----', '-----END CERTIFICATE-----', '%0A', 'Cert="', 'Hash=', ':MII');
    const syntaxy = fc.array(alphabet, { maxLength: 60 }).map((parts) => parts.join(''));
    const value = fc.oneof(fc.string({ unit: 'binary', maxLength: 200 }), syntaxy, fc.array(fc.oneof(fc.string(), syntaxy), { maxLength: 3 }));
    for (const format of FORWARDED_CERTIFICATE_FORMATS) {
      fc.assert(
        fc.property(value, fc.constantFrom<'last' | 'first'>('last', 'first'), (v, xfccElement) => parsesOrRefuses(format, v, { xfccElement })),
        { numRuns: 300 },
      );
    }
  });

  it('arbitrary bytes, raw and in each format\'s wrapper: never anything but a typed error', () => {
    const bytes = fc.uint8Array({ maxLength: 600 }).map((b) => Buffer.from(b));
    const wrap: Record<ForwardedCertificateFormat, (b: Buffer) => string> = {
      xfcc: (b) => `Cert="${encodeURIComponent(`-----BEGIN CERTIFICATE-----\n${b.toString('base64')}\n-----END CERTIFICATE-----`)}"`,
      rfc9440: (b) => `:${b.toString('base64')}:`,
      'pem-urlencoded': (b) => encodeURIComponent(`-----BEGIN CERTIFICATE-----\n${b.toString('base64')}\n-----END CERTIFICATE-----\n`),
      'base64-der': (b) => b.toString('base64'),
      'sha256-hex': (b) => b.subarray(0, 32).toString('hex'),
    };
    for (const format of FORWARDED_CERTIFICATE_FORMATS) {
      fc.assert(
        fc.property(bytes, fc.boolean(), (b, wrapped) => parsesOrRefuses(format, wrapped ? wrap[format](b) : b.toString('latin1'))),
        { numRuns: 200 },
      );
    }
  });

  it('mutated valid headers and mutated DER: a self-consistent result or a typed error', () => {
    const valid: Record<ForwardedCertificateFormat, (c: TestCertificate) => string> = {
      xfcc: (c) => `${xfccElement(client2)},${xfccElement(c)}`,
      rfc9440,
      'pem-urlencoded': albPem,
      'base64-der': (c) => traefik([c, ca], true),
      'sha256-hex': (c) => c.hex,
    };
    const noise = fc.constantFrom(',', ';', '"', '\\', '=', '%', '%2', ':', ' ', '\t', '-', 'A', '+', '/', '\u00ff', '\u0000', '-----END CERTIFICATE-----');
    const edit = fc.record({ kind: fc.constantFrom('delete', 'insert', 'replace', 'duplicate', 'truncate'), at: fc.nat(), len: fc.integer({ min: 1, max: 40 }), text: noise });
    const mutate = (s: string, edits: { kind: string; at: number; len: number; text: string }[]): string => {
      for (const e of edits) {
        const at = s.length === 0 ? 0 : e.at % s.length;
        if (e.kind === 'delete') s = s.slice(0, at) + s.slice(at + e.len);
        else if (e.kind === 'insert') s = s.slice(0, at) + e.text + s.slice(at);
        else if (e.kind === 'replace') s = s.slice(0, at) + e.text + s.slice(at + e.text.length);
        else if (e.kind === 'duplicate') s = s.slice(0, at + e.len) + s.slice(at, at + e.len) + s.slice(at + e.len);
        else s = s.slice(0, at);
      }
      return s;
    };
    for (const format of FORWARDED_CERTIFICATE_FORMATS) {
      fc.assert(
        fc.property(pick(), fc.array(edit, { minLength: 1, maxLength: 4 }), (cert, edits) => parsesOrRefuses(format, mutate(valid[format](cert), edits))),
        { numRuns: 250 },
      );
    }
    // Flipped bits inside a real DER: whatever still parses must be hashed as the bytes sent.
    const derFormats = ['rfc9440', 'pem-urlencoded', 'base64-der', 'xfcc'] as const;
    const encodeDer: Record<(typeof derFormats)[number], (der: Buffer) => string> = {
      rfc9440: (der) => `:${der.toString('base64')}:`,
      'pem-urlencoded': (der) => encodeURIComponent(`-----BEGIN CERTIFICATE-----\n${der.toString('base64')}\n-----END CERTIFICATE-----\n`),
      'base64-der': (der) => der.toString('base64'),
      xfcc: (der) => `Cert="${encodeURIComponent(`-----BEGIN CERTIFICATE-----\n${der.toString('base64')}\n-----END CERTIFICATE-----\n`)}"`,
    };
    for (const format of derFormats) {
      fc.assert(
        fc.property(pick(), fc.nat(), fc.integer({ min: 1, max: 255 }), (cert, at, mask) => {
          const der = Buffer.from(cert.der);
          der[at % der.length]! ^= mask;
          let result: ForwardedCertificate | undefined;
          try {
            result = parseForwardedCertificate(format, encodeDer[format](der));
          } catch (err) {
            return err instanceof ForwardedCertificateError && (err.reason === 'not_a_certificate' || err.reason === 'malformed_header');
          }
          return result !== undefined && result.der!.equals(der) && result.thumbprint === thumbprintS256(der);
        }),
        { numRuns: 100 },
      );
    }
  });
});

// --- trusted peers ----------------------------------------------------------------------------

describe('parseCidrList / peerInList', () => {
  it('matches IPv4 and IPv6 CIDRs and bare addresses', () => {
    const list = parseCidrList(['10.0.0.0/8', '192.168.1.7', 'fd00::/8', '::1', '2001:db8::/32']);
    for (const peer of ['10.0.0.1', '10.255.255.255', '192.168.1.7', 'fd12:3456::1', '::1', '2001:db8:ffff::1']) {
      expect(peerInList(list, peer), peer).toBe(true);
    }
    for (const peer of ['11.0.0.1', '192.168.1.8', 'fe00::1', '::2', '2001:db9::1', '127.0.0.1']) {
      expect(peerInList(list, peer), peer).toBe(false);
    }
  });

  it('never matches the Unix socket peer, even with every address listed', () => {
    expect(peerInList(parseCidrList(['0.0.0.0/0', '::/0']), UNIX_SOCKET_PEER)).toBe(false);
  });

  it('an IPv4-mapped IPv6 peer matches IPv4 entries (dual-stack listeners report ::ffff:a.b.c.d)', () => {
    const list = parseCidrList(['127.0.0.0/8', '192.0.2.10']);
    expect(peerInList(list, '::ffff:127.0.0.1')).toBe(true);
    expect(peerInList(list, '::FFFF:127.1.2.3')).toBe(true);
    expect(peerInList(list, '::ffff:192.0.2.10')).toBe(true);
    expect(peerInList(list, '::ffff:128.0.0.1')).toBe(false);
    expect(peerInList(list, '::ffff:192.0.2.11')).toBe(false);
    expect(peerInList(list, '::1')).toBe(false);
  });

  it('/0 covers one family only', () => {
    const v4 = parseCidrList(['0.0.0.0/0']);
    expect(peerInList(v4, '203.0.113.9')).toBe(true);
    expect(peerInList(v4, '::ffff:203.0.113.9')).toBe(true);
    expect(peerInList(v4, '2001:db8::1')).toBe(false);
    const v6 = parseCidrList(['::/0']);
    expect(peerInList(v6, '2001:db8::1')).toBe(true);
  });

  it('host bits under the prefix are ignored; a zone id on the peer is ignored', () => {
    expect(peerInList(parseCidrList(['10.1.2.3/8']), '10.200.0.1')).toBe(true);
    expect(peerInList(parseCidrList(['fe80::/10']), 'fe80::1%eth0')).toBe(true);
  });

  it('undefined, empty or unparseable peers are never in the list', () => {
    const list = parseCidrList(['0.0.0.0/0', '::/0']);
    for (const peer of [undefined, '', 'localhost', '1.2.3', '10.0.0.1 ', '::ffff:999.0.0.1']) expect(peerInList(list, peer), String(peer)).toBe(false);
    expect(peerInList(parseCidrList([]), '127.0.0.1')).toBe(false);
  });

  it.each(['10.0.0.0/33', '::/129', '10.0.0.0/', '10.0.0.0/08', '10.0.0.0/-1', '10.0.0.0/8/8', 'example.com', '10.0.0.0/ 8', ' 10.0.0.0/8', '256.0.0.0/8', ''])(
    'throws an Error naming the bad entry %j',
    (entry) => {
      expect(() => parseCidrList(['127.0.0.1', entry])).toThrow(JSON.stringify(entry));
    },
  );

  it('property: a peer is in a.b.c.d/p exactly when the top p bits agree, mapped or not', () => {
    const ipv4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255));
    const toInt = (a: number[]): number => a.reduce((n, b) => n * 256 + b, 0);
    fc.assert(
      fc.property(ipv4, ipv4, fc.integer({ min: 0, max: 32 }), (net, peer, prefix) => {
        const list = parseCidrList([`${net.join('.')}/${prefix}`]);
        const shift = 2 ** (32 - prefix);
        const expected = Math.floor(toInt(net) / shift) === Math.floor(toInt(peer) / shift);
        return peerInList(list, peer.join('.')) === expected && peerInList(list, `::ffff:${peer.join('.')}`) === expected;
      }),
      { numRuns: 300 },
    );
  });
});
