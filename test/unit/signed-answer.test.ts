/**
 * RFC 9701 signed introspection answers as a unit: the iat window on the injected clock (60 s old,
 * 5 s ahead), the token_introspection member the only thing read, and what is not a signed answer.
 * The AS-facing cases (plain JSON, another key, another aud, typ, alg) run against real servers in
 * test/e2e/signed-introspection.test.ts.
 */
import { CompactEncrypt, exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose';
import { beforeAll, describe, expect, it } from 'vitest';
import { createSignedAnswerVerifier, SIGNED_ANSWER_TYPE, UnverifiedAnswer } from '../../src/introspection/signed-answer.ts';
import { createJwksCache } from '../../src/validation/jwt.ts';

const NOW = 1_750_000_000_000;
const ISS = 'https://as.example';
let key: CryptoKey;
let jwk: JWK;

beforeAll(async () => {
  const pair = await generateKeyPair('ES256');
  key = pair.privateKey;
  jwk = { ...(await exportJWK(pair.publicKey)), kid: 'k', alg: 'ES256' };
});

const verifier = (now = NOW) =>
  createSignedAnswerVerifier({ issuer: ISS, clientId: 'rs', algorithms: ['ES256'], now: () => now, jwks: createJwksCache({ fetch: async () => ({ keys: [jwk] }), now: () => now, cooldownMs: 0 }) });
const answer = (claims: Record<string, unknown>, iat = NOW / 1000) =>
  new SignJWT({ iss: ISS, aud: ['rs', 'other'], token_introspection: { active: true, sub: 'alice' }, ...claims }).setProtectedHeader({ alg: 'ES256', kid: 'k', typ: 'token-introspection+jwt' }).setIssuedAt(iat).sign(key);
const cause = async (p: Promise<unknown>) => p.then(() => 'accepted', (err: unknown) => (err instanceof UnverifiedAnswer ? err.message : `not UnverifiedAnswer: ${String(err)}`));

describe('signed introspection answers', () => {
  it('reads only token_introspection; aud may list others beside clientId; content type parameters are fine', async () => {
    await expect(verifier()(await answer({ active: false, sub: 'mallory' }), `${SIGNED_ANSWER_TYPE}; charset=utf-8`)).resolves.toEqual({ active: true, sub: 'alice' });
  });

  it.each<[string, number, string]>([
    ['60 s old', NOW / 1000 - 60, 'accepted'],
    ['61 s old', NOW / 1000 - 61, 'iat 61 s old (at most 60)'],
    ['5 s ahead', NOW / 1000 + 5, 'accepted'],
    ['6 s ahead', NOW / 1000 + 6, 'iat 6 s ahead (at most 5)'],
  ])('iat %s: %s', async (_name, iat, expected) => {
    expect(await cause(verifier()(await answer({}, iat), SIGNED_ANSWER_TYPE))).toBe(expected);
  });

  it('refuses what is not a signed answer, naming the cause', async () => {
    const verify = verifier();
    expect(await cause(verify(await answer({ token_introspection: 'active' }), SIGNED_ANSWER_TYPE))).toBe('no token_introspection object');
    expect(await cause(verify(await answer({ iss: 'https://evil.example' }), SIGNED_ANSWER_TYPE))).toBe('claim iss invalid (not introspection.issuer)');
    expect(await cause(verify(await answer({}), undefined))).toBe(`content type (none), not ${SIGNED_ANSWER_TYPE}`);
    const jwe = await new CompactEncrypt(new TextEncoder().encode('{}')).setProtectedHeader({ alg: 'dir', enc: 'A128GCM' }).encrypt(new Uint8Array(16));
    expect(await cause(verify(jwe, SIGNED_ANSWER_TYPE))).toBe('an encrypted answer (JWE) is not accepted');
    expect(await cause(verify('{"active":true}', SIGNED_ANSWER_TYPE))).toMatch(/^not a valid signed answer/);
  });

  it('an AS that re-keys under the same kid: the failed signature refetches (within the cooldown) and the new key verifies; a withdrawn key stops verifying after the refresh age', async () => {
    const next = await generateKeyPair('ES256');
    const rekeyed: JWK = { ...(await exportJWK(next.publicKey)), kid: 'k', alg: 'ES256' };
    let keys = [jwk];
    let fetches = 0;
    let now = NOW;
    const jwks = createJwksCache({ fetch: async () => ((fetches += 1), { keys }), now: () => now, cooldownMs: 30_000, refreshMs: 300_000 });
    const verify = createSignedAnswerVerifier({ issuer: ISS, clientId: 'rs', algorithms: ['ES256'], now: () => now, jwks });
    await jwks.refresh(true);
    const signedWith = (signer: CryptoKey) =>
      new SignJWT({ iss: ISS, aud: 'rs', token_introspection: { active: true } }).setProtectedHeader({ alg: 'ES256', kid: 'k', typ: 'token-introspection+jwt' }).setIssuedAt(now / 1000).sign(signer);
    keys = [rekeyed];
    expect(await cause(verify(await signedWith(next.privateKey), SIGNED_ANSWER_TYPE))).toBe('accepted');
    expect(fetches).toBe(2);
    // The old key under that kid: refused, and within the cooldown no further fetch.
    expect(await cause(verify(await signedWith(key), SIGNED_ANSWER_TYPE))).toBe('signature does not verify with the JWKS keys');
    expect(fetches).toBe(2);
    // The AS withdraws every key it had: after the refresh age, the next answer starts a fetch.
    keys = [];
    now += 300_000;
    expect(await cause(verify(await signedWith(next.privateKey), SIGNED_ANSWER_TYPE))).toBe('accepted');
    await jwks.refresh();
    expect(fetches).toBe(3);
    expect(await cause(verify(await signedWith(next.privateKey), SIGNED_ANSWER_TYPE))).toBe('no key of introspection.jwksUri matches kid and alg');
  });
});
