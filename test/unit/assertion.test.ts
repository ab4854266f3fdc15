/**
 * The signed identity for the upstream, as units: keys checked against the algorithm, the kid an
 * RFC 7638 thumbprint, claims as the contract lists them (verified with jose, a library this code
 * does not use to sign), reuse within half the lifetime and a fresh one after (injected clock),
 * and the key ring keeping a replaced key published for one lifetime.
 */
import { generateKeyPairSync } from 'node:crypto';
import { calculateJwkThumbprint, createLocalJWKSet, decodeProtectedHeader, jwtVerify, type JSONWebKeySet } from 'jose';
import { describe, expect, it } from 'vitest';
import { createAssertionIssuer } from '../../src/assertion/issuer.ts';
import { assertionKeyFrom, createAssertionKeyRing, type AssertionAlgorithm } from '../../src/assertion/keys.ts';
import { INACTIVE, type TokenInfo } from '../../src/introspection/token-info.ts';
import { manualClock } from '../fixtures/clock.ts';

const pem = (type: 'ec' | 'ed25519' | 'rsa', bits = 2048): string => {
  const options = type === 'ec' ? { namedCurve: 'P-256' } : type === 'rsa' ? { modulusLength: bits } : {};
  return generateKeyPairSync(type as 'ec', options as { namedCurve: string }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
};

const TOKEN: TokenInfo = { ...INACTIVE, active: true, subject: 'alice', clientId: 'app', scope: 'read write', exp: 4_000_000_000, aud: [], cnf: Object.freeze({ 'x5t#S256': 'thumb', jkt: 'jkt-value' }) };
const ROUTE = { id: 'default', assertion: { audience: 'http://127.0.0.1:9000', lifetimeSeconds: 60 } };

describe('assertion keys', () => {
  it.each<[AssertionAlgorithm, string]>([
    ['ES256', pem('ec')],
    ['EdDSA', pem('ed25519')],
    ['PS256', pem('rsa')],
    ['RS256', pem('rsa')],
  ])('%s: signs, the kid is the RFC 7638 thumbprint, verified by jose', async (algorithm, key) => {
    const clock = manualClock();
    const ring = createAssertionKeyRing(clock.now);
    ring.use(assertionKeyFrom(key, algorithm), 60);
    const jwt = createAssertionIssuer({ ring, issuer: 'https://cnfguard.test', header: 'x-auth-assertion', now: clock.now }).issue(TOKEN, ROUTE, ['mtls']) as string;
    const jwks = JSON.parse(ring.jwks()) as JSONWebKeySet;
    const { payload, protectedHeader } = await jwtVerify(jwt, createLocalJWKSet(jwks), { issuer: 'https://cnfguard.test', audience: ROUTE.assertion.audience, currentDate: new Date(clock.now()), typ: 'JWT' });
    expect(protectedHeader.kid).toBe(await calculateJwkThumbprint(jwks.keys[0] as never, 'sha256'));
    expect(protectedHeader.alg).toBe(algorithm);
    expect(payload).toEqual({ iss: 'https://cnfguard.test', aud: ROUTE.assertion.audience, iat: Math.floor(clock.now() / 1000), exp: Math.floor(clock.now() / 1000) + 60, sub: 'alice', client_id: 'app', scope: 'read write', cnf_method: 'mtls', cnf: { 'x5t#S256': 'thumb' } });
  });

  it.each<[AssertionAlgorithm, string, RegExp]>([
    ['ES256', pem('ed25519'), /ES256 needs an EC P-256 key/],
    ['EdDSA', pem('ec'), /EdDSA needs an Ed25519 key/],
    ['PS256', pem('ec'), /PS256 needs an RSA key/],
    ['RS256', pem('rsa', 1024), /at least 2048 bits/],
    ['ES256', 'not a key', /not a PEM private key/],
  ])('%s with the wrong key is refused: %s', (algorithm, key, message) => {
    expect(() => assertionKeyFrom(key, algorithm)).toThrow(message);
  });
});

describe('assertion issuer', () => {
  it('cnf_method lists the verified methods in the order mtls dpop httpsig, or none; cnf only what they verified; no sub when the token has none', () => {
    const clock = manualClock();
    const ring = createAssertionKeyRing(clock.now);
    ring.use(assertionKeyFrom(pem('ec'), 'ES256'), 60);
    const issuer = createAssertionIssuer({ ring, issuer: 'i', header: 'x', now: clock.now });
    const claims = (jwt: string | undefined) => JSON.parse(Buffer.from((jwt as string).split('.')[1] as string, 'base64url').toString()) as Record<string, unknown>;
    expect(claims(issuer.issue(TOKEN, ROUTE, ['dpop', 'mtls']))).toMatchObject({ cnf_method: 'mtls dpop', cnf: { 'x5t#S256': 'thumb', jkt: 'jkt-value' } });
    const none = claims(issuer.issue({ ...TOKEN, subject: undefined }, ROUTE, undefined));
    expect(none.cnf_method).toBe('none');
    expect('cnf' in none || 'sub' in none).toBe(false);
    expect(decodeProtectedHeader(issuer.issue(TOKEN, ROUTE, undefined) as string).typ).toBe('JWT');
  });

  it('is reused for the same token and route while more than half its lifetime remains, then signed again', () => {
    const clock = manualClock();
    const ring = createAssertionKeyRing(clock.now);
    ring.use(assertionKeyFrom(pem('ec'), 'ES256'), 60);
    const issuer = createAssertionIssuer({ ring, issuer: 'i', header: 'x', now: clock.now });
    const first = issuer.issue(TOKEN, ROUTE, ['mtls']);
    clock.advance(29_000);
    expect(issuer.issue(TOKEN, ROUTE, ['mtls'])).toBe(first);
    // Another route, or another token answer, gets its own.
    expect(issuer.issue(TOKEN, { ...ROUTE, id: 'other' }, ['mtls'])).not.toBe(first);
    expect(issuer.issue({ ...TOKEN }, ROUTE, ['mtls'])).not.toBe(first);
    clock.advance(1_000);
    const second = issuer.issue(TOKEN, ROUTE, ['mtls']);
    expect(second).not.toBe(first);
    expect(JSON.parse(Buffer.from((second as string).split('.')[1] as string, 'base64url').toString()).iat).toBe(Math.floor(clock.now() / 1000));
  });

  it('a key change: new assertions by the new key; the old key stays in the JWKS for one lifetime', () => {
    const clock = manualClock();
    const ring = createAssertionKeyRing(clock.now);
    const oldKey = assertionKeyFrom(pem('ec'), 'ES256');
    const newKey = assertionKeyFrom(pem('ec'), 'ES256');
    ring.use(oldKey, 60);
    const issuer = createAssertionIssuer({ ring, issuer: 'i', header: 'x', now: clock.now });
    const before = issuer.issue(TOKEN, ROUTE, ['mtls']) as string;
    ring.use(newKey, 60);
    const after = issuer.issue(TOKEN, ROUTE, ['mtls']) as string;
    expect(decodeProtectedHeader(before).kid).toBe(oldKey.kid);
    expect(decodeProtectedHeader(after).kid).toBe(newKey.kid);
    const kids = () => (JSON.parse(ring.jwks()) as JSONWebKeySet).keys.map((k) => k.kid);
    expect(kids()).toEqual([newKey.kid, oldKey.kid]);
    clock.advance(59_999);
    expect(kids()).toEqual([newKey.kid, oldKey.kid]);
    clock.advance(1);
    expect(kids()).toEqual([newKey.kid]);
    // The same key again (a SIGHUP with an unchanged file) changes nothing.
    ring.use(assertionKeyFrom(pem('ec'), 'ES256'), 60);
    ring.use(ring.current, 60);
    expect(kids()).toHaveLength(2);
  });
});
