import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { GuardError, type ReasonId } from '../../src/edge/render.ts';
import { credentialsFrom, formCarriesToken, isFormContentType, nameReadsAsToken, queryCarriesToken } from '../../src/pipeline/token.ts';

/** RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=" */
const B64TOKEN = /^[A-Za-z0-9\-._~+/]+=*$/;
const B64TOKEN_CHARS = [...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/'];

function reasonOf(authorization: readonly string[] | undefined): ReasonId | 'no error' | 'not a GuardError' {
  try {
    credentialsFrom(authorization);
    return 'no error';
  } catch (err) {
    return err instanceof GuardError ? err.reason : 'not a GuardError';
  }
}

describe('credentialsFrom', () => {
  it.each<[string, string[], string]>([
    ['a plain token', ['Bearer abc'], 'abc'],
    ['lower-case scheme', ['bearer abc'], 'abc'],
    ['upper-case scheme', ['BEARER abc'], 'abc'],
    ['mixed-case scheme', ['bEaReR abc'], 'abc'],
    ['every b64token character', ['Bearer AZaz09-._~+/'], 'AZaz09-._~+/'],
    ['one trailing =', ['Bearer abc='], 'abc='],
    ['several trailing =', ['Bearer abc=='], 'abc=='],
    ['several spaces after the scheme (1*SP)', ['Bearer   abc'], 'abc'],
    ['surrounding optional whitespace (OWS)', [' \tBearer abc \t'], 'abc'],
    ['a JWT-shaped token', ['Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln'], 'eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln'],
  ])('accepts %s', (_name, header, token) => {
    expect(credentialsFrom(header)).toEqual({ scheme: 'bearer', token });
  });

  it.each<[string, string[], string]>([
    ['DPoP', ['DPoP abc'], 'abc'],
    ['lower-case dpop', ['dpop abc='], 'abc='],
    ['upper-case DPOP, spaces', ['DPOP   a.b.c'], 'a.b.c'],
  ])('accepts the DPoP scheme (RFC 9449 §7.1): %s', (_name, header, token) => {
    expect(credentialsFrom(header)).toEqual({ scheme: 'dpop', token });
  });

  it('one Bearer and one DPoP line are ambiguous: 400', () => {
    expect(reasonOf(['Bearer abc', 'DPoP abc'])).toBe('authorization_duplicated');
    expect(reasonOf(['DPoP', 'DPoP abc'])).toBe('authorization_duplicated');
    expect(reasonOf(['DPoP'])).toBe('authorization_malformed');
  });

  it.each<[string, string[] | undefined, ReasonId]>([
    ['no header', undefined, 'credentials_missing'],
    ['an empty list of values', [], 'credentials_missing'],
    ['Basic credentials', ['Basic dXNlcjpwYXNz'], 'credentials_missing'],
    ['another scheme, no credentials', ['Negotiate'], 'credentials_missing'],
    ['an empty value', [''], 'authorization_malformed'],
    ['only whitespace', ['   '], 'authorization_malformed'],
    ['the scheme alone', ['Bearer'], 'authorization_malformed'],
    ['the scheme and a space', ['Bearer '], 'authorization_malformed'],
    ['two tokens', ['Bearer  a b'], 'authorization_malformed'],
    ['a comma list', ['Bearer a,b'], 'authorization_malformed'],
    ['a tab instead of a space', ['Bearer\tabc'], 'authorization_malformed'],
    ['a = inside the token', ['Bearer a=b'], 'authorization_malformed'],
    ['only = signs', ['Bearer ='], 'authorization_malformed'],
    ['a quote', ['Bearer "abc"'], 'authorization_malformed'],
    ['a non-ASCII character', ['Bearer abcé'], 'authorization_malformed'],
    ['a control character', ['Bearer ab\u0000c'], 'authorization_malformed'],
    ['a semicolon', ['Bearer abc;x'], 'authorization_malformed'],
    ['auth-params instead of token68', ['Bearer token="abc"'], 'authorization_malformed'],
    ['garbage before the scheme', ['"Bearer abc'], 'authorization_malformed'],
    // Only SP and HTAB are optional whitespace (RFC 9110 §5.6.3); anything else is part of the value.
    ['a token followed by a no-break space', ['Bearer abc\u00a0'], 'authorization_malformed'],
    ['a no-break space before the scheme', ['\u00a0Bearer abc'], 'authorization_malformed'],
    ['two values', ['Bearer a', 'Bearer b'], 'authorization_duplicated'],
    ['two identical values', ['Bearer a', 'Bearer a'], 'authorization_duplicated'],
    ['two values, one of another scheme', ['Basic x', 'Bearer b'], 'authorization_duplicated'],
  ])('refuses %s', (_name, header, reason) => {
    expect(reasonOf(header)).toBe(reason);
  });

  it('gives missing credentials no OAuth error code, and malformed ones invalid_request (RFC 6750 §3.1)', () => {
    const errorOf = (header: string[] | undefined): GuardError => {
      try {
        credentialsFrom(header);
      } catch (err) {
        if (err instanceof GuardError) return err;
      }
      throw new Error('expected a GuardError');
    };
    expect(errorOf(undefined)).toMatchObject({ status: 401, error: undefined });
    expect(errorOf(['Basic x'])).toMatchObject({ status: 401, error: undefined });
    expect(errorOf(['Bearer a b'])).toMatchObject({ status: 400, error: 'invalid_request' });
    expect(errorOf(['Bearer a', 'Bearer b'])).toMatchObject({ status: 400, error: 'invalid_request' });
  });

  it('never puts the token of a refused header into the error', () => {
    const secret = 'SuperSecretToken123';
    for (const header of [[`Bearer ${secret} x`], [`Bearer ${secret}`, `Bearer ${secret}`], [`Basic ${secret}`]]) {
      try {
        credentialsFrom(header);
        expect.unreachable();
      } catch (err) {
        expect(err).toBeInstanceOf(GuardError);
        expect(String((err as Error).message)).not.toContain(secret);
        expect(String((err as GuardError).detail ?? '')).not.toContain(secret);
      }
    }
  });

  describe('properties', () => {
    const header = fc.oneof(
      fc.string({ unit: 'binary', maxLength: 40 }),
      fc.string({ maxLength: 40 }).map((s) => `Bearer ${s}`),
      fc.tuple(fc.constantFrom('Bearer', 'bearer', 'BEARER', 'DPoP', 'Basic', ''), fc.string({ unit: 'binary', maxLength: 3 }), fc.string({ maxLength: 30 })).map(([a, b, c]) => `${a}${b}${c}`),
    );

    it('returns a b64token or throws a GuardError, for any header values', () => {
      fc.assert(
        fc.property(fc.option(fc.array(header, { maxLength: 3 }), { nil: undefined }), (values) => {
          let token: string;
          try {
            ({ token } = credentialsFrom(values));
          } catch (err) {
            expect(err).toBeInstanceOf(GuardError);
            return;
          }
          expect(token).toMatch(B64TOKEN);
          // A token is only ever taken from a single Bearer or DPoP header that contains it verbatim.
          expect(values).toHaveLength(1);
          expect(values?.[0]).toContain(token);
        }),
        { numRuns: 5000 },
      );
    });

    it('returns exactly the b64token that was sent, whatever the scheme case and spacing', () => {
      const b64token = fc
        .tuple(fc.array(fc.constantFrom(...B64TOKEN_CHARS), { minLength: 1, maxLength: 60 }), fc.integer({ min: 0, max: 3 }))
        .map(([chars, pad]) => chars.join('') + '='.repeat(pad));
      const scheme = fc.array(fc.boolean(), { minLength: 6, maxLength: 6 }).map((upper) => [...'bearer'].map((c, i) => (upper[i] ? c.toUpperCase() : c)).join(''));
      fc.assert(
        fc.property(scheme, fc.integer({ min: 1, max: 4 }), b64token, (s, spaces, token) => {
          expect(credentialsFrom([`${s}${' '.repeat(spaces)}${token}`]).token).toBe(token);
        }),
        { numRuns: 2000 },
      );
    });
  });
});

describe('queryCarriesToken', () => {
  it.each<[string, boolean]>([
    ['/', false],
    ['/path', false],
    ['/path?', false],
    ['/path?access_token=abc', true],
    ['/path?a=1&access_token=abc', true],
    ['/path?access_token=', true],
    ['/path?access_token', true],
    ['/path?access%5Ftoken=abc', true],
    ['/path?access%5ftoken=abc', true],
    ['/path?%61ccess_token=abc', true],
    ['/path?a=1&access_token=abc#frag', true],
    ['/path?x=access_token', false],
    ['/path?my_access_token=abc', false],
    ['/path?access_token_x=abc', false],
    // PHP turns space and `.` into `_`.
    ['/path?access+token=abc', true],
    ['/path?access.token=abc', true],
    // qs reads a leading `[x]` as `x`.
    ['/path?[access_token]=abc', true],
    ['/path?%5Baccess_token%5D=abc', true],
    ['/path?a=1;access_token=abc', true],
    ['/path?user[access_token]=abc', false],
    ['/path?x=1#access_token=abc', false],
    ['/path#access_token=abc', false],
    ['/access_token=abc', false],
  ])('%s -> %s', (target, expected) => {
    expect(queryCarriesToken(target)).toBe(expected);
  });
});

describe('isFormContentType', () => {
  it.each<[string | undefined, boolean]>([
    [undefined, false],
    ['', false],
    ['application/x-www-form-urlencoded', true],
    ['application/x-www-form-urlencoded; charset=utf-8', true],
    ['application/x-www-form-urlencoded;charset=UTF-8', true],
    ['application/x-www-form-urlencoded ; charset=utf-8', true],
    ['APPLICATION/X-WWW-FORM-URLENCODED', true],
    ['application/x-www-form-urlencoded2', false],
    ['application/x-www-form-urlencodedx; charset=utf-8', false],
    ['text/application/x-www-form-urlencoded', false],
    ['application/json', false],
    ['multipart/form-data; boundary=x', false],
    ['text/plain', false],
  ])('%s -> %s', (contentType, expected) => {
    expect(isFormContentType(contentType)).toBe(expected);
  });
});

describe('formCarriesToken', () => {
  it.each<[string, boolean]>([
    ['', false],
    ['a=1&b=2', false],
    ['access_token=abc', true],
    ['a=1&access_token=abc', true],
    ['access_token=', true],
    ['access%5Ftoken=abc', true],
    ['x=access_token', false],
    ['my_access_token=abc', false],
    ['[access_token]=abc', true],
    ['a=1&%5Baccess_token%5D=abc', true],
    ['access_token[]=abc', true],
    ['access_token[=]=abc', true],
    ['a=1&access+token=abc', true],
    // UTF-16 (charset=utf-16): NULs between the letters.
    ['a\0=\0x\0&\0a\0c\0c\0e\0s\0s\0_\0t\0o\0k\0e\0n\0=\0x\0', true],
    ['note=a+b&user%5Baccess_token%5D=x', false],
  ])('%j -> %s', (body, expected) => {
    expect(formCarriesToken(Buffer.from(body, 'latin1'))).toBe(expected);
  });
});

describe('nameReadsAsToken: every reading a common parser makes of a name', () => {
  it.each([
    ['access_token', 'plain'],
    ['ACCESS_TOKEN', 'any case'],
    [' access_token ', 'surrounding spaces (PHP drops leading ones)'],
    ['access%5Ftoken', 'percent-encoded'],
    ['access%255Ftoken', 'encoded twice (a double-decoding stack)'],
    ['access%u005Ftoken', "IIS's %uXXXX"],
    ['%61ccess_token', 'an encoded letter'],
    ['[access_token]', 'qs: a leading [x] is x (extended or not)'],
    ['%5Baccess_token%5D', 'qs, encoded brackets'],
    ['[access_token]x', 'qs: what follows the brackets is dropped'],
    ['[[access_token]]', 'Rack: leading brackets dropped'],
    ['[]access_token', 'Rack: leading brackets dropped'],
    ['.access_token', 'qs allowDots: .x is [x]'],
    ['access_token[]', 'array'],
    ['access_token[0]', 'indexed array'],
    ['access_token[x][y]', 'nested under access_token'],
    ['access_token.x', 'qs allowDots: nested under access_token'],
    ['access.token', 'PHP: . becomes _'],
    ['access token', 'PHP: space becomes _'],
    ['access+token', 'PHP: + is a space'],
    ['access[token', 'PHP: an unmatched [ becomes _'],
    ['access_token%00', 'a C string ends at NUL'],
  ])('%s (%s)', (name) => {
    expect(nameReadsAsToken(name)).toBe(true);
  });

  it.each(['', 'access', 'token', 'accesstoken', 'access__token', 'access-token', 'my_access_token', 'access_token_x', 'access_tokens', 'user[access_token]', 'a[access_token]', '[x][access_token]'])('%j is another name', (name) => {
    expect(nameReadsAsToken(name)).toBe(false);
  });

  it('finds a token name wherever it stands among many parameters, and stays linear', () => {
    const many = `${'a=1&'.repeat(20_000)}%5Baccess_token%5D=x`;
    const started = performance.now();
    expect(formCarriesToken(Buffer.from(many))).toBe(true);
    expect(performance.now() - started).toBeLessThan(1000);
  });
});
