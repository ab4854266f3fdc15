import type { IncomingHttpHeaders } from 'node:http';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { ClientCertificate } from '../../src/pipeline/client-cert.ts';
import type { Identity } from '../../src/pipeline/decide.ts';
import { claimValue, headerSafe, setIdentityHeaders, type IdentityHeaderNames } from '../../src/pipeline/identity-headers.ts';
import { xfccElement } from '../../src/tls/xfcc.ts';
import { clientCertificate, labelDigest } from '../fixtures/certificate.ts';
import { percentDecode } from '../fixtures/percent-decode.ts';

const NAMES: IdentityHeaderNames = {
  subject: 'x-auth-subject',
  clientId: 'x-auth-client-id',
  scope: 'x-auth-scope',
  certThumbprint: 'x-auth-cert-thumbprint',
  clientCert: 'x-forwarded-client-cert',
  binding: 'x-auth-binding',
  dpopThumbprint: 'x-auth-dpop-jkt',
};

const DIGEST = labelDigest('client1');

const certificate = (overrides: Partial<Omit<ClientCertificate, 'xfcc'>> = {}): ClientCertificate =>
  clientCertificate('client1', { uris: ['spiffe://cnfguard.dev/client1'], dns: ['client1.cnfguard.dev'], ...overrides });

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
    pairs.push([match[1] ?? '', match[1] === 'URI' || match[1] === 'DNS' ? percentDecode(value) : value]);
    rest = rest.slice(match[0].length);
    if (match[4] === ';' && rest.length === 0) throw new Error('trailing ;');
  }
  return pairs;
}

/** The (WTF-8) bytes of one code point, in hex. */
function wtf8Hex(cp: number): string[] {
  const bytes = cp < 0x80 ? [cp] : cp < 0x800 ? [0xc0 | (cp >> 6), 0x80 | (cp & 0x3f)] : cp < 0x10000 ? [0xe0 | (cp >> 12), 0x80 | ((cp >> 6) & 0x3f), 0x80 | (cp & 0x3f)] : [0xf0 | (cp >> 18), 0x80 | ((cp >> 12) & 0x3f), 0x80 | ((cp >> 6) & 0x3f), 0x80 | (cp & 0x3f)];
  return bytes.map((b) => b.toString(16).padStart(2, '0'));
}

/**
 * What an RFC 4514 parser reads in a DN string: bytes, a `\XX` hex pair being the byte XX, and a
 * backslash-escaped character kept apart from the same character unescaped (`\,` is not a separator).
 */
function dnReading(text: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < text.length; ) {
    const hex = /^\\([0-9A-Fa-f]{2})/.exec(text.slice(i, i + 3));
    if (hex !== null) {
      out.push((hex[1] as string).toLowerCase());
      i += 3;
      continue;
    }
    const escaped = text[i] === '\\' && i + 1 < text.length;
    const cp = text.codePointAt(escaped ? i + 1 : i) as number;
    out.push(...wtf8Hex(cp).map((b) => (escaped ? `\\${b}` : b)));
    i += (escaped ? 1 : 0) + String.fromCodePoint(cp).length;
  }
  return out;
}

/** Any string: ASCII-heavy (the collisions live there), any code point, lone surrogates. */
const anyText = fc.oneof(
  fc.string({ unit: fc.constantFrom(...'ab %C3A9\u0000\t\r\n \u007f'), maxLength: 12 }),
  fc.string({ unit: 'binary', maxLength: 30 }),
  fc.string({ unit: 'grapheme', maxLength: 10 }),
);

describe('headerSafe', () => {
  it.each<[string, string]>([
    ['alice', 'alice'],
    ['read write', 'read write'],
    ['~!"#$&\'()*+,-./:;<=>?@[\\]^_`{|}', '~!"#$&\'()*+,-./:;<=>?@[\\]^_`{|}'],
    ['50%', '50%25'],
    ['%C3%A9ric', '%25C3%25A9ric'],
    ['éric', '%C3%A9ric'],
    ['alice\r\nx-evil: 1', 'alice%0D%0Ax-evil: 1'],
    ['a\nb', 'a%0Ab'],
    ['a\rb', 'a%0Db'],
    ['a\u0000b', 'a%00b'],
    ['a\tb', 'a%09b'],
    ['ab', 'ab'],
    ['del\u007f', 'del%7F'],
    [' lead', '%20lead'],
    ['trail ', 'trail%20'],
    [' ', '%20'],
    ['  ', '%20%20'],
    ['a  b', 'a  b'],
    ['c1 control \u0085', 'c1 control %C2%85'],
    ['josé', 'jos%C3%A9'],
    ['日本', '%E6%97%A5%E6%9C%AC'],
    ['emoji 😀', 'emoji %F0%9F%98%80'],
    // Lone surrogates (a JSON "\ud800" escape): their WTF-8 bytes, which no valid text has.
    ['lone \ud800 surrogate', 'lone %ED%A0%80 surrogate'],
    ['lone \udfff low surrogate', 'lone %ED%BF%BF low surrogate'],
    ['\udc00\ud800', '%ED%B0%80%ED%A0%80'],
    ['', ''],
  ])('%j -> %j', (input, output) => {
    expect(headerSafe(input)).toBe(output);
  });

  it('never merges two values: éric and %C3%A9ric, a\\0b, a\\tb and ab stay apart', () => {
    const values = ['éric', '%C3%A9ric', 'a\u0000b', 'a\tb', 'ab', 'a b', ' ab', 'ab '];
    expect(new Set(values.map(headerSafe)).size).toBe(values.length);
  });

  it('is injective, undone by percent-decoding, and always a valid header value that no parser trims (property)', () => {
    fc.assert(
      fc.property(anyText, anyText, (a, b) => {
        const ea = headerSafe(a);
        // Printable ASCII only (no CR, LF, NUL: nothing Node's header validation would refuse), and
        // no space at either end (parsers strip optional whitespace).
        expect(ea).toMatch(/^(?:[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?)?$/);
        expect(percentDecode(ea)).toBe(a);
        if (a.isWellFormed()) expect(decodeURIComponent(ea)).toBe(a);
        if (a !== b) expect(headerSafe(b)).not.toBe(ea);
      }),
      { numRuns: 5000 },
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

  it('keeps CR/LF and non-ASCII out of the element, and drops nothing', () => {
    const element = xfccElement(certificate({ subject: 'CN=a\r\nX-Evil: 1,O=é', uris: ['spiffe://é/\n'], dns: ['b\u0000.example'] }));
    expect(element).toMatch(/^[\x20-\x7e]*$/);
    // The Subject as Envoy (OpenSSL's RFC 2253 form) writes it: bytes outside printable ASCII as \XX.
    expect(element).toContain(String.raw`Subject="CN=a\\0D\\0AX-Evil: 1,O=\\C3\\A9"`);
    expect(parseXfccElement(element).slice(1)).toEqual([
      ['Subject', String.raw`CN=a\0D\0AX-Evil: 1,O=\C3\A9`],
      ['URI', 'spiffe://é/\n'],
      ['DNS', 'b\u0000.example'],
    ]);
  });

  it('never merges two SAN values: é and %C3%A9, a\\0b and ab stay apart', () => {
    const values = ['spiffe://é', 'spiffe://%C3%A9', 'a\u0000b', 'ab', 'a b', 'a\tb'];
    const uris = values.map((uri) => xfccElement(certificate({ uris: [uri], dns: [] })));
    expect(new Set(uris).size).toBe(values.length);
  });

  it('never merges two subjects: the Subject is the same DN as the certificate subject (property)', () => {
    // Subjects as Node writes them: RFC 4514 values, special characters and `\` backslash-escaped.
    const attribute = fc.tuple(fc.constantFrom('CN', 'O', 'OU'), anyText).map(([type, value]) => `${type}=${value.replace(/[\\,+"<>;=]/g, (c) => `\\${c}`)}`);
    const subject = fc.array(attribute, { minLength: 1, maxLength: 3 }).map((rdns) => rdns.join(','));
    const subjectOf = (s: string) => (parseXfccElement(xfccElement(certificate({ subject: s, uris: [], dns: [] })))[1] as [string, string])[1];
    fc.assert(
      fc.property(subject, subject, (a, b) => {
        const sa = subjectOf(a);
        expect(sa).toMatch(/^[\x20-\x7e]*$/);
        expect(dnReading(sa)).toEqual(dnReading(a));
        if (a !== b) expect(subjectOf(b)).not.toBe(sa);
      }),
      { numRuns: 3000 },
    );
  });

  it('never merges two SAN values and undoes by percent-decoding (property)', () => {
    fc.assert(
      fc.property(anyText, anyText, (a, b) => {
        const ea = xfccElement(certificate({ uris: [a], dns: [a] }));
        expect(ea).toMatch(/^[\x20-\x7e]*$/);
        expect(parseXfccElement(ea).slice(2)).toEqual([
          ['URI', a],
          ['DNS', a],
        ]);
        if (a !== b) expect(xfccElement(certificate({ uris: [b], dns: [b] }))).not.toBe(ea);
      }),
      { numRuns: 3000 },
    );
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
    expect(headers).toEqual({ 'x-auth-subject': 'alice%0D%0Ax-admin: true', 'x-auth-client-id': '%C3%A1pp', 'x-auth-scope': 'read%09write' });
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
    pct: '100%',
    list_pct: ['50%'],
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
    [['evil'], 'a%0D%0Ax-admin: 1'],
    [['pct'], '100%25'],
    [['list_pct'], '["50%25"]'],
    [['name'], 'Jos%C3%A9'],
    // Never the prototype chain.
    [['__proto__'], undefined],
    [['constructor'], undefined],
    [['obj', 'toString'], undefined],
  ])('%j -> %j', (path, expected) => {
    expect(claimValue(claims, path)).toBe(expected);
  });
});
