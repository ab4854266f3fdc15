/**
 * mTLS certificate-bound access tokens (RFC 8705 §3): the token's `cnf.x5t#S256` is the SHA-256
 * thumbprint of the client certificate on the connection (or a trusted proxy's forwarded one).
 * No per-request proof and no scheme of its own: such tokens travel as Bearer.
 */
import type { ProofMethod } from './method.ts';

export const mtls = {
  id: 'mtls',
  cnfMember: 'x5t#S256',
  proofHeaders: [],
  missingReason: 'certificate_missing',
  mismatchReason: 'certificate_mismatch',
  provenKey: (proof) => proof.certificate?.thumbprint,
  /**
   * RFC 9728 §2: `tls_client_certificate_bound_access_tokens: true` when a route of the resource
   * accepts mtls and enforces the binding of bound tokens (`required` or `optional`; report-only and off do not).
   */
  metadata: (routes) => (routes.some((route) => route.methods.includes('mtls') && (route.binding === 'required' || route.binding === 'optional')) ? { tls_client_certificate_bound_access_tokens: true } : {}),
} as const satisfies ProofMethod<'mtls'>;
