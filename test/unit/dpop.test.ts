/**
 * The DPoP proof check against real keys: valid proofs from panva's `dpop` client library (code
 * nobody here wrote, so the thumbprint and claims are checked for interop), malformed ones built
 * with jose.
 */
import { createHook } from 'node:async_hooks';
import { constants, generateKeyPairSync, KeyObject, randomUUID, sign, verify } from 'node:crypto';
import * as dpop from 'dpop';
import fc from 'fast-check';
import { calculateJwkThumbprint, CompactSign, exportJWK, generateKeyPair, type JWK } from 'jose';
import { beforeAll, describe, expect, it } from 'vitest';
import { REASONS, renderError } from '../../src/edge/render.ts';
import { createNonceSource } from '../../src/proof/nonce.ts';
import { algorithmAccepted } from '../../src/proof/dpop-header.ts';
import { expectedHtu, normalizeHtu } from '../../src/proof/htu.ts';
import { jwkThumbprint } from '../../src/proof/jwk-thumbprint.ts';
import { ecdsaSignatureToDer, signatureThreadFor } from '../../src/proof/jws-signature.ts';
import {
  accessTokenHash,
  checkDpopPolicy,
  createDpopCaches,
  MAX_PROOF_BYTES,
  verifyDpopProof,
  type DpopDeps,
  type DpopProofInput,
  type DpopResult,
} from '../../src/proof/dpop.ts';
import { createMemoryReplayStore, type ReplayStore } from '../../src/state/replay-store.ts';

const TOKEN = 'opaque-access-token-Zm9vYmFy';
const HTU = 'https://api.example/orders/7';
const POLICY = { algorithms: ['ES256', 'EdDSA', 'PS256'], proofMaxAgeSeconds: 300, clockSkewSeconds: 5 };

const now = () => Date.now() / 1000;

/** What the proofs of this file remember, as one process's runtime would (built in composition). */
const caches = createDpopCaches();

function deps(overrides: Partial<DpopDeps> = {}): DpopDeps {
  return { policy: POLICY, replayStore: createMemoryReplayStore({ maxEntries: 10_000, now }), now, caches, ...overrides };
}

function input(proof: string | string[] | undefined, overrides: Partial<DpopProofInput> = {}): DpopProofInput {
  return { headerLines: proof === undefined ? undefined : Array.isArray(proof) ? proof : [proof], method: 'GET', htu: HTU, accessToken: TOKEN, ...overrides };
}

function refused(result: DpopResult): { check: string; reason: string; status: number; error: string | undefined } {
  if (result.ok) throw new Error('expected a refusal');
  return { check: result.check, reason: result.reason, status: result.error.status, error: result.error.error };
}

let es256: dpop.KeyPair;
let ed25519: dpop.KeyPair;
let ps256: dpop.KeyPair;
let rs256: dpop.KeyPair;
type Key = Awaited<ReturnType<typeof generateKeyPair>>['privateKey'];
let joseKey: { privateKey: Key; publicKey: Key; jwk: JWK };
let otherJwk: JWK;

beforeAll(async () => {
  [es256, ed25519, ps256, rs256] = await Promise.all([
    dpop.generateKeyPair('ES256'),
    dpop.generateKeyPair('Ed25519'),
    dpop.generateKeyPair('PS256'),
    dpop.generateKeyPair('RS256'),
  ]);
  const pair = await generateKeyPair('ES256', { extractable: true });
  joseKey = { ...pair, jwk: await exportJWK(pair.publicKey) };
  otherJwk = await exportJWK((await generateKeyPair('ES256', { extractable: true })).publicKey);
});

const b64 = (value: unknown) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');

/** A proof signed with jose, every header member and claim overridable (undefined removes one). */
async function joseProof(header: Record<string, unknown> = {}, claims: Record<string, unknown> = {}, key: Key | Uint8Array = joseKey.privateKey): Promise<string> {
  const fullHeader = { alg: 'ES256', typ: 'dpop+jwt', jwk: joseKey.jwk, ...header };
  const fullClaims = { jti: randomUUID(), htm: 'GET', htu: HTU, iat: Math.floor(now()), ath: accessTokenHash(TOKEN), ...claims };
  const clean = (o: Record<string, unknown>) => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
  return new CompactSign(new TextEncoder().encode(JSON.stringify(clean(fullClaims))))
    .setProtectedHeader(clean(fullHeader) as { alg: string })
    .sign(key);
}

/** A proof signed by hand (ES256 with joseKey), for headers jose will not sign (crit it does not know, b64). */
function handSigned(header: Record<string, unknown>, claims: Record<string, unknown> = {}): string {
  const signed = `${b64({ alg: 'ES256', typ: 'dpop+jwt', jwk: joseKey.jwk, ...header })}.${b64({ jti: randomUUID(), htm: 'GET', htu: HTU, iat: Math.floor(now()), ath: accessTokenHash(TOKEN), ...claims })}`;
  return `${signed}.${sign('sha256', Buffer.from(signed), { key: KeyObject.from(joseKey.privateKey as never), dsaEncoding: 'ieee-p1363' }).toString('base64url')}`;
}

describe('verifyDpopProof: valid proofs from the dpop client library', () => {
  it.each([
    ['ES256', () => es256],
    ['Ed25519 under EdDSA', () => ed25519],
    ['PS256', () => ps256],
  ])('accepts %s and returns the RFC 7638 thumbprint the client library computes', async (_name, keys) => {
    const proof = await dpop.generateProof(keys(), HTU, 'GET', undefined, TOKEN);
    const result = await verifyDpopProof(input(proof), deps());
    expect(result).toEqual({ ok: true, jkt: await dpop.calculateThumbprint(keys().publicKey) });
  });

  it('the same proof signed by hand without crit or b64 passes (the crit refusals below are about crit alone)', async () => {
    expect((await verifyDpopProof(input(handSigned({})), deps())).ok).toBe(true);
  });

  it('EdDSA and Ed25519 (RFC 9864) name one algorithm for an Ed25519 key: either configured accepts either, an Ed448 key neither', async () => {
    const edProof = (alg: string, type: 'ed25519' | 'ed448') => {
      const { privateKey, publicKey } = type === 'ed25519' ? generateKeyPairSync('ed25519') : generateKeyPairSync('ed448');
      const signed = `${b64({ typ: 'dpop+jwt', alg, jwk: publicKey.export({ format: 'jwk' }) })}.${b64({ jti: randomUUID(), htm: 'GET', htu: HTU, iat: Math.floor(now()), ath: accessTokenHash(TOKEN) })}`;
      return `${signed}.${sign(null, Buffer.from(signed), privateKey).toString('base64url')}`;
    };
    for (const configured of [['EdDSA'], ['Ed25519']]) {
      const policy = { ...POLICY, algorithms: configured };
      for (const alg of ['EdDSA', 'Ed25519']) {
        expect((await verifyDpopProof(input(edProof(alg, 'ed25519')), deps({ policy }))).ok, `${alg} under ${configured[0]}`).toBe(true);
        expect(refused(await verifyDpopProof(input(edProof(alg, 'ed448')), deps({ policy }))).check, `Ed448 as ${alg}`).toBe('jwk');
      }
      // Neither name admits another algorithm.
      expect(refused(await verifyDpopProof(input(await dpop.generateProof(es256, HTU, 'GET', undefined, TOKEN)), deps({ policy }))).check).toBe('alg');
    }
  });

  it('refuses RS256 when it is not configured, and accepts it when it is', async () => {
    const proof = await dpop.generateProof(rs256, HTU, 'GET', undefined, TOKEN);
    expect(refused(await verifyDpopProof(input(proof), deps()))).toMatchObject({ check: 'alg', reason: 'dpop_alg_unsupported', status: 401, error: 'invalid_dpop_proof' });
    expect((await verifyDpopProof(input(proof), deps({ policy: { ...POLICY, algorithms: ['RS256'] } }))).ok).toBe(true);
  });

  it.each(['PS256', 'RS256'])('refuses a %s proof of a 1024-bit RSA key (dpop_key_invalid); 2048 bits pass', async (alg) => {
    // Signed with node:crypto: the dpop client library and jose refuse to sign with a key this short.
    const rsaProof = (modulusLength: number) => {
      const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength });
      const signed = `${b64({ typ: 'dpop+jwt', alg, jwk: publicKey.export({ format: 'jwk' }) })}.${b64({ jti: randomUUID(), htm: 'GET', htu: HTU, iat: Math.floor(now()), ath: accessTokenHash(TOKEN) })}`;
      const padding = alg === 'PS256' ? { padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 } : {};
      return `${signed}.${sign('sha256', Buffer.from(signed), { key: privateKey, ...padding }).toString('base64url')}`;
    };
    const policy = { ...POLICY, algorithms: [alg] };
    expect(refused(await verifyDpopProof(input(rsaProof(1024)), deps({ policy })))).toEqual({ check: 'jwk', reason: 'dpop_key_invalid', status: 401, error: 'invalid_dpop_proof' });
    expect((await verifyDpopProof(input(rsaProof(2048)), deps({ policy }))).ok).toBe(true);
  });

  it('accepts a POST to a URI spelled differently but equal after RFC 3986 normalisation', async () => {
    const proof = await dpop.generateProof(es256, 'HTTPS://API.Example:443/orders/./x/../%37?q=1#frag', 'POST', undefined, TOKEN);
    expect((await verifyDpopProof(input(proof, { method: 'POST' }), deps())).ok).toBe(true);
  });

  it('accepts surrounding spaces or tabs (on either side), as a header parser may leave them', async () => {
    for (const around of [(p: string) => ` ${p} `, (p: string) => `${p}\t`, (p: string) => `\t ${p}`]) {
      const proof = await dpop.generateProof(es256, HTU, 'GET', undefined, TOKEN);
      expect((await verifyDpopProof(input(around(proof)), deps())).ok).toBe(true);
    }
  });
});

describe('verifyDpopProof: refusals', () => {
  type Case = [string, () => Promise<string | string[] | undefined>, string, string, Partial<DpopProofInput>?];
  const cases: Case[] = [
    ['no DPoP header', async () => undefined, 'header_missing', 'dpop_proof_missing'],
    ['an empty list of lines', async () => [], 'header_missing', 'dpop_proof_missing'],
    ['two DPoP header lines', async () => [await joseProof(), await joseProof()], 'header_repeated', 'dpop_proof_repeated'],
    ['an oversized proof', async () => joseProof({}, { pad: 'x'.repeat(MAX_PROOF_BYTES) }), 'too_large', 'dpop_proof_invalid'],
    ['not a JWS', async () => 'hello', 'compact', 'dpop_proof_invalid'],
    ['two proofs joined by a comma', async () => `${await joseProof()}, ${await joseProof()}`, 'compact', 'dpop_proof_invalid'],
    ['a header that is not JSON', async () => `${b64('{nope')}.${b64({})}.AAAA`, 'header', 'dpop_proof_invalid'],
    // RFC 7515 §4.1.11: no critical extension is understood; RFC 7797 b64 changes the signing input.
    ['crit naming an unknown extension', async () => handSigned({ crit: ['foo'], foo: 1 }), 'header', 'dpop_proof_invalid'],
    ['crit b64 with b64 false', async () => handSigned({ crit: ['b64'], b64: false }), 'header', 'dpop_proof_invalid'],
    ['crit that is not an array', async () => handSigned({ crit: 'notarray' }), 'header', 'dpop_proof_invalid'],
    ['an empty crit', async () => handSigned({ crit: [] }), 'header', 'dpop_proof_invalid'],
    ['b64 without crit', async () => handSigned({ b64: true }), 'header', 'dpop_proof_invalid'],
    ['typ JWT', async () => joseProof({ typ: 'JWT' }), 'typ', 'dpop_proof_invalid'],
    ['typ at+jwt', async () => joseProof({ typ: 'at+jwt' }), 'typ', 'dpop_proof_invalid'],
    ['no typ', async () => joseProof({ typ: undefined }), 'typ', 'dpop_proof_invalid'],
    ['alg none with an empty signature', async () => `${b64({ alg: 'none', typ: 'dpop+jwt', jwk: joseKey.jwk })}.${b64({ jti: 'a', htm: 'GET', htu: HTU, iat: 1 })}.`, 'compact', 'dpop_proof_invalid'],
    ['alg none with a signature', async () => `${b64({ alg: 'none', typ: 'dpop+jwt', jwk: joseKey.jwk })}.${b64({ jti: 'a' })}.AAAA`, 'alg', 'dpop_alg_unsupported'],
    ['HS256 with an oct key', async () => joseProof({ alg: 'HS256', jwk: { kty: 'oct', k: b64('secret-secret-secret-secret-1234') } }, {}, new TextEncoder().encode('secret-secret-secret-secret-1234')), 'alg', 'dpop_alg_unsupported'],
    [
      'ES384, not configured',
      async () => {
        const p384 = await generateKeyPair('ES384', { extractable: true });
        return joseProof({ alg: 'ES384', jwk: await exportJWK(p384.publicKey) }, {}, p384.privateKey);
      },
      'alg',
      'dpop_alg_unsupported',
    ],
    ['ES256 with a P-384 jwk', async () => joseProof({ jwk: await exportJWK((await generateKeyPair('ES384', { extractable: true })).publicKey) }), 'jwk', 'dpop_key_invalid'],
    ['no jwk', async () => joseProof({ jwk: undefined }), 'jwk', 'dpop_key_invalid'],
    ['a kid instead of a jwk', async () => joseProof({ jwk: undefined, kid: 'k1' }), 'jwk', 'dpop_key_invalid'],
    ['a private jwk (d)', async () => joseProof({ jwk: await exportJWK(joseKey.privateKey) }), 'jwk', 'dpop_key_invalid'],
    ['an oct jwk under ES256', async () => joseProof({ jwk: { kty: 'oct', k: 'AAAA' } }), 'jwk', 'dpop_key_invalid'],
    ['an RSA jwk under ES256', async () => joseProof({ jwk: await exportJWK(generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey) }), 'jwk', 'dpop_key_invalid'],
    ['signed by another key than its jwk', async () => joseProof({ jwk: otherJwk }), 'signature', 'dpop_signature_invalid'],
    [
      'a tampered payload',
      async () => {
        const [h, , s] = (await joseProof()).split('.');
        return `${h}.${b64({ jti: 'x', htm: 'GET', htu: HTU, iat: Math.floor(now()), ath: accessTokenHash(TOKEN) })}.${s}`;
      },
      'signature',
      'dpop_signature_invalid',
    ],
    ['a payload that is not JSON', async () => { const [h, , s] = (await joseProof()).split('.'); return `${h}.${b64('not json')}.${s}`; }, 'claims', 'dpop_proof_invalid'],
    ['no jti', async () => joseProof({}, { jti: undefined }), 'claims', 'dpop_proof_invalid'],
    ['a huge jti', async () => joseProof({}, { jti: 'j'.repeat(300) }), 'claims', 'dpop_proof_invalid'],
    ['no htm', async () => joseProof({}, { htm: undefined }), 'claims', 'dpop_proof_invalid'],
    ['iat as text', async () => joseProof({}, { iat: String(Math.floor(now())) }), 'claims', 'dpop_proof_invalid'],
    ['htm POST on a GET', async () => dpop.generateProof(es256, HTU, 'POST', undefined, TOKEN), 'htm', 'dpop_htm_mismatch'],
    ['htm get (methods are case-sensitive)', async () => dpop.generateProof(es256, HTU, 'get', undefined, TOKEN), 'htm', 'dpop_htm_mismatch'],
    ['htu of another path', async () => dpop.generateProof(es256, 'https://api.example/orders/8', 'GET', undefined, TOKEN), 'htu', 'dpop_htu_mismatch'],
    ['htu of another host', async () => dpop.generateProof(es256, 'https://evil.example/orders/7', 'GET', undefined, TOKEN), 'htu', 'dpop_htu_mismatch'],
    ['htu with http instead of https', async () => dpop.generateProof(es256, 'http://api.example/orders/7', 'GET', undefined, TOKEN), 'htu', 'dpop_htu_mismatch'],
    ['htu with another port', async () => dpop.generateProof(es256, 'https://api.example:8443/orders/7', 'GET', undefined, TOKEN), 'htu', 'dpop_htu_mismatch'],
    ['htu that is not a URI', async () => joseProof({}, { htu: '/orders/7' }), 'htu', 'dpop_htu_mismatch'],
    ['ath of another token', async () => dpop.generateProof(es256, HTU, 'GET', undefined, 'another-token'), 'ath', 'dpop_ath_mismatch'],
    ['no ath', async () => dpop.generateProof(es256, HTU, 'GET'), 'ath', 'dpop_ath_mismatch'],
    ['ath padded', async () => joseProof({}, { ath: `${accessTokenHash(TOKEN)}=` }), 'ath', 'dpop_ath_mismatch'],
    ['iat too old', async () => joseProof({}, { iat: Math.floor(now()) - 301 }), 'iat', 'dpop_iat_window'],
    ['iat too far ahead', async () => joseProof({}, { iat: Math.floor(now()) + 7 }), 'iat', 'dpop_iat_window'],
  ];

  it.each(cases)('%s', async (_name, make, check, reason, overrides) => {
    const result = await verifyDpopProof(input(await make(), overrides), deps());
    const seen = refused(result);
    expect(seen).toEqual({ check, reason, status: REASONS[reason as keyof typeof REASONS].status, error: REASONS[reason as keyof typeof REASONS].error });
    expect(seen.error === undefined || ['invalid_dpop_proof'].includes(seen.error)).toBe(true);
  });

  it('refuses a MAC algorithm even when it is configured', async () => {
    const secret = new TextEncoder().encode('secret-secret-secret-secret-1234');
    const proof = await joseProof({ alg: 'HS256', jwk: { kty: 'oct', k: Buffer.from(secret).toString('base64url') } }, {}, secret);
    const policy = { ...POLICY, algorithms: ['HS256', 'ES256'] };
    expect(refused(await verifyDpopProof(input(proof), deps({ policy }))).check).toBe('alg');
    expect(() => checkDpopPolicy(policy)).toThrow(/HS256/);
    expect(() => checkDpopPolicy({ ...POLICY, algorithms: ['none'] })).toThrow(/none/);
    expect(checkDpopPolicy(POLICY)).toBe(POLICY);
  });

  it('accepts iat inside the window at both ends', async () => {
    const t = Math.floor(now());
    for (const iat of [t - 299, t + 4]) expect((await verifyDpopProof(input(await joseProof({}, { iat })), deps())).ok).toBe(true);
  });

  it('accepts typ in its media-type spellings', async () => {
    for (const typ of ['DPoP+JWT', 'application/dpop+jwt']) expect((await verifyDpopProof(input(await joseProof({ typ })), deps())).ok).toBe(true);
  });

  it('never puts the proof or the token into the error', async () => {
    const proof = await dpop.generateProof(es256, 'https://evil.example/', 'GET', undefined, TOKEN);
    const result = await verifyDpopProof(input(proof), deps());
    if (result.ok) throw new Error('expected a refusal');
    const text = JSON.stringify({ message: result.error.message, detail: result.error.detail, description: result.error.description });
    for (const secret of [TOKEN, proof, ...proof.split('.')]) expect(text).not.toContain(secret);
  });
});

describe('verifyDpopProof: replay', () => {
  it('accepts a proof once, in any replica sharing the store', async () => {
    const store = createMemoryReplayStore({ maxEntries: 1000, now });
    const proof = await dpop.generateProof(es256, HTU, 'GET', undefined, TOKEN);
    expect((await verifyDpopProof(input(proof), deps({ replayStore: store }))).ok).toBe(true);
    expect(refused(await verifyDpopProof(input(proof), deps({ replayStore: store })))).toMatchObject({ check: 'replayed', reason: 'dpop_proof_replayed', error: 'invalid_dpop_proof' });
  });

  it('does not let one key burn the jti of another', async () => {
    const store = createMemoryReplayStore({ maxEntries: 1000, now });
    const jti = randomUUID();
    expect((await verifyDpopProof(input(await joseProof({}, { jti })), deps({ replayStore: store }))).ok).toBe(true);
    const other = await generateKeyPair('ES256', { extractable: true });
    const theirs = await joseProof({ jwk: await exportJWK(other.publicKey) }, { jti }, other.privateKey);
    expect((await verifyDpopProof(input(theirs), deps({ replayStore: store }))).ok).toBe(true);
    expect((await verifyDpopProof(input(await joseProof({}, { jti })), deps({ replayStore: store }))).ok).toBe(false);
  });

  it('records a jti only for a proof that passed every other check, until iat + proofMaxAgeSeconds', async () => {
    const calls: [string, number][] = [];
    const store: ReplayStore = { remember: (key, expiresAt) => (calls.push([key, expiresAt]), Promise.resolve(true)) };
    await verifyDpopProof(input(await dpop.generateProof(es256, HTU, 'GET', undefined, 'other-token')), deps({ replayStore: store }));
    await verifyDpopProof(input(await dpop.generateProof(es256, HTU, 'PUT', undefined, TOKEN)), deps({ replayStore: store }));
    expect(calls).toEqual([]);
    const iat = Math.floor(now());
    expect((await verifyDpopProof(input(await joseProof({}, { iat })), deps({ replayStore: store }))).ok).toBe(true);
    expect(calls).toEqual([[expect.stringMatching(/^[A-Za-z0-9_-]{43}$/), iat + 300 + 1]]);
  });

  it('fails closed (503) when the store cannot answer', async () => {
    const down: ReplayStore = { remember: () => Promise.reject(new Error('ECONNREFUSED')) };
    expect(refused(await verifyDpopProof(input(await joseProof()), deps({ replayStore: down })))).toEqual({ check: 'store_unavailable', reason: 'dpop_replay_unavailable', status: 503, error: undefined });
    const throwing: ReplayStore = {
      remember: () => {
        throw new Error('sync');
      },
    };
    expect(refused(await verifyDpopProof(input(await joseProof()), deps({ replayStore: throwing }))).status).toBe(503);
    // The client is told when to try again, as for an AS outage.
    const answer = await verifyDpopProof(input(await joseProof()), deps({ replayStore: down }));
    expect(answer.ok ? undefined : renderError(answer.error, { realm: 'cnfguard' }).headers['retry-after']).toBe('1');
  });
});

describe('verifyDpopProof: nonces', () => {
  const ROTATION = 60;

  it('asks for a nonce, then accepts the one it gave, with no fresh one while it is current', async () => {
    const nonces = createNonceSource({ rotationSeconds: ROTATION, now });
    const first = await verifyDpopProof(input(await dpop.generateProof(es256, HTU, 'GET', undefined, TOKEN)), deps({ nonces }));
    if (first.ok) throw new Error('expected use_dpop_nonce');
    expect(first.reason).toBe('dpop_nonce_required');
    expect(first.error.error).toBe('use_dpop_nonce');
    expect(first.error.status).toBe(401);
    expect(first.error.dpopNonce).toBe(nonces.current());
    const second = await verifyDpopProof(input(await dpop.generateProof(es256, HTU, 'GET', first.error.dpopNonce, TOKEN)), deps({ nonces }));
    expect(second).toEqual({ ok: true, jkt: await dpop.calculateThumbprint(es256.publicKey) });
  });

  it('accepts the previous period nonce and hands out a fresh one; refuses an older or a forged one', async () => {
    let t = 1_800_000_000;
    const clock = () => t;
    const nonces = createNonceSource({ rotationSeconds: ROTATION, now: clock });
    const old = nonces.current();
    t += ROTATION;
    const proof = async (nonce: string) => joseProof({}, { nonce, iat: t });
    const ok = await verifyDpopProof(input(await proof(old)), deps({ nonces, now: clock, replayStore: createMemoryReplayStore({ maxEntries: 1000, now: clock }) }));
    expect(ok).toMatchObject({ ok: true, nonce: nonces.current() });
    expect(nonces.current()).not.toBe(old);
    t += ROTATION;
    expect(refused(await verifyDpopProof(input(await proof(old)), deps({ nonces, now: clock }))).check).toBe('nonce');
    expect(refused(await verifyDpopProof(input(await proof('A'.repeat(22))), deps({ nonces, now: clock }))).check).toBe('nonce');
  });

  it('checks no nonce when nonces are off', async () => {
    expect((await verifyDpopProof(input(await joseProof({}, { nonce: 'anything' })), deps())).ok).toBe(true);
  });
});

describe('jwkThumbprint (RFC 7638)', () => {
  it.each(['ES256', 'ES384', 'PS256', 'EdDSA'] as const)('equals jose for a %s key, extra members ignored', async (alg) => {
    const jwk = await exportJWK((await generateKeyPair(alg, { extractable: true })).publicKey);
    expect(jwkThumbprint({ ...jwk, use: 'sig', alg })).toBe(await calculateJwkThumbprint(jwk, 'sha256'));
  });

  it('the RFC 7638 §3.1 example', () => {
    const n =
      '0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw';
    expect(jwkThumbprint({ kty: 'RSA', n, e: 'AQAB', alg: 'RS256', kid: '2011-04-29' })).toBe('NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs');
  });

  it('undefined when a required member is missing or not a string', () => {
    expect(jwkThumbprint({ kty: 'EC', crv: 'P-256', x: 'AAAA' })).toBeUndefined();
    expect(jwkThumbprint({ kty: 'OKP', crv: 'Ed25519', x: 1 })).toBeUndefined();
    expect(jwkThumbprint({ kty: 'oct', k: 'AAAA' })).toBeUndefined();
  });
});

describe('htu helpers', () => {
  it.each([
    ['HTTPS://API.EXAMPLE/a', 'https://api.example/a'],
    ['https://api.example:443/a', 'https://api.example/a'],
    ['http://api.example:80/a', 'http://api.example/a'],
    ['https://api.example:8443/a', 'https://api.example:8443/a'],
    ['https://api.example', 'https://api.example/'],
    ['https://api.example/a/./b/../c', 'https://api.example/a/c'],
    ['https://api.example/%7euser/%2e%2e/x', 'https://api.example/x'],
    ['https://api.example/a%2fb', 'https://api.example/a%2Fb'],
    ['https://api.example/%61', 'https://api.example/a'],
    ['https://api.example/a?x=1#f', 'https://api.example/a'],
  ])('normalizeHtu(%j) = %j', (uri, normal) => {
    expect(normalizeHtu(uri)).toBe(normal);
  });

  it.each(['/a', 'ftp://api.example/a', 'https://user@api.example/a', 'https://api.example/a b', 'https://api.example/\r\n', 'not a uri'])('normalizeHtu(%j) is undefined', (uri) => {
    expect(normalizeHtu(uri)).toBeUndefined();
  });

  it('builds the expected htu from publicOrigin, else the Host', () => {
    expect(expectedHtu('https://api.example', 'internal:8443', '/a/b?q=1')).toBe('https://api.example/a/b');
    expect(expectedHtu(undefined, 'api.example:8443', '/a')).toBe('https://api.example:8443/a');
  });

  it('treats EdDSA and Ed25519 as one algorithm, and never accepts a MAC', () => {
    expect(algorithmAccepted('Ed25519', ['EdDSA'])).toBe(true);
    expect(algorithmAccepted('EdDSA', ['Ed25519'])).toBe(true);
    expect(algorithmAccepted('HS256', ['HS256'])).toBe(false);
    expect(algorithmAccepted('none', ['none'])).toBe(false);
  });
});

describe('verifyDpopProof: signatures checked on the threadpool', () => {
  /**
   * The types of the async resources whose callbacks ran while `run` was pending. A threadpool
   * job of node:crypto (SIGNREQUEST) calls back; the same job run synchronously never does.
   */
  async function callbacksOf<T>(run: () => Promise<T>): Promise<{ result: T; types: string[] }> {
    const created = new Map<number, string>();
    const types: string[] = [];
    const hook = createHook({ init: (id, type) => void created.set(id, type), before: (id) => void types.push(created.get(id) ?? '?') }).enable();
    try {
      return { result: await run(), types };
    } finally {
      hook.disable();
    }
  }

  it.each([
    ['ES256', () => es256, ['ES256']],
    ['Ed25519 under EdDSA', () => ed25519, ['EdDSA']],
    ['PS256', () => ps256, ['PS256']],
    ['RS256', () => rs256, ['RS256']],
  ] as const)('%s: the same answers as on the event loop, and the check runs on the threadpool', async (_name, keys, algorithms) => {
    const policy = { ...POLICY, algorithms: [...algorithms] };
    const proof = await dpop.generateProof(keys(), HTU, 'GET', undefined, TOKEN);
    const [head, body, signature] = proof.split('.') as [string, string, string];
    // Another character in the middle of the signature: other bits, the same length.
    const at = Math.floor(signature.length / 2);
    const forged = `${head}.${body}.${signature.slice(0, at)}${signature[at] === 'A' ? 'B' : 'A'}${signature.slice(at + 1)}`;
    // The key's first proof imports its JWK (WebCrypto runs jobs of its own); later ones reuse it.
    expect((await verifyDpopProof(input(await dpop.generateProof(keys(), HTU, 'GET', undefined, TOKEN)), deps({ policy }))).ok).toBe(true);
    for (const signatureThread of ['event-loop', 'threadpool'] as const) {
      const { result, types } = await callbacksOf(() => verifyDpopProof(input(proof), deps({ policy, signatureThread })));
      expect(result).toEqual({ ok: true, jkt: await dpop.calculateThumbprint(keys().publicKey) });
      expect(types.includes('SIGNREQUEST')).toBe(signatureThread === 'threadpool');
      expect(refused(await verifyDpopProof(input(forged), deps({ policy, signatureThread })))).toMatchObject({ check: 'signature', reason: 'dpop_signature_invalid', status: 401 });
    }
  });

  it('the same proof sent many times at once is accepted once: checks interleave, the replay store decides', async () => {
    const proof = await dpop.generateProof(es256, HTU, 'GET', undefined, TOKEN);
    const shared = deps({ signatureThread: 'threadpool' });
    const results = await Promise.all(Array.from({ length: 8 }, () => verifyDpopProof(input(proof), shared)));
    expect(results.filter((result) => result.ok)).toHaveLength(1);
    expect(results.filter((result) => !result.ok).map((result) => refused(result).check)).toEqual(Array(7).fill('replayed'));
  });

  it('refuses an ECDSA signature of the wrong length before any threadpool job', async () => {
    const proof = await dpop.generateProof(es256, HTU, 'GET', undefined, TOKEN);
    const { result, types } = await callbacksOf(() => verifyDpopProof(input(proof.slice(0, -4)), deps({ signatureThread: 'threadpool' })));
    expect(refused(result)).toMatchObject({ check: 'signature', reason: 'dpop_signature_invalid' });
    expect(types).not.toContain('SIGNREQUEST');
  });

  it('is chosen only when the process may use more CPUs than it runs event loops', () => {
    expect(signatureThreadFor(2, 1)).toBe('threadpool');
    expect(signatureThreadFor(8, 4)).toBe('threadpool');
    expect(signatureThreadFor(1, 1)).toBe('event-loop');
    expect(signatureThreadFor(4, 4)).toBe('event-loop');
    expect(signatureThreadFor(2, 8)).toBe('event-loop');
  });
});

describe('verifyDpopProof: anything at all (property)', () => {
  const reasons = new Set(Object.keys(REASONS));
  const segment = fc.string({ unit: fc.constantFrom(...'ABCabc012-_'.split('')), minLength: 1, maxLength: 40 });
  const jsonSegment = fc.jsonValue().map((v) => b64(v));
  const candidate = fc.oneof(
    fc.string({ unit: 'binary', maxLength: 200 }),
    fc.tuple(segment, segment, segment).map((parts) => parts.join('.')),
    fc.tuple(jsonSegment, jsonSegment, segment).map((parts) => parts.join('.')),
    fc
      .record({ alg: fc.constantFrom('ES256', 'EdDSA', 'PS256', 'none', 'HS256', 'x'), typ: fc.constantFrom('dpop+jwt', 'jwt'), jwk: fc.oneof(fc.jsonValue(), fc.constant({ kty: 'EC', crv: 'P-256', x: 'AAAA', y: 'AAAA' }), fc.constant({ kty: 'OKP', crv: 'Ed25519', x: '' })) })
      .chain((header) => fc.tuple(fc.constant(b64(header)), jsonSegment, segment).map((parts) => parts.join('.'))),
  );

  it('only ever returns a typed refusal', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(candidate, { minLength: 0, maxLength: 2 }), async (lines) => {
        for (const signatureThread of ['event-loop', 'threadpool'] as const) {
          const result = await verifyDpopProof(input(lines), deps({ signatureThread }));
          expect(result.ok).toBe(false);
          if (!result.ok) expect(reasons.has(result.reason)).toBe(true);
        }
      }),
      { numRuns: 400 },
    );
  });
});

describe('ECDSA signatures as DER (what node:crypto verifies fastest)', () => {
  it.each([
    ['P-256', 32],
    ['P-384', 48],
    ['P-521', 66],
  ] as const)('%s: R || S converts to the DER that verifies, for any signature', (namedCurve, bytes) => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve });
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 64 }), (message) => {
        const raw = sign(null, message, { key: privateKey, dsaEncoding: 'ieee-p1363' });
        const der = ecdsaSignatureToDer(raw, bytes);
        expect(der).toBeDefined();
        expect(verify(null, message, publicKey, der as Buffer)).toBe(true);
      }),
      { numRuns: 60 },
    );
  });

  it('leading zero bytes and high bits: minimal positive INTEGERs; a wrong length is refused', () => {
    const r = Buffer.alloc(32, 0);
    r[31] = 1;
    const s = Buffer.alloc(32, 0xff);
    const der = ecdsaSignatureToDer(Buffer.concat([r, s]), 32) as Buffer;
    expect(der.toString('hex')).toBe(`3026020101022100${'ff'.repeat(32)}`);
    expect(ecdsaSignatureToDer(Buffer.alloc(63), 32)).toBeUndefined();
  });
});

describe('verifyDpopProof: a header seen before', () => {
  it('still needs its own valid signature, and the current policy\'s alg', async () => {
    const good = await joseProof();
    expect((await verifyDpopProof(input(good), deps())).ok).toBe(true);
    const [h, p] = (await joseProof()).split('.');
    const [, , otherSignature] = (await joseProof()).split('.');
    expect(refused(await verifyDpopProof(input(`${h}.${p}.${otherSignature}`), deps())).check).toBe('signature');
    const again = await joseProof();
    expect(refused(await verifyDpopProof(input(again), deps({ policy: { ...POLICY, algorithms: ['EdDSA'] } }))).check).toBe('alg');
    expect((await verifyDpopProof(input(again), deps())).ok).toBe(true);
  });

  it('a header whose signature failed is not remembered', async () => {
    const fresh = await generateKeyPair('ES256', { extractable: true });
    const jwk = await exportJWK(fresh.publicKey);
    // Header of the fresh key, signed by another key: refused, and the header is not taken as known.
    const forged = await joseProof({ jwk }, {}, joseKey.privateKey);
    expect(refused(await verifyDpopProof(input(forged), deps())).check).toBe('signature');
    const [h] = forged.split('.');
    const [, p2, s2] = (await joseProof({ jwk: otherJwk })).split('.');
    expect(refused(await verifyDpopProof(input(`${h}.${p2}.${s2}`), deps())).check).toBe('signature');
    expect((await verifyDpopProof(input(await joseProof({ jwk }, {}, fresh.privateKey)), deps())).ok).toBe(true);
  });
});
