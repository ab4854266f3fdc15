/**
 * DPoP (RFC 9449) as a proof method: the token's `cnf.jkt` is the RFC 7638 thumbprint of the key
 * that signed the request's `DPoP` proof, checked by verifyDpopProof (dpop.ts) with the
 * Authorization scheme `DPoP`.
 */
import { verifyDpopProof, type DpopDeps } from './dpop.ts';
import type { ProofMethod, ProvenKey } from './method.ts';

export const dpop = {
  id: 'dpop',
  cnfMember: 'jkt',
  scheme: { name: 'dpop', challenge: 'DPoP', unboundReason: 'dpop_token_unbound' },
  proofHeaders: ['dpop'],
  forwardsThumbprint: true,
  missingReason: 'dpop_proof_missing',
  mismatchReason: 'dpop_key_mismatch',
  provenKey: (proof) => (proof.dpop as ProvenKey | undefined)?.jkt,
  async check(request, deps) {
    const checked = await verifyDpopProof({ headerLines: request.lines('dpop'), method: request.method, htu: request.uri, accessToken: request.accessToken }, deps.dpop as DpopDeps);
    return checked.ok ? { ok: true, key: { jkt: checked.jkt }, nonce: checked.nonce } : { ok: false, error: checked.error };
  },
  /** RFC 9449 §7.1: `algs`, the accepted proof algorithms (dpop.algorithms). */
  challengeParams: ({ dpopAlgorithms = [] }) => (dpopAlgorithms.length > 0 ? [['algs', dpopAlgorithms.join(' ')]] : []),
  /**
   * RFC 9449 §5.1: `dpop_signing_alg_values_supported` when a route of the resource accepts DPoP;
   * `dpop_bound_access_tokens_required: true` when every route of it accepts DPoP alone under
   * `binding: required`, so a client is told "DPoP" only when nothing else would be let through.
   */
  metadata(routes, { dpopAlgorithms = [] }) {
    const accepted = routes.some((route) => route.methods.includes('dpop'));
    const required = routes.length > 0 && routes.every((route) => route.binding === 'required' && route.methods.length === 1 && route.methods[0] === 'dpop');
    return {
      ...(accepted && dpopAlgorithms.length > 0 && { dpop_signing_alg_values_supported: [...dpopAlgorithms] }),
      ...(required && { dpop_bound_access_tokens_required: true }),
    };
  },
} as const satisfies ProofMethod<'dpop'>;
