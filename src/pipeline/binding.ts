/**
 * Step (pure): does the token's confirmation (`cnf`, RFC 7800) match the proof the request
 * brings? Each confirmation method is one verifier; a token may carry several members, and
 * every member must be verified (RFC 7800 §3.1 says `cnf` names one key, so several members
 * means the token demands all of their proofs, never just one of them).
 */
import { thumbprintsEqual } from '../tls/certificates.ts';
import type { ClientCertificate } from './client-cert.ts';

export { thumbprintsEqual } from '../tls/certificates.ts';

/** What a request offers as proof of possession. */
export interface Proof {
  certificate: ClientCertificate | undefined;
  /** A DPoP proof that passed verifyDpopProof: its key's RFC 7638 thumbprint. */
  dpop?: { readonly jkt: string } | undefined;
}

/** Why a binding failed: the proof is absent, or it names another key. */
export type BindingFailure = 'certificate_missing' | 'certificate_mismatch' | 'dpop_proof_missing' | 'dpop_key_mismatch';

export type MemberCheck = 'match' | 'mismatch' | 'missing';

/** One confirmation method: a `cnf` member and how to check it against the request's proof. */
export interface ConfirmationVerifier {
  readonly member: string;
  /** The proof method this member belongs to: logged and counted when it verified a request. */
  readonly method: 'mtls' | 'dpop';
  verify(value: unknown, proof: Proof): MemberCheck;
  /** Reason ids for this method's failures; default the certificate ones. */
  readonly missingReason?: BindingFailure;
  readonly mismatchReason?: BindingFailure;
}

/** RFC 8705 §3: the SHA-256 thumbprint of the certificate on the connection. */
export const x5tS256Verifier: ConfirmationVerifier = {
  member: 'x5t#S256',
  method: 'mtls',
  verify(value, proof) {
    if (proof.certificate === undefined) return 'missing';
    return typeof value === 'string' && thumbprintsEqual(value, proof.certificate.thumbprint) ? 'match' : 'mismatch';
  },
};

/** RFC 9449 §6: the thumbprint of the verified DPoP proof's key. */
export const jktVerifier: ConfirmationVerifier = {
  member: 'jkt',
  method: 'dpop',
  missingReason: 'dpop_proof_missing',
  mismatchReason: 'dpop_key_mismatch',
  verify(value, proof) {
    if (proof.dpop === undefined) return 'missing';
    return typeof value === 'string' && thumbprintsEqual(value, proof.dpop.jkt) ? 'match' : 'mismatch';
  },
};

/** The verifiers of mTLS alone: what a route with the default `methods: [mtls]` checks. */
export const DEFAULT_VERIFIERS: readonly ConfirmationVerifier[] = [x5tS256Verifier];

/** Which verifiers each proof method brings. */
export const VERIFIERS_BY_METHOD: Readonly<Record<'mtls' | 'dpop', readonly ConfirmationVerifier[]>> = Object.freeze({
  mtls: [x5tS256Verifier],
  dpop: [jktVerifier],
});

/** The verifiers for a route's methods: members of other methods are then unknown (cnf.unknownMethods). */
export function verifiersFor(methods: readonly ('mtls' | 'dpop')[]): readonly ConfirmationVerifier[] {
  // A route's methods array lives as long as the route: its verifiers are worked out once.
  let verifiers = verifiersOfMethods.get(methods);
  if (verifiers === undefined) {
    verifiers = methods.flatMap((method) => VERIFIERS_BY_METHOD[method]);
    verifiersOfMethods.set(methods, verifiers);
  }
  return verifiers;
}
const verifiersOfMethods = new WeakMap<readonly ('mtls' | 'dpop')[], readonly ConfirmationVerifier[]>();

export type BindingOutcome =
  /** Every member verified; `methods`: the proof methods that verified them, sorted. */
  | { kind: 'bound'; methods: readonly ('mtls' | 'dpop')[] }
  | { kind: 'unbound' }
  | { kind: 'failed'; reason: BindingFailure | 'cnf_unsupported'; detail: string };

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
  let missing: ConfirmationVerifier | undefined;
  const methods: ('mtls' | 'dpop')[] = [];
  for (const member of members) {
    const verifier = verifiers.find((v) => v.member === member);
    if (verifier === undefined) {
      if (unknownMethods === 'ignore') continue;
      return { kind: 'failed', reason: 'cnf_unsupported', detail: `cnf member ${member.slice(0, 40)}` };
    }
    if (!methods.includes(verifier.method)) methods.push(verifier.method);
    const result = verifier.verify(cnf?.[member], proof);
    if (result === 'mismatch') return { kind: 'failed', reason: verifier.mismatchReason ?? 'certificate_mismatch', detail: `${member} mismatch` };
    if (result === 'missing') missing ??= verifier;
  }
  if (missing !== undefined) return { kind: 'failed', reason: missing.missingReason ?? 'certificate_missing', detail: `${missing.member} proof missing` };
  return methods.length === 0 ? { kind: 'unbound' } : { kind: 'bound', methods: methods.sort() };
}
