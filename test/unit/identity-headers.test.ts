import type { IncomingHttpHeaders } from 'node:http';
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { ClientCertificate } from '../../src/pipeline/client-cert.ts';
import type { Identity } from '../../src/pipeline/decide.ts';
import { claimValue, headerSafe, setIdentityHeaders, xfccElement, type IdentityHeaderNames } from '../../src/pipeline/identity-headers.ts';

const NAMES: IdentityHeaderNames = {
  subject: 'x-auth-subject',
  clientId: 'x-auth-client-id',
  scope: 'x-auth-scope',
  certThumbprint: 'x-auth-cert-thumbprint',
  clientCert: 'x-forwarded-client-cert',
  binding: 'x-auth-binding',
  dpopThumbprint: 'x-auth-dpop-jkt',
};

const DIGEST = createHash('sha256').update('client1').digest();

function certificate(overrides: Partial<Omit<ClientCertificate, 'xfcc'>> = {}): ClientCertificate {
  const facts = {
    thumbprint: DIGEST.toString('base64url'),
    sha256Hex: DIGEST.toString('hex'),
    subject: 'CN=client1',
    uris: ['spiffe://cnfguard.dev/client1'],
    dns: ['client1.cnfguard.dev'],
    trusted: true,
    ...overrides,
  };
  return { ...facts, xfcc: xfccElement(facts) };
}

/**
 * Parses one Envoy XFCC element: `;`-separated `key=value` pairs, a value either bare (no `,;="`)
 * or double-quoted with `\` escapes. Throws on anything else, and on a `,` (a second element).
 */
function parseXfccElement(element: string): [string, string][] {
  const pairs: [string, string][] = [];
  const pair = /^([A-Za-z]+)=(?:"((?:[^"\\]|\\.)*)"|([^,;="\\]*))(;|$)/s;
  let rest = element;
  while (rest.length > 0) {
    const match = pair.exec(rest);
    if (match === null) throw new Error(`bad XFCC at ${rest}`);
    const value = match[2] === undefined ? (match[3] ?? '') : match[2].replace(/\\(.)/gs, '$1');
    // URI and DNS values are percent-encoded; the Subject is quoted.
    pairs.push([match[1] ?? '', match[1] === 'URI' || match[1] === 'DNS' ? decodeURIComponent(value) : value]);
    rest = rest.slice(match[0].length);
    if (match[4] === ';' && rest.length === 0) throw new Error('trailing ;');
  }
  return pairs;
}

describe('headerSafe', () => {
  it.each<[string, string]>([
    ['alice', 'alice'],
    ['read write', 'read write'],
    ['~!"#$%&\'()*+,-./:;<=>?@[\\]^_`{|}', '~!"#$%&\'()*+,-./:;<=>?@[\\]^_`{|}'],
    ['alice\r\nx-evil: 1', 'alicex-evil: 1'],
    ['a\nb', 'ab'],
    ['a\rb', 'ab'],
    ['nul\u0000', 'nul'],
    ['tab\there', 'tabhere'],
    ['del\u007f', 'del'],
    ['c1 control \u0085', 'c1 control %C2%85'],
    ['josé', 'jos%C3%A9'],
    ['日本', '%E6%97%A5%E6%9C%AC'],
    ['emoji 😀', 'emoji %F0%9F%98%80'],
    ['lone \ud800 surrogate', 'lone  surrogate'],
    ['lone \udfff low surrogate', 'lone  low surrogate'],
    ['', ''],
  ])('%j -> %j', (input, output) => {
    expect(headerSafe(input)).toBe(output);
  });

  it('always yields a valid header field value (property)', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 60 }), fc.string({ unit: 'grapheme', maxLength: 20 }), (a, b) => {
        const value = headerSafe(a + b);
        // Printable ASCII only: no CR, LF, NUL, nothing Node's header validation would refuse.
        expect(value).toMatch(/^[\x20-\x7e]*$/);
      }),
      { numRuns: 3000 },
    );
  });
});

describe('xfccElement', () => {
  it('writes Hash, Subject, URI and DNS in the Envoy format', () => {
    expect(xfccElement(certificate())).toBe(`Hash=${DIGEST.toString('hex')};Subject="CN=client1";URI=spiffe://cnfguard.dev/client1;DNS=client1.cnfguard.dev`);
  });

  it('uses the hex SHA-256 of the DER, not the base64url thumbprint', () => {
    const [hash] = parseXfccElement(xfccElement(certificate()));
    expect(hash).toEqual(['Hash', DIGEST.toString('hex')]);
    expect(hash?.[1]).toMatch(/^[0-9a-f]{64}$/);
  });

  it('leaves out URI and DNS when the certificate has none', () => {
    expect(xfccElement(certificate({ uris: [], dns: [], subject: 'CN=client2' }))).toBe(`Hash=${DIGEST.toString('hex')};Subject="CN=client2"`);
  });

  it('repeats URI and DNS, in order', () => {
    const pairs = parseXfccElement(xfccElement(certificate({ uris: ['spiffe://a/1', 'spiffe://a/2'], dns: ['a.example', 'b.example'] })));
    expect(pairs.slice(2)).toEqual([
      ['URI', 'spiffe://a/1'],
      ['URI', 'spiffe://a/2'],
      ['DNS', 'a.example'],
      ['DNS', 'b.example'],
    ]);
  });

  it.each<[string, string, string]>([
    ['a comma', 'spiffe://a/b,c', 'URI=spiffe://a/b%2Cc'],
    ['a semicolon', 'spiffe://a/b;c', 'URI=spiffe://a/b%3Bc'],
    ['an equals sign', 'https://a/?x=1', 'URI=https://a/?x%3D1'],
    ['a double quote', 'spiffe://a/"b"', 'URI=spiffe://a/%22b%22'],
    ['a percent sign', 'spiffe://a/%41', 'URI=spiffe://a/%2541'],
    ['nothing special', 'spiffe://a/b', 'URI=spiffe://a/b'],
  ])('percent-encodes a URI value containing %s', (_name, uri, expected) => {
    const element = xfccElement(certificate({ uris: [uri], dns: [] }));
    expect(element.endsWith(`;${expected}`)).toBe(true);
    expect(parseXfccElement(element)[2]).toEqual(['URI', uri]);
  });

  it('escapes quotes in the (always quoted) Subject', () => {
    const subject = 'CN=a "quoted" name,O=Acme\\, Inc.';
    const element = xfccElement(certificate({ subject, uris: [], dns: [] }));
    expect(parseXfccElement(element)[1]).toEqual(['Subject', subject]);
  });

  it('keeps CR/LF and non-ASCII out of the element', () => {
    const element = xfccElement(certificate({ subject: 'CN=a\r\nX-Evil: 1', uris: ['spiffe://é/\n'], dns: ['b\u0000.example'] }));
    expect(element).toMatch(/^[\x20-\x7e]*$/);
    expect(parseXfccElement(element).slice(1)).toEqual([
      ['Subject', 'CN=aX-Evil: 1'],
      ['URI', 'spiffe://é/'],
      ['DNS', 'b.example'],
    ]);
  });

  it('round-trips any SAN and subject through an XFCC parser (property)', () => {
    const text = fc.string({ unit: fc.constantFrom(...'ab,;="\\ :/.'), maxLength: 20 });
    fc.assert(
      fc.property(text, fc.array(text, { maxLength: 3 }), fc.array(text, { maxLength: 3 }), (subject, uris, dns) => {
        const pairs = parseXfccElement(xfccElement(certificate({ subject, uris, dns })));
        expect(pairs).toEqual([['Hash', DIGEST.toString('hex')], ['Subject', subject], ...uris.map((u) => ['URI', u]), ...dns.map((d) => ['DNS', d])]);
      }),
      { numRuns: 2000 },
    );
  });
});

function identity(overrides: Partial<Identity> = {}): Identity {
  return { subject: undefined, clientId: undefined, scope: undefined, certificate: undefined, claims: {}, ...overrides };
}

describe('setIdentityHeaders', () => {
  it('sanitises claim values from the AS', () => {
    const headers: IncomingHttpHeaders = {};
    setIdentityHeaders(headers, identity({ subject: 'alice\r\nx-admin: true', clientId: 'ápp', scope: 'read\twrite' }), NAMES);
    expect(headers).toEqual({ 'x-auth-subject': 'alicex-admin: true', 'x-auth-client-id': '%C3%A1pp', 'x-auth-scope': 'readwrite' });
  });

  it('sets mapped claim headers from the introspection answer', () => {
    const headers: IncomingHttpHeaders = {};
    const claims = { tenant_id: 't-1', ext: { region: 'eu', level: 3 } };
    setIdentityHeaders(headers, identity({ claims }), NAMES, [
      { header: 'x-tenant', path: ['tenant_id'] },
      { header: 'x-region', path: ['ext', 'region'] },
      { header: 'x-level', path: ['ext', 'level'] },
      { header: 'x-missing', path: ['nope'] },
    ]);
    expect(headers).toEqual({ 'x-tenant': 't-1', 'x-region': 'eu', 'x-level': '3' });
  });
});

describe('claimValue', () => {
  const claims = {
    sub: 'alice',
    n: 42,
    yes: true,
    no: false,
    zero: 0,
    nothing: null,
    list: ['a', 'b'],
    obj: { deep: { value: 'x' }, 'a.b': 'dotted' },
    evil: 'a\r\nx-admin: 1',
    name: 'José',
  };
  it.each<[string[], string | undefined]>([
    [['sub'], 'alice'],
    [['n'], '42'],
    [['yes'], 'true'],
    [['no'], 'false'],
    [['zero'], '0'],
    [['nothing'], undefined],
    [['absent'], undefined],
    [['list'], '["a","b"]'],
    [['obj', 'deep', 'value'], 'x'],
    [['obj', 'deep'], '{"value":"x"}'],
    [['obj', 'a.b'], 'dotted'],
    [['sub', 'length'], undefined],
    [['list', '0'], 'a'],
    [['obj', 'missing', 'x'], undefined],
    [['evil'], 'ax-admin: 1'],
    [['name'], 'Jos%C3%A9'],
    // Never the prototype chain.
    [['__proto__'], undefined],
    [['constructor'], undefined],
    [['obj', 'toString'], undefined],
  ])('%j -> %j', (path, expected) => {
    expect(claimValue(claims, path)).toBe(expected);
  });
});
