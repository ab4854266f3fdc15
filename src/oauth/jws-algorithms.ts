/**
 * The asymmetric JWS algorithms (RFC 7518 §3; RFC 8037; RFC 9864 for `Ed25519`) cnfguard accepts
 * anywhere: DPoP proofs (RFC 9449 §4.3 step 4) and JWT access tokens (RFC 9068 §4). Never `none`,
 * never a MAC. The one list: the config schema, the JWT validator and the DPoP check read it.
 */
export const ASYMMETRIC_JWS_ALGORITHMS = ['ES256', 'ES384', 'ES512', 'PS256', 'PS384', 'PS512', 'RS256', 'RS384', 'RS512', 'EdDSA', 'Ed25519'] as const;
export type AsymmetricJwsAlgorithm = (typeof ASYMMETRIC_JWS_ALGORITHMS)[number];

const ASYMMETRIC: ReadonlySet<string> = new Set(ASYMMETRIC_JWS_ALGORITHMS);

export function isAsymmetricJwsAlgorithm(alg: string): alg is AsymmetricJwsAlgorithm {
  return ASYMMETRIC.has(alg);
}
