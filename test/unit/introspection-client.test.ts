import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { basicAuthorization, formUrlEncode } from '../../src/introspection/client.ts';

/** application/x-www-form-urlencoded decoding, as an authorization server applies it. */
function formUrlDecode(value: string): string {
  return decodeURIComponent(value.replace(/\+/g, ' '));
}

describe('formUrlEncode (RFC 6749 §2.3.1, Appendix B)', () => {
  it.each<[string, string]>([
    ['abc', 'abc'],
    ['ABC-xyz_0.9', 'ABC-xyz_0.9'],
    ['a b', 'a+b'],
    ['a:b', 'a%3Ab'],
    ['a+b', 'a%2Bb'],
    ['100%', '100%25'],
    ['a&b=c', 'a%26b%3Dc'],
    ['a/b?c#d', 'a%2Fb%3Fc%23d'],
    ["!'()*", '%21%27%28%29%2A'],
    ['"', '%22'],
    ['é', '%C3%A9'],
    ['😀', '%F0%9F%98%80'],
    ['', ''],
  ])('%j -> %j', (input, output) => {
    expect(formUrlEncode(input)).toBe(output);
  });

  it('leaves nothing but unreserved characters, + and percent-escapes (property)', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme', maxLength: 40 }), (value) => {
        const encoded = formUrlEncode(value);
        expect(encoded).toMatch(/^(?:[A-Za-z0-9\-._~+]|%[0-9A-F]{2})*$/);
        expect(formUrlDecode(encoded)).toBe(value);
      }),
      { numRuns: 3000 },
    );
  });
});

describe('basicAuthorization', () => {
  function decode(header: string): [string, string] {
    expect(header).toMatch(/^Basic [A-Za-z0-9+/]+=*$/);
    const text = Buffer.from(header.slice('Basic '.length), 'base64').toString('utf8');
    const colon = text.indexOf(':');
    return [text.slice(0, colon), text.slice(colon + 1)];
  }

  it('base64-encodes id:secret', () => {
    expect(basicAuthorization('cnfguard', 'secret')).toBe(`Basic ${Buffer.from('cnfguard:secret').toString('base64')}`);
  });

  it('form-urlencodes the id and the secret before base64 (RFC 6749 §2.3.1)', () => {
    const [id, secret] = decode(basicAuthorization('my client:1', 'p:ss w+rd%'));
    expect(id).toBe('my+client%3A1');
    expect(secret).toBe('p%3Ass+w%2Brd%25');
  });

  it('round-trips any id and secret, the first colon separating them (property)', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme', maxLength: 30 }), fc.string({ unit: 'grapheme', maxLength: 30 }), (clientId, clientSecret) => {
        const [id, secret] = decode(basicAuthorization(clientId, clientSecret));
        expect(formUrlDecode(id)).toBe(clientId);
        expect(formUrlDecode(secret)).toBe(clientSecret);
      }),
      { numRuns: 2000 },
    );
  });
});
