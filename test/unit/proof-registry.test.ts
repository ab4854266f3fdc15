/** The proof-method registry (src/proof/registry.ts) is what the config, the binding check and the DPoP caches are built from. */
import * as dpop from 'dpop';
import { describe, expect, it } from 'vitest';
import { verifiersFor } from '../../src/pipeline/binding.ts';
import { createDpopCaches, verifyDpopProof, type DpopDeps } from '../../src/proof/dpop.ts';
import { methodOfScheme, PROOF_HEADERS, PROOF_METHOD_IDS, PROOF_METHODS } from '../../src/proof/registry.ts';
import { createMemoryReplayStore } from '../../src/state/replay-store.ts';
import { minimalSettings } from '../fixtures/config.ts';

describe('proof-method registry', () => {
  it('gives the config its methods enum: every registered id is accepted, any other refused naming them', () => {
    expect(minimalSettings({ methods: [...PROOF_METHOD_IDS] }).methods).toEqual([...PROOF_METHOD_IDS]);
    let refusal = '';
    try {
      minimalSettings({ methods: ['gnap'] });
    } catch (err) {
      refusal = String(err);
    }
    for (const id of PROOF_METHOD_IDS) expect(refusal).toContain(`"${id}"`);
  });

  it('holds methods with distinct ids, cnf members and schemes, each with a verifier, and a check for each scheme', () => {
    expect(new Set(PROOF_METHODS.map((method) => method.id)).size).toBe(PROOF_METHODS.length);
    expect(new Set(PROOF_METHODS.map((method) => method.cnfMember)).size).toBe(PROOF_METHODS.length);
    // One verifier per cnf member a method verifies (httpsig: jwk and htsk).
    expect(verifiersFor(PROOF_METHOD_IDS).map((verifier) => verifier.member)).toEqual(PROOF_METHODS.flatMap((method) => [method.cnfMember, ...(method.otherCnfMembers ?? [])]));
    expect(PROOF_METHOD_IDS).toEqual(['mtls', 'dpop', 'httpsig']);
    for (const method of PROOF_METHODS) {
      if (method.scheme === undefined) continue;
      expect(methodOfScheme(method.scheme.name)).toBe(method);
      expect(method.check).toBeTypeOf('function');
    }
    expect(methodOfScheme('bearer')).toBeUndefined();
    expect([...PROOF_HEADERS]).toEqual(['dpop', 'signature', 'signature-input']);
  });
});

describe('DPoP caches: built by whoever composes the check, never shared through the module', () => {
  const HTU = 'https://api.example/a';
  const TOKEN = 'opaque-token';
  const now = () => Date.now() / 1000;
  const deps = (caches?: DpopDeps['caches']): DpopDeps => ({ policy: { algorithms: ['ES256'], proofMaxAgeSeconds: 300, clockSkewSeconds: 5 }, replayStore: createMemoryReplayStore({ maxEntries: 100, now }), now, caches });

  it('remembers a verified proof header in the caches it was given only', async () => {
    const key = await dpop.generateKeyPair('ES256');
    const mine = createDpopCaches();
    const theirs = createDpopCaches();
    const check = async (caches?: DpopDeps['caches']) => verifyDpopProof({ headerLines: [await dpop.generateProof(key, HTU, 'GET', undefined, TOKEN)], method: 'GET', htu: HTU, accessToken: TOKEN }, deps(caches));
    expect((await check(mine)).ok).toBe(true);
    expect(mine.knownHeaders.size).toBe(1);
    expect(theirs.knownHeaders.size).toBe(0);
    // Without caches a proof is checked the whole way every time, and nothing is remembered anywhere.
    expect((await check()).ok).toBe(true);
    expect((await check(theirs)).ok).toBe(true);
    expect(mine.knownHeaders.size).toBe(1);
    expect(theirs.knownHeaders.size).toBe(1);
  });
});
