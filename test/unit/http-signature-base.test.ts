import { createHmac, createPrivateKey, createPublicKey, sign } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { contentDigestMatches, signatureBase, signatureEntries, SignatureBaseError, SignatureSyntaxError, verifySignatureBytes, type SignedRequest } from '../../src/proof/http-signature-base.ts';
import { EXAMPLE_REQUEST, REQUEST_VECTORS, RESPONSE_VECTOR_B24, TEST_KEY_ECC_P256_JWK, TEST_KEY_ED25519_PRIVATE, TEST_KEY_ED25519_PUBLIC, TEST_KEY_RSA_PSS_PUBLIC, TEST_SHARED_SECRET } from '../fixtures/rfc9421-vectors.ts';

const request: SignedRequest = {
  method: EXAMPLE_REQUEST.method,
  targetUri: EXAMPLE_REQUEST.targetUri,
  fieldLines: (name) => {
    const value = EXAMPLE_REQUEST.headers[name];
    return value === undefined ? undefined : [value];
  },
};

function entryOf(input: string, signature: string) {
  const entries = signatureEntries([input], [signature]);
  expect(entries).toHaveLength(1);
  return entries![0]!;
}

describe('RFC 9421 Appendix B request vectors', () => {
  for (const vector of REQUEST_VECTORS) {
    it(`${vector.name}: the signature base is the RFC's, byte for byte`, () => {
      expect(signatureBase(entryOf(vector.input, vector.signature), request)).toBe(vector.base);
    });
  }

  const rsaPss = createPublicKey(TEST_KEY_RSA_PSS_PUBLIC);
  for (const vector of REQUEST_VECTORS.filter((v) => v.input.includes('test-key-rsa-pss'))) {
    it(`${vector.name}: the RFC's signature verifies with test-key-rsa-pss, and a changed base does not`, () => {
      const entry = entryOf(vector.input, vector.signature);
      const base = signatureBase(entry, request);
      expect(verifySignatureBytes('rsa-pss-sha512', rsaPss, base, entry.signature)).toBe(true);
      expect(verifySignatureBytes('rsa-pss-sha512', rsaPss, `${base} `, entry.signature)).toBe(false);
    });
  }

  it('B.2.5 hmac-sha256 (deterministic): HMAC of our base with test-shared-secret is the RFC signature', () => {
    const vector = REQUEST_VECTORS.find((v) => v.name.startsWith('B.2.5'))!;
    const entry = entryOf(vector.input, vector.signature);
    const mac = createHmac('sha256', Buffer.from(TEST_SHARED_SECRET, 'base64')).update(signatureBase(entry, request)).digest();
    expect(mac.equals(entry.signature)).toBe(true);
  });

  it('B.2.6 ed25519 (deterministic): signing our base with test-key-ed25519 gives the RFC signature, which verifies', () => {
    const vector = REQUEST_VECTORS.find((v) => v.name.startsWith('B.2.6'))!;
    const entry = entryOf(vector.input, vector.signature);
    const base = signatureBase(entry, request);
    expect(sign(null, Buffer.from(base), createPrivateKey(TEST_KEY_ED25519_PRIVATE)).equals(entry.signature)).toBe(true);
    expect(verifySignatureBytes('ed25519', createPublicKey(TEST_KEY_ED25519_PUBLIC), base, entry.signature)).toBe(true);
  });

  it('B.2.4 ecdsa-p256-sha256 (a response): the raw r||s signature verifies over the RFC base with test-key-ecc-p256', () => {
    const key = createPublicKey({ key: TEST_KEY_ECC_P256_JWK, format: 'jwk' });
    const signature = Buffer.from(RESPONSE_VECTOR_B24.signature, 'base64');
    expect(verifySignatureBytes('ecdsa-p256-sha256', key, RESPONSE_VECTOR_B24.base, signature)).toBe(true);
    expect(verifySignatureBytes('ecdsa-p256-sha256', key, RESPONSE_VECTOR_B24.base.replace('200', '201'), signature)).toBe(false);
  });

  it("the example request's Content-Digest (RFC 9530 sha-512) matches its body, and not another", () => {
    const lines = [EXAMPLE_REQUEST.headers['content-digest']!];
    expect(contentDigestMatches(lines, Buffer.from(EXAMPLE_REQUEST.body))).toBe(true);
    expect(contentDigestMatches(lines, Buffer.from(`${EXAMPLE_REQUEST.body} `))).toBe(false);
    expect(contentDigestMatches(['unixsum=:AAAA:'], Buffer.from(EXAMPLE_REQUEST.body))).toBe(false);
    expect(() => contentDigestMatches(['sha-256=abc def'], Buffer.alloc(0))).toThrow(SignatureSyntaxError);
  });
});

describe('signature fields', () => {
  it('several lines of one field are one dictionary; labels must pair up', () => {
    const entries = signatureEntries(['a=("@method");created=1', 'b=();created=2'], ['a=:AAAA:, b=:AQID:']);
    expect(entries?.map((e) => e.label)).toEqual(['a', 'b']);
    expect(() => signatureEntries(['a=();created=1'], ['b=:AAAA:'])).toThrow(SignatureBaseError);
    expect(signatureEntries(undefined, undefined)).toBeUndefined();
  });

  it('a field that does not parse, or of the wrong shape, is a syntax error', () => {
    expect(() => signatureEntries(['a=(@method)'], ['a=:AAAA:'])).toThrow(SignatureSyntaxError);
    expect(() => signatureEntries(['a=("@method")'], ['a="text"'])).toThrow(SignatureSyntaxError);
    expect(() => signatureEntries(['a=?1'], ['a=:AAAA:'])).toThrow(SignatureSyntaxError);
  });

  it('a component covered twice, absent, or unknown fails the base', () => {
    const base = (input: string) => signatureBase(entryOf(input, 'x=:AAAA:'), request);
    expect(() => base('x=("@method" "@method")')).toThrow(SignatureBaseError);
    expect(() => base('x=("x-absent")')).toThrow(SignatureBaseError);
    expect(() => base('x=("@unknown")')).toThrow(SignatureBaseError);
    expect(() => base('x=("date";sf)')).toThrow(SignatureBaseError);
  });

  it('@authority drops the default port and lower-cases; @query of an empty query is "?"', () => {
    const other: SignedRequest = { method: 'GET', targetUri: 'https://API.Example:443/p', fieldLines: () => undefined };
    expect(signatureBase(entryOf('x=("@authority" "@query" "@path" "@scheme")', 'x=:AAAA:'), other)).toBe('"@authority": api.example\n"@query": ?\n"@path": /p\n"@scheme": https\n"@signature-params": ("@authority" "@query" "@path" "@scheme")');
  });

  it('a dictionary member (key) and byte sequence (bs) field components', () => {
    const fields: SignedRequest = { ...request, fieldLines: (name) => (name === 'example-dict' ? [' a=1, b=2;x=1;y=2, c=(a b c)'] : undefined) };
    expect(signatureBase(entryOf('x=("example-dict";key="b" "example-dict";key="c" "example-dict";bs)', 'x=:AAAA:'), fields)).toBe(
      '"example-dict";key="b": 2;x=1;y=2\n"example-dict";key="c": (a b c)\n"example-dict";bs: :YT0xLCBiPTI7eD0xO3k9MiwgYz0oYSBiIGMp:\n"@signature-params": ("example-dict";key="b" "example-dict";key="c" "example-dict";bs)',
    );
  });
});

describe('@signature-params', () => {
  it("property: the value is the library's serialization of the parsed inner list, whatever it holds", async () => {
    const { default: fc } = await import('fast-check');
    const { parseDictionary, serializeDictionary, serializeInnerList, Token } = await import('structured-headers');
    const key = fc.stringMatching(/^[a-z*][a-z0-9_.*-]{0,6}$/);
    const bare = fc.oneof(
      fc.string({ unit: fc.constantFrom(...'ab "\\(;)=,'.split('')), maxLength: 6 }),
      fc.integer({ min: -1e6, max: 1e6 }),
      fc.boolean(),
      fc.stringMatching(/^[a-zA-Z*][a-zA-Z0-9:/!#$%&'*+.^_`|~-]{0,6}$/).map((t) => new Token(t)),
      fc.double({ min: -1000, max: 1000, noNaN: true }).map((d) => Math.round(d * 1000) / 1000),
      fc.uint8Array({ maxLength: 4 }).map((b) => b.buffer as ArrayBuffer),
    );
    const params = fc.uniqueArray(fc.tuple(key, bare), { selector: ([k]) => k, maxLength: 3 }).map((entries) => new Map(entries));
    const component = fc.tuple(fc.stringMatching(/^@?[a-z][a-z-]{0,8}$/), params);
    fc.assert(
      fc.property(fc.array(component, { maxLength: 4 }), params, (items, listParams) => {
        const input = serializeDictionary(new Map([['sig', [items, listParams]]]));
        const entry = signatureEntries([input], ['sig=:AAAA:'])![0]!;
        expect(entry.signatureParams).toBe(serializeInnerList(parseDictionary(input).get('sig') as never));
      }),
      { numRuns: 300 },
    );
  });
});
