/**
 * The httpsig proof method (src/proof/httpsig.ts, httpsig-key.ts) on plain data: the key forms a
 * token may name, and a property: changing any byte a signature covers (the method, the target
 * URI, the Authorization value, the Content-Digest, the body through its digest, the signature
 * parameters) of a valid request is refused.
 */
import { createHash, generateKeyPairSync, sign } from 'node:crypto';
import fc from 'fast-check';
import { LRUCache } from 'lru-cache';
import { describe, expect, it } from 'vitest';
import { decide } from '../../src/pipeline/decide.ts';
import { checkHttpsigFields, createHttpsigDeps, DEFAULT_HTTPSIG_POLICY, type HttpsigDeps } from '../../src/proof/httpsig.ts';
import type { ProofCheck, ProofRequest } from '../../src/proof/method.ts';
import { createMemoryReplayStore, createSharedReplayStore } from '../../src/state/replay-store.ts';
import { StoreUnavailableError } from '../../src/state/kv.ts';
import { httpsigKey } from '../fixtures/httpsig-clients.ts';
import type { TokenInfo } from '../../src/introspection/token-info.ts';
import { compileRoutes } from '../../src/pipeline/route.ts';
import { minimalSettings } from '../fixtures/config.ts';

const tokenInfo = (overrides: Partial<TokenInfo>): TokenInfo => ({ active: true, subject: 's', clientId: 'c', scope: undefined, tokenType: undefined, exp: undefined, nbf: undefined, iss: undefined, aud: [], cnf: undefined, acr: undefined, authTime: undefined, claims: {}, ...overrides });

const NOW = 1_800_000_000;
const deps = (): HttpsigDeps => createHttpsigDeps({ replayStore: createMemoryReplayStore({ maxEntries: 10_000, now: () => NOW }), now: () => NOW, keys: new LRUCache({ max: 100 }) });

interface Parts {
  method: string;
  targetUri: string;
  authorization: string;
  digest: string;
  body: Buffer;
  input: string;
  signature: string;
}

const { privateKey, publicKey } = generateKeyPairSync('ed25519');
const CNF = { jwk: { ...publicKey.export({ format: 'jwk' }), alg: 'Ed25519' } };

/** A valid signed POST with a body. */
function validParts(nonce: string): Parts {
  const body = Buffer.from('{"amount":100,"to":"acct-1"}');
  const digest = `sha-256=:${createHash('sha256').update(body).digest('base64')}:`;
  const params = `("@method" "@target-uri" "authorization" "content-digest");created=${NOW};nonce="${nonce}";tag="httpsig-oauth"`;
  const parts = { method: 'POST', targetUri: 'https://api.test/pay?x=1', authorization: 'HTTPSig tok-123', digest, body };
  const base = `"@method": ${parts.method}\n"@target-uri": ${parts.targetUri}\n"authorization": ${parts.authorization}\n"content-digest": ${digest}\n"@signature-params": ${params}`;
  return { ...parts, input: `sig1=${params}`, signature: `sig1=:${sign(null, Buffer.from(base), privateKey).toString('base64')}:` };
}

function requestOf(p: Parts): ProofRequest {
  const fields: Record<string, string> = { authorization: p.authorization, 'content-digest': p.digest, 'signature-input': p.input, signature: p.signature };
  return { lines: (name) => (fields[name] === undefined ? undefined : [fields[name]]), method: p.method, uri: p.targetUri.split('?')[0] as string, targetUri: p.targetUri, body: { kind: 'read', bytes: p.body }, accessToken: 'tok-123' };
}

async function run(p: Parts, d = deps(), cnf: Record<string, unknown> = CNF): Promise<ProofCheck> {
  const fields = checkHttpsigFields(requestOf(p), d);
  return fields.ok && 'confirm' in fields ? fields.confirm(cnf) : fields;
}

const reason = (check: ProofCheck) => (check.ok ? 'ok' : check.error.reason);

describe('the httpsig check', () => {
  it('accepts the valid request once, then refuses its nonce', async () => {
    const d = deps();
    const parts = validParts('n-1');
    expect(reason(await run(parts, d))).toBe('ok');
    expect(reason(await run(parts, d))).toBe('httpsig_nonce_replayed');
  });

  it('the shared store down under fail-closed is httpsig_replay_unavailable (503, Retry-After), as documented', async () => {
    const down = { up: false, get: () => Promise.reject(new StoreUnavailableError('unreachable')), set: () => Promise.reject(new StoreUnavailableError('unreachable')), setIfAbsent: () => Promise.reject(new Error('shared state deadline')) };
    const replayStore = createSharedReplayStore(down, { onUnavailable: 'fail-closed', fallback: createMemoryReplayStore({ maxEntries: 10, now: () => NOW }), now: () => NOW * 1000 });
    const check = await run(validParts('n-down'), createHttpsigDeps({ replayStore, now: () => NOW, keys: new LRUCache({ max: 100 }) }));
    expect(check.ok ? undefined : { reason: check.error.reason, status: check.error.status, retryAfter: check.error.retryAfterSeconds }).toEqual({ reason: 'httpsig_replay_unavailable', status: 503, retryAfter: 1 });
  });

  it('property: changing any covered byte of a valid request is refused', async () => {
    const fieldNames = ['method', 'targetUri', 'authorization', 'digest', 'body', 'input'] as const;
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...fieldNames), fc.nat(), fc.integer({ min: 0x21, max: 0x7e }), async (field, at, byte) => {
        const parts = validParts('n-prop');
        const original = Buffer.from(parts[field]);
        const index = at % original.length;
        fc.pre(original[index] !== byte);
        const changed = Buffer.from(original);
        changed[index] = byte;
        const mutated = { ...parts, [field]: field === 'body' ? changed : changed.toString('latin1') };
        // A fresh store each time: the refusal is the change's, never a replayed nonce.
        expect(reason(await run(mutated))).not.toBe('ok');
      }),
      { numRuns: Number(process.env.FUZZ_RUNS ?? 500) },
    );
  });

  it('is the key the token names, in either form, and no other', async () => {
    const p256 = httpsigKey('ecdsa-p256-sha256', 'htsk');
    expect(reason(await run(validParts('a'), deps(), p256.cnf))).toBe('httpsig_signature_invalid');
    expect(reason(await run(validParts('b'), deps(), {}))).toBe('httpsig_token_unbound');
    expect(reason(await run(validParts('c'), deps(), { ...CNF, ...p256.cnf }))).toBe('httpsig_key_invalid');
    expect(reason(await run(validParts('d'), deps(), { jwk: { ...CNF.jwk, alg: 'EdDSA' } }))).toBe('httpsig_key_invalid');
    expect(reason(await run(validParts('e'), deps(), { jwk: { ...CNF.jwk, alg: undefined } }))).toBe('httpsig_key_invalid');
    expect(reason(await run(validParts('f'), deps(), { jwk: { ...CNF.jwk, d: 'AAAA' } }))).toBe('httpsig_key_invalid');
    expect(reason(await run(validParts('g'), deps(), { htsk: { alg: 'ed25519', pub: 'AAAA' } }))).toBe('httpsig_key_invalid');
    const edOnly = { ...deps(), policy: { ...DEFAULT_HTTPSIG_POLICY, algorithms: ['ecdsa-p256-sha256' as const] } };
    expect(reason(await run(validParts('h'), edOnly))).toBe('httpsig_alg_unsupported');
    // The same Ed25519 key as cnf.htsk verifies.
    const raw = Buffer.from(CNF.jwk.x as string, 'base64url').toString('base64url');
    expect(reason(await run(validParts('i'), deps(), { htsk: { alg: 'ed25519', pub: raw } }))).toBe('ok');
  });
});

describe('deciding httpsig-bound tokens', () => {
  const policy = compileRoutes(minimalSettings({ methods: ['mtls', 'httpsig'] })).fallback;
  it('an httpsig-bound token sent as Bearer is a downgrade, refused whatever its cnf spelling', () => {
    for (const cnf of [{ jwk: CNF.jwk }, { htsk: { alg: 'ed25519', pub: 'x' } }]) {
      const decision = decide({ token: tokenInfo({ cnf }), certificate: undefined, policy, now: NOW, scheme: 'bearer' });
      expect(decision.allow ? 'allow' : decision.error.reason).toBe('token_type_unsupported');
    }
  });
});

describe('cnfguard check', () => {
  it('warns of httpsig routes behind the decision API (bodies cannot be checked there), and only then', async () => {
    const { configWarnings } = await import('../../src/config/checks.ts');
    const paths = (extra: Record<string, unknown>) => configWarnings(minimalSettings(extra)).filter((w) => w.path === 'decisionApi').map((w) => w.message.split(' accept')[0]);
    expect(paths({ decisionApi: { host: '127.0.0.1', port: 0 }, routes: [{ pathPrefix: '/sig', methods: ['httpsig'] }] })).toEqual(['routes[0]']);
    expect(paths({ decisionApi: { host: '127.0.0.1', port: 0 }, methods: ['mtls', 'httpsig'] })).toEqual(['the default route']);
    expect(paths({ routes: [{ pathPrefix: '/sig', methods: ['httpsig'] }] })).toEqual([]);
    expect(paths({ decisionApi: { host: '127.0.0.1', port: 0 } })).toEqual([]);
  });
});
