import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  basicAuthorization,
  createIntrospectionClient,
  formUrlEncode,
  statusMeaning,
  tokenEndpointError,
  type IntrospectionClient,
  type IntrospectionClientOptions,
  type IntrospectionOutcome,
  type MisconfigurationWarning,
} from '../../src/introspection/client.ts';
import { INACTIVE } from '../../src/introspection/token-info.ts';
import { generateDevCertificates } from '../../src/tls/dev-certs.ts';
import { manualClock } from '../fixtures/clock.ts';
import { startIntrospectionStub, type IntrospectionStub } from '../fixtures/introspection-stub.ts';

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

describe('tokenEndpointError: a 400 that asks for a grant comes from a token endpoint', () => {
  it.each<[unknown, string | undefined]>([
    [{ error: 'invalid_request', error_description: "missing required parameter 'grant_type'" }, 'invalid_request'],
    [{ error: 'unsupported_grant_type' }, 'unsupported_grant_type'],
    [{ error: 'invalid_grant', error_description: 'grant request is invalid' }, 'invalid_grant'],
    // About the token (oidc-provider's answer to a JWT-shaped token, or any AS's): refused, as before.
    [{ error: 'invalid_request', error_description: 'invalid token' }, undefined],
    [{ error: 'invalid_request' }, undefined],
    [{ active: false }, undefined],
    [{ error: 'x'.repeat(65), error_description: 'grant_type' }, undefined],
    [{ error: 'bad\ncode', error_description: 'grant_type' }, undefined],
    ['grant_type', undefined],
    [undefined, undefined],
  ])('%j -> %j', (answer, error) => {
    expect(tokenEndpointError(answer)).toBe(error);
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

describe('statusMeaning: whose problem a non-200 answer is', () => {
  it.each<[number, string]>([
    [400, 'token_refused'],
    [413, 'token_refused'],
    [422, 'token_refused'],
    [401, 'misconfigured'],
    [403, 'misconfigured'],
    [404, 'misconfigured'],
    [405, 'misconfigured'],
    [302, 'misconfigured'],
    [204, 'misconfigured'],
    [408, 'as_fault'],
    [429, 'as_fault'],
    [500, 'as_fault'],
    [502, 'as_fault'],
    [503, 'as_fault'],
  ])('HTTP %i -> %s', (status, meaning) => {
    expect(statusMeaning(status)).toBe(meaning);
  });
});

describe('createIntrospectionClient against a real endpoint', () => {
  const certs = generateDevCertificates();
  let stub: IntrospectionStub;
  const clients: IntrospectionClient[] = [];
  beforeAll(async () => {
    stub = await startIntrospectionStub(certs.server);
  });
  afterAll(async () => {
    for (const c of clients) await c.close();
    await stub?.stop();
  });

  function client(options: Partial<IntrospectionClientOptions> = {}) {
    const outcomes: IntrospectionOutcome[] = [];
    const warnings: MisconfigurationWarning[] = [];
    const c = createIntrospectionClient({
      url: stub.url,
      clientId: 'rs',
      clientSecret: 'rs-secret',
      authMethod: 'client_secret_basic',
      ca: certs.ca.cert,
      timeoutMs: 2000,
      onOutcome: (outcome) => outcomes.push(outcome),
      onMisconfigured: (warning) => warnings.push(warning),
      ...options,
    });
    clients.push(c);
    return { introspect: c.introspect, outcomes, warnings };
  }

  it('a 400 about the token is that token refused: inactive, outcome refused', async () => {
    stub.mode = { kind: 'status', status: 400 };
    try {
      const c = client();
      await expect(c.introspect('eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.')).resolves.toBe(INACTIVE);
      expect(c.outcomes).toEqual(['refused']);
      expect(c.warnings).toEqual([]);
    } finally {
      stub.mode = { kind: 'normal' };
    }
  });

  it('wrong credentials (401): introspection_misconfigured, one warning naming the URL and status, later ones counted', async () => {
    const clock = manualClock();
    const c = client({ clientSecret: 'wrong', warnIntervalMs: 200, now: clock.now });
    for (let i = 0; i < 3; i++) await expect(c.introspect(`t${i}`)).rejects.toMatchObject({ reason: 'introspection_misconfigured', status: 503 });
    expect(c.outcomes).toEqual(['misconfigured', 'misconfigured', 'misconfigured']);
    expect(c.warnings).toEqual([{ url: stub.url, status: 401, suppressed: 0 }]);
    clock.advance(250); // past warnIntervalMs
    await expect(c.introspect('t3')).rejects.toMatchObject({ reason: 'introspection_misconfigured' });
    expect(c.warnings).toEqual([
      { url: stub.url, status: 401, suppressed: 0 },
      { url: stub.url, status: 401, suppressed: 2 },
    ]);
  });

  it('the warning shows the URL without userinfo or query', async () => {
    const url = new URL(stub.url);
    url.username = 'user';
    url.password = 'pass';
    url.search = '?k=v';
    const c = client({ url: url.toString(), clientSecret: 'wrong' });
    await expect(c.introspect('t')).rejects.toMatchObject({ reason: 'introspection_misconfigured' });
    expect(c.warnings[0]?.url).toBe(stub.url);
  });

  it.each<[number, IntrospectionOutcome, string]>([
    [403, 'misconfigured', 'introspection_misconfigured'],
    [404, 'misconfigured', 'introspection_misconfigured'],
    [500, 'http_error', 'introspection_unavailable'],
    [429, 'rate_limited', 'introspection_unavailable'],
    [408, 'http_error', 'introspection_unavailable'],
  ])('HTTP %i -> outcome %s, %s', async (status, outcome, reason) => {
    stub.mode = { kind: 'status', status };
    try {
      const c = client();
      await expect(c.introspect('t')).rejects.toMatchObject({ reason });
      expect(c.outcomes).toEqual([outcome]);
    } finally {
      stub.mode = { kind: 'normal' };
    }
  });
});
