/**
 * Step (pure): does the token's confirmation (`cnf`, RFC 7800) match the proof the request
 * brings? Each confirmation method is one verifier; a token may carry several members, and
 * every member must be verified (RFC 7800 §3.1 says `cnf` names one key, so several members
 * means the token demands all of their proofs, never just one of them).
 */
import { timingSafeEqual } from 'node:crypto';
import type { ClientCertificate } from './client-cert.ts';

/** What a request offers as proof of possession. */
export interface Proof {
  certificate: ClientCertificate | undefined;
}

export type MemberCheck = 'match' | 'mismatch' | 'missing';

/** One confirmation method: `x5t#S256` today; DPoP's `jkt` plugs in as another. */
export interface ConfirmationVerifier {
  readonly member: string;
  verify(value: unknown, proof: Proof): MemberCheck;
}

/** Compares two base64url thumbprints as bytes, in constant time. */
export function thumbprintsEqual(expected: string, actual: string): boolean {
  const a = Buffer.from(expected, 'base64url');
  const b = Buffer.from(actual, 'base64url');
  // Buffer.from drops characters outside the alphabet: both must be the canonical spelling.
  if (a.length !== 32 || b.length !== 32 || a.toString('base64url') !== expected || b.toString('base64url') !== actual) return false;
  return timingSafeEqual(a, b);
}

/** RFC 8705 §3: the SHA-256 thumbprint of the certificate on the connection. */
export const x5tS256Verifier: ConfirmationVerifier = {
  member: 'x5t#S256',
  verify(value, proof) {
    if (proof.certificate === undefined) return 'missing';
    return typeof value === 'string' && thumbprintsEqual(value, proof.certificate.thumbprint) ? 'match' : 'mismatch';
  },
};

export const DEFAULT_VERIFIERS: readonly ConfirmationVerifier[] = [x5tS256Verifier];

export type BindingOutcome =
  | { kind: 'bound' }
  | { kind: 'unbound' }
  | { kind: 'failed'; reason: 'certificate_missing' | 'certificate_mismatch' | 'cnf_unsupported'; detail: string };

/**
 * Checks every `cnf` member against the proof. A member no verifier knows fails the token
 * (`cnf_unsupported`) under `reject`: a token bound by a method cnfguard cannot check is not a
 * bearer token. Under `ignore` such members are passed over, and a token with no other member is
 * judged as unbound. A mismatch outranks a missing proof, so a stolen token is reported as stolen.
 */
export function checkBinding(
  cnf: Readonly<Record<string, unknown>> | undefined,
  proof: Proof,
  verifiers: readonly ConfirmationVerifier[] = DEFAULT_VERIFIERS,
  unknownMethods: 'reject' | 'ignore' = 'reject',
): BindingOutcome {
  const members = cnf === undefined ? [] : Object.keys(cnf);
  let missing: string | undefined;
  let verified = 0;
  for (const member of members) {
    const verifier = verifiers.find((v) => v.member === member);
    if (verifier === undefined) {
      if (unknownMethods === 'ignore') continue;
      return { kind: 'failed', reason: 'cnf_unsupported', detail: `cnf member ${member.slice(0, 40)}` };
    }
    verified++;
    const result = verifier.verify(cnf?.[member], proof);
    if (result === 'mismatch') return { kind: 'failed', reason: 'certificate_mismatch', detail: `${member} mismatch` };
    if (result === 'missing') missing ??= member;
  }
  if (missing !== undefined) return { kind: 'failed', reason: 'certificate_missing', detail: `${missing} proof missing` };
  return verified === 0 ? { kind: 'unbound' } : { kind: 'bound' };
}
