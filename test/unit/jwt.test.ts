/** Local JWT access tokens: forged tokens refused with typed reasons, rotation, JWKS outage, the parser under fuzzing. */
import { createHmac, createPublicKey } from 'node:crypto';
import fc from 'fast-check';
import { CompactEncrypt, decodeJwt, exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose';
import { beforeAll, describe, expect, it } from 'vitest';
import { GuardError } from '../../src/edge/render.ts';
import type { TokenIntrospector } from '../../src/introspection/cache.ts';
import { createAnswerCache } from '../../src/introspection/answer-cache.ts';
import { INACTIVE } from '../../src/introspection/token-info.ts';
import { createJwksCache, createJwtVerifier, parseJwt } from '../../src/validation/jwt.ts';
import { createTokenValidator } from '../../src/validation/validator.ts';
import { MINIMAL_CONFIG } from '../fixtures/config.ts';

const ISS = 'https://as.test';
const AUD = 'https://rs.test/';
const NOW = 1_800_000_000_000;
const SKEW = 5;

let key1: { privateKey: CryptoKey; publicKey: CryptoKey };
let key2: { privateKey: CryptoKey; publicKey: CryptoKey };
let jwk1: JWK;
let jwk2: JWK;

beforeAll(async () => {
  key1 = await generateKeyPair('ES256');
  key2 = await generateKeyPair('ES256');
  jwk1 = { ...(await exportJWK(key1.publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' };
  jwk2 = { ...(await exportJWK(key2.publicKey)), kid: 'k2', alg: 'ES256', use: 'sig' };
});

function sign(claims: Record<string, unknown> = {}, header: Record<string, unknown> = {}, key = key1.privateKey): Promise<string> {
  const base = { iss: ISS, aud: AUD, sub: 'sub1', iat: NOW / 1000, exp: NOW / 1000 + 300, jti: 'j1', client_id: 'app', scope: 'read', cnf: { 'x5t#S256': 'abc' } };
  return new SignJWT({ ...base, ...claims })
    .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: 'k1', ...header } as never)
    .sign(key);
}

function setup(keys: () => JWK[] | Error, options: { refreshMs?: number } = {}) {
  let fetches = 0;
  let clock = NOW;
  const jwks = createJwksCache({
    fetch: () => {
      fetches += 1;
      const k = keys();
      return k instanceof Error ? Promise.reject(k) : Promise.resolve({ keys: k });
    },
    now: () => clock,
    cooldownMs: 30_000,
    ...options,
  });
  const verify = createJwtVerifier({ issuer: ISS, algorithms: ['ES256', 'RS256'], jwks, now: () => clock, clockSkewSeconds: SKEW });
  return { jwks, verify, fetches: () => fetches, advance: (ms: number) => (clock += ms) };
}

async function reasonOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'accepted';
  } catch (err) {
    expect(err).toBeInstanceOf(GuardError);
    return (err as GuardError).reason;
  }
}

describe('JWT verifier', () => {
  it('accepts a signed at+jwt and maps its claims to TokenInfo, cnf included', async () => {
    const { verify } = setup(() => [jwk1]);
    const info = await verify(await sign());
    expect(info).toMatchObject({ active: true, subject: 'sub1', clientId: 'app', scope: 'read', iss: ISS, aud: [AUD], cnf: { 'x5t#S256': 'abc' }, exp: NOW / 1000 + 300 });
  });

  it('keeps acr and auth_time (RFC 9470 step-up, RFC 9068 §2.2.1) without claim mappings', async () => {
    const { verify } = setup(() => [jwk1]);
    const info = await verify(await sign({ acr: 'urn:example:mfa', auth_time: NOW / 1000 - 60 }));
    expect({ acr: info.acr, authTime: info.authTime }).toEqual({ acr: 'urn:example:mfa', authTime: NOW / 1000 - 60 });
    expect(await reasonOf(verify(await sign({ auth_time: 'recently' })))).toBe('jwt_claims_invalid');
  });

  it('accepts application/at+jwt in any case', async () => {
    const { verify } = setup(() => [jwk1]);
    await expect(verify(await sign({}, { typ: 'Application/AT+JWT' }))).resolves.toMatchObject({ active: true });
  });

  it('refuses forged and unfit tokens with a typed 401 invalid_token', async () => {
    const { verify } = setup(() => [jwk1]);
    const good = await sign();
    const [h, p] = good.split('.');
    const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
    const none = `${b64({ alg: 'none', typ: 'at+jwt' })}.${p}.`;
    // HS256 keyed with the public key's bytes (key confusion).
    const hsHeader = b64({ alg: 'HS256', typ: 'at+jwt', kid: 'k1' });
    const pem = createPublicKey({ key: jwk1 as never, format: 'jwk' }).export({ type: 'spki', format: 'pem' });
    const hs = `${hsHeader}.${p}.${createHmac('sha256', pem).update(`${hsHeader}.${p}`).digest('base64url')}`;
    const jwe = await new CompactEncrypt(new TextEncoder().encode('x')).setProtectedHeader({ alg: 'dir', enc: 'A256GCM', typ: 'at+jwt' }).encrypt(new Uint8Array(32));
    const cases: [string, string][] = [
      [await sign({}, {}, key2.privateKey), 'jwt_signature_invalid'],
      [none, 'jwt_algorithm_refused'],
      [hs, 'jwt_algorithm_refused'],
      [await sign({}, { typ: 'JWT' }), 'jwt_type_invalid'],
      [await sign({}, { typ: 'dpop+jwt' }), 'jwt_type_invalid'],
      [await sign({ exp: NOW / 1000 - 1 }), 'jwt_expired'],
      [await sign({ nbf: NOW / 1000 + 10 }), 'jwt_not_yet_valid'],
      [await sign({ iss: 'https://evil.test' }), 'jwt_issuer_mismatch'],
      [await sign({}, { kid: 'nope' }), 'jwt_key_unknown'],
      [await sign({ cnf: 'not-an-object' }), 'jwt_claims_invalid'],
      [jwe, 'jwt_malformed'],
      [`${h}.${p}`, 'jwt_malformed'],
      ['opaque-token', 'jwt_malformed'],
    ];
    for (const [token, reason] of cases) {
      const got = await reasonOf(verify(token));
      expect(got, reason).toBe(reason);
      expect(new GuardError(got as never).status).toBe(401);
      expect(new GuardError(got as never).error).toBe('invalid_token');
    }
  });

  it('requires exp (RFC 9068 §2.2) and refuses an iat beyond the clock skew in the future', async () => {
    const { verify } = setup(() => [jwk1]);
    const noExp = await sign({ exp: undefined });
    expect(decodeJwt(noExp)).not.toHaveProperty('exp');
    const refused = async (token: string) => {
      const err = await verify(token).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(GuardError);
      return { reason: (err as GuardError).reason, detail: (err as GuardError).detail, status: (err as GuardError).status };
    };
    expect(await refused(noExp)).toEqual({ reason: 'jwt_claims_invalid', detail: expect.stringMatching(/exp/), status: 401 });
    expect(await refused(await sign({ iat: NOW / 1000 + SKEW + 1 }))).toEqual({ reason: 'jwt_not_yet_valid', detail: expect.stringMatching(/iat/), status: 401 });
    expect(await refused(await sign({ iat: NOW / 1000 + 3600 }))).toMatchObject({ reason: 'jwt_not_yet_valid' });
    expect(await refused(await sign({ iat: 'yesterday' }))).toMatchObject({ reason: 'jwt_claims_invalid' });
    // Within the skew (an AS clock slightly ahead), in the past, or absent: accepted.
    await expect(verify(await sign({ iat: NOW / 1000 + SKEW }))).resolves.toMatchObject({ active: true });
    await expect(verify(await sign({ iat: NOW / 1000 - 3600 }))).resolves.toMatchObject({ active: true });
    await expect(verify(await sign({ iat: undefined }))).resolves.toMatchObject({ active: true });
  });

  it('picks up a rotated key (unknown kid refetches, within a cooldown)', async () => {
    let keys = [jwk1];
    const { jwks, verify, fetches, advance } = setup(() => keys);
    await jwks.refresh(true);
    expect(fetches()).toBe(1);
    keys = [jwk1, jwk2];
    await expect(verify(await sign({}, { kid: 'k2' }, key2.privateKey))).resolves.toMatchObject({ active: true });
    expect(fetches()).toBe(2);
    // Unknown kids within the cooldown do not hammer the AS.
    expect(await reasonOf(verify(await sign({}, { kid: 'k3' })))).toBe('jwt_key_unknown');
    expect(fetches()).toBe(2);
    advance(31_000);
    expect(await reasonOf(verify(await sign({ exp: NOW / 1000 + 600 }, { kid: 'k3' })))).toBe('jwt_key_unknown');
    expect(fetches()).toBe(3);
  });

  it('JWKS down: cached keys keep working, unknown keys are 503 jwks_unavailable', async () => {
    let down = false;
    const { jwks, verify } = setup(() => (down ? new Error('ECONNREFUSED') : [jwk1]));
    await jwks.refresh(true);
    down = true;
    await expect(verify(await sign())).resolves.toMatchObject({ active: true });
    const reason = await reasonOf(verify(await sign({}, { kid: 'k2' }, key2.privateKey)));
    expect(reason).toBe('jwks_unavailable');
    expect(new GuardError('jwks_unavailable').status).toBe(503);
  });

  it('no JWKS ever fetched: 503', async () => {
    const { verify } = setup(() => new Error('down'));
    expect(await reasonOf(verify(await sign()))).toBe('jwks_unavailable');
  });

  it('refuses a MAC or none algorithm in the config', () => {
    const jwks = createJwksCache({ fetch: () => Promise.resolve({ keys: [] }), now: Date.now, cooldownMs: 0 });
    expect(() => createJwtVerifier({ issuer: ISS, algorithms: ['HS256'], jwks, now: Date.now, clockSkewSeconds: SKEW })).toThrow(/HS256/);
    expect(() => createJwtVerifier({ issuer: ISS, algorithms: ['none'], jwks, now: Date.now, clockSkewSeconds: SKEW })).toThrow(/none/);
  });

  it('parser: random input never throws anything but a typed refusal', () => {
    const part = fc.oneof(fc.base64String().map((s) => s.replace(/=/g, '').replace(/\+/g, '-').replace(/\//g, '_')), fc.string(), fc.json().map((j) => Buffer.from(j).toString('base64url')));
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.array(part, { minLength: 1, maxLength: 6 }).map((parts) => parts.join('.'))), (token) => {
        try {
          parseJwt(token);
        } catch (err) {
          expect(err).toBeInstanceOf(GuardError);
          expect(['jwt_malformed', 'jwt_algorithm_refused']).toContain((err as GuardError).reason);
        }
      }),
      { numRuns: 2000 },
    );
  });
});

describe('JWKS refresh (RFC 9068 §4: the AS\'s current keys)', () => {
  const REFRESH_MS = 300_000;

  it('a key the AS withdrew stops verifying once the keys are older than refreshSeconds; the request that noticed is not held up', async () => {
    let keys = [jwk1, jwk2];
    const { jwks, verify, fetches, advance } = setup(() => keys, { refreshMs: REFRESH_MS });
    await jwks.refresh(true);
    const token = await sign({ exp: NOW / 1000 + 3600 });
    await expect(verify(token)).resolves.toMatchObject({ active: true });
    keys = [jwk2]; // k1 withdrawn
    advance(REFRESH_MS - 1);
    await expect(verify(token)).resolves.toMatchObject({ active: true });
    expect(fetches()).toBe(1); // not stale yet: no fetch
    advance(1);
    // Stale: this verification starts the fetch and goes on with the keys it has.
    await expect(verify(token)).resolves.toMatchObject({ active: true });
    expect(fetches()).toBe(2);
    await jwks.refresh(); // the background fetch in flight (or within its cooldown): settles it
    expect(fetches()).toBe(2);
    expect(await reasonOf(verify(token))).toBe('jwt_key_unknown');
  });

  it('an AS that re-keys under the same kid: the failed signature refetches and the new key verifies (unit: and the refresh age does it too)', async () => {
    const rekeyed: JWK = { ...jwk2, kid: 'k1' };
    let keys = [jwk1];
    const { jwks, verify, fetches, advance } = setup(() => keys, { refreshMs: REFRESH_MS });
    await jwks.refresh(true);
    keys = [rekeyed];
    const fresh = await sign({}, { kid: 'k1' }, key2.privateKey);
    await expect(verify(fresh)).resolves.toMatchObject({ active: true });
    expect(fetches()).toBe(2);
    // A forged signature under a known kid refetches at most once per cooldown.
    const forged = await sign({}, { kid: 'k1' }, key1.privateKey);
    expect(await reasonOf(verify(forged))).toBe('jwt_signature_invalid');
    expect(await reasonOf(verify(forged))).toBe('jwt_signature_invalid');
    expect(fetches()).toBe(2);
    advance(30_000);
    expect(await reasonOf(verify(forged))).toBe('jwt_signature_invalid');
    expect(fetches()).toBe(3);
  });

  it('a fetch that brings the same keys keeps the same key set (no retry, nothing dropped)', async () => {
    const { jwks, advance } = setup(() => [jwk1, jwk2], { refreshMs: REFRESH_MS });
    let dropped = 0;
    jwks.onKeysDropped(() => (dropped += 1));
    await jwks.refresh(true);
    const held = jwks.keys;
    advance(REFRESH_MS);
    await jwks.refreshIfStale();
    expect(jwks.keys).toBe(held);
    expect(dropped).toBe(0);
  });

  it('a failing fetch keeps the keys held and is retried at most once per cooldown, then picks up the withdrawal', async () => {
    let state: 'up' | 'down' | 'withdrawn' = 'up';
    const { jwks, verify, fetches, advance } = setup(() => (state === 'down' ? new Error('ECONNREFUSED') : state === 'up' ? [jwk1] : [jwk2]), { refreshMs: REFRESH_MS });
    await jwks.refresh(true);
    const token = await sign({ exp: NOW / 1000 + 3600 });
    state = 'down';
    advance(REFRESH_MS);
    await expect(verify(token)).resolves.toMatchObject({ active: true });
    await jwks.refresh();
    expect(fetches()).toBe(2);
    expect(jwks.failing).toBe(true);
    // Keys still held; within the cooldown nothing is fetched, however often they are used.
    for (let i = 0; i < 5; i += 1) await expect(verify(token)).resolves.toMatchObject({ active: true });
    expect(jwks.refreshIfStale()).toBeUndefined();
    expect(fetches()).toBe(2);
    advance(29_999);
    expect(jwks.refreshIfStale()).toBeUndefined();
    advance(1);
    await jwks.refreshIfStale();
    expect(fetches()).toBe(3);
    expect(jwks.keys?.keys).toEqual([jwk1]);
    // The AS is back, without k1.
    state = 'withdrawn';
    advance(30_000);
    await jwks.refreshIfStale();
    expect(fetches()).toBe(4);
    expect(await reasonOf(verify(token))).toBe('jwt_key_unknown');
  });

  it('keys are not refetched before refreshSeconds, however often they are used', async () => {
    const { jwks, verify, fetches, advance } = setup(() => [jwk1], { refreshMs: REFRESH_MS });
    await jwks.refresh(true);
    const token = await sign({ exp: NOW / 1000 + 3600 });
    for (let i = 0; i < 10; i += 1) {
      advance(REFRESH_MS / 20);
      await verify(token);
    }
    expect(fetches()).toBe(1);
    advance(REFRESH_MS / 2);
    await verify(token);
    expect(fetches()).toBe(2);
  });

  it('a withdrawn key clears the verified-JWT cache: its tokens stop passing at the fetch, not at their cache expiry', async () => {
    let keys = [jwk1, jwk2];
    const { jwks, verify, advance } = setup(() => keys, { refreshMs: REFRESH_MS });
    await jwks.refresh(true);
    let clock = NOW;
    const answers = createAnswerCache({ maxEntries: 100, maxTtlSeconds: 3600, negativeTtlSeconds: 0, now: () => clock });
    jwks.onKeysDropped(() => answers.clear());
    let verifications = 0;
    const introspector: TokenIntrospector = { lookup: () => Promise.resolve(INACTIVE), size: 0, negativeSize: 0, clear() {} };
    const validator = createTokenValidator({
      introspector,
      jwt: { issuer: ISS, verify: (t) => ((verifications += 1), verify(t)), keysInUse: () => void jwks.refreshIfStale() },
      answers,
      cache: { maxEntries: 100, maxTtlSeconds: 3600 },
      now: () => clock,
    });
    const route = { validation: 'jwt' as const, audience: AUD };
    const withdrawn = await sign({ exp: NOW / 1000 + 3600 });
    const kept = await sign({ exp: NOW / 1000 + 3600 }, { kid: 'k2' }, key2.privateKey);
    await validator.validate(withdrawn, route);
    await validator.validate(kept, route);
    expect(verifications).toBe(2);
    expect(validator.size).toBe(2);
    keys = [jwk2];
    advance(REFRESH_MS);
    clock += REFRESH_MS;
    // A cache hit is a use of the keys: it starts the background fetch (and is answered from the cache).
    await expect(validator.validate(withdrawn, route)).resolves.toMatchObject({ source: 'jwt' });
    expect(verifications).toBe(2);
    await jwks.refresh();
    expect(validator.size).toBe(0);
    expect(await reasonOf(validator.validate(withdrawn, route))).toBe('jwt_key_unknown');
    await expect(validator.validate(kept, route)).resolves.toMatchObject({ source: 'jwt' });
    expect(verifications).toBe(4);
  });
});

describe('TokenValidator', () => {
  function validatorWith(keys: JWK[]) {
    const calls: string[] = [];
    const introspector: TokenIntrospector = { lookup: (t) => (calls.push(t), Promise.resolve(INACTIVE)), size: 0, negativeSize: 0, clear() {} };
    const { verify, jwks } = setup(() => keys);
    let verifications = 0;
    const counted = (t: string) => ((verifications += 1), verify(t));
    const validator = createTokenValidator({ introspector, jwt: { issuer: ISS, verify: counted }, cache: { maxEntries: 100, maxTtlSeconds: 300 }, now: () => NOW });
    return { validator, calls, jwks, verifications: () => verifications };
  }
  const route = (validation: 'introspection' | 'jwt' | 'jwt-then-introspection', audience: string | undefined = AUD) => ({ validation, audience });

  it('jwt: verified once, then served from the cache; source says jwt', async () => {
    const { validator, calls, verifications } = validatorWith([jwk1]);
    const token = await sign();
    expect((await validator.validate(token, route('jwt'))).source).toBe('jwt');
    expect((await validator.validate(token, route('jwt'))).info.clientId).toBe('app');
    expect(verifications()).toBe(1);
    expect(calls).toEqual([]);
  });

  it('jwt: the route audience must be in aud', async () => {
    const { validator } = validatorWith([jwk1]);
    expect(await reasonOf(validator.validate(await sign(), route('jwt', 'https://other.test/')))).toBe('jwt_audience_mismatch');
  });

  it('jwt-then-introspection: opaque tokens and other issuers are introspected; a bad JWT of this issuer is refused', async () => {
    const { validator, calls } = validatorWith([jwk1]);
    expect((await validator.validate('opaque', route('jwt-then-introspection'))).source).toBe('introspection');
    const foreign = await sign({ iss: 'https://other-as.test' });
    expect((await validator.validate(foreign, route('jwt-then-introspection'))).source).toBe('introspection');
    expect(calls).toEqual(['opaque', foreign]);
    expect(await reasonOf(validator.validate(await sign({}, {}, key2.privateKey), route('jwt-then-introspection')))).toBe('jwt_signature_invalid');
    expect(calls).toHaveLength(2);
  });

  it('introspection: never verifies locally', async () => {
    const { validator, verifications } = validatorWith([jwk1]);
    expect((await validator.validate(await sign(), route('introspection'))).source).toBe('introspection');
    expect(verifications()).toBe(0);
  });
});

describe('config', async () => {
  const { configSchema } = await import('../../src/config/schema.ts');
  const base = MINIMAL_CONFIG;
  it('refuses HS256 and none in jwt.algorithms', () => {
    for (const alg of ['HS256', 'none']) {
      const r = configSchema.safeParse({ ...base, jwt: { issuer: ISS, jwksUri: 'https://as.test/jwks', algorithms: [alg] } });
      expect(r.success).toBe(false);
    }
  });
  it('refuses a route validating JWTs locally without an audience (RFC 9068 §4), naming its YAML path', () => {
    const jwt = { issuer: ISS, jwksUri: 'https://as.test/jwks' };
    const paths = (config: Record<string, unknown>) => {
      const r = configSchema.safeParse({ ...base, jwt, ...config });
      return r.success ? [] : r.error.issues.map((i) => [i.path.join('.'), i.message] as const);
    };
    for (const validation of ['jwt', 'jwt-then-introspection']) {
      expect(paths({ routes: [{ pathPrefix: '/a', validation }] })).toEqual([['routes.0.audience', expect.stringMatching(/RFC 9068 §4.*routes\[0\]\.audience/)]]);
      expect(paths({ validation })).toEqual([['audience', expect.stringMatching(/RFC 9068 §4.*\baudience\b/)]]);
      // A route inheriting the default route's JWT validation, and neither with an audience.
      expect(paths({ validation, routes: [{ pathPrefix: '/a' }, { pathPrefix: '/b', audience: AUD }] }).map(([path]) => path)).toEqual(['audience', 'routes.0.audience']);
      // An audience of its own, or inherited from the top level: fine.
      expect(paths({ routes: [{ pathPrefix: '/a', validation, audience: AUD }] })).toEqual([]);
      expect(paths({ validation, audience: AUD, routes: [{ pathPrefix: '/a' }] })).toEqual([]);
    }
    // Introspection: the AS judges aud; no audience needed.
    expect(paths({ routes: [{ pathPrefix: '/a', validation: 'introspection' }] })).toEqual([]);
  });

  it('refuses validation: jwt without jwt:, and defaults to introspection', () => {
    expect(configSchema.safeParse({ ...base, routes: [{ pathPrefix: '/a', validation: 'jwt' }] }).success).toBe(false);
    expect(configSchema.parse(base).validation).toBe('introspection');
    expect(configSchema.parse({ ...base, jwt: { issuer: ISS, jwksUri: 'https://as.test/jwks' } }).jwt?.algorithms).toEqual(['ES256', 'PS256', 'EdDSA', 'RS256']);
  });
});
