/**
 * Step (pure): does the token's confirmation (`cnf`, RFC 7800) match the proof the request
 * brings? Each proof method of the registry (src/proof/registry.ts) is one verifier; a token may carry several members, and
 * every member must be verified (RFC 7800 §3.1 says `cnf` names one key, so several members
 * means the token demands all of their proofs, never just one of them).
 */
import type { BindingEvidence } from '../oauth/reasons.ts';
import { cnfMembersOf, PROOF_METHODS, type MemberCheck, type Proof, type ProofMethod, type ProofMethodId } from '../proof/registry.ts';
import { thumbprintsEqual } from '../tls/certificates.ts';

export { thumbprintsEqual } from '../tls/certificates.ts';

export type { MemberCheck, Proof } from '../proof/registry.ts';

/** Why a binding failed: the proof is absent, or it names another key (each method's own reason ids). */
export type BindingFailure = ProofMethod['missingReason'] | ProofMethod['mismatchReason'];

/** One confirmation method: a `cnf` member and how to check it against the request's proof. */
export interface ConfirmationVerifier {
  readonly member: string;
  /** The proof method this member belongs to: logged and counted when it verified a request. */
  readonly method: ProofMethodId;
  verify(value: unknown, proof: Proof): MemberCheck;
  /** The thumbprint the request presented for this member (logged at debug on a failure). */
  presented?(proof: Proof): string | undefined;
  /** Reason ids for this method's failures; default the certificate ones. */
  readonly missingReason?: BindingFailure;
  readonly mismatchReason?: BindingFailure;
}

/** A proof method's `cnf` member as a verifier: the member must name the key the request proved by that method. */
export function verifierOf(method: ProofMethod<ProofMethodId>, member: string = method.cnfMember): ConfirmationVerifier {
  return {
    member,
    method: method.id,
    missingReason: method.missingReason,
    mismatchReason: method.mismatchReason,
    presented: (proof) => method.provenKey(proof),
    verify(value, proof) {
      const key = method.provenKey(proof);
      if (key === undefined) return 'missing';
      const named = method.memberKey === undefined ? value : method.memberKey(member, value);
      return typeof named === 'string' && thumbprintsEqual(named, key) ? 'match' : 'mismatch';
    },
  };
}

/** Which verifiers each proof method brings (one per `cnf` member it verifies), by method id. */
export const VERIFIERS_BY_METHOD: Readonly<Record<ProofMethodId, readonly ConfirmationVerifier[]>> = Object.freeze(
  Object.fromEntries(PROOF_METHODS.map((method) => [method.id, cnfMembersOf(method).map((member) => verifierOf(method, member))])) as unknown as Record<ProofMethodId, readonly ConfirmationVerifier[]>,
);

/** RFC 8705 §3: the SHA-256 thumbprint of the certificate on the connection. */
export const x5tS256Verifier: ConfirmationVerifier = VERIFIERS_BY_METHOD.mtls[0] as ConfirmationVerifier;

/** RFC 9449 §6: the thumbprint of the verified DPoP proof's key. */
export const jktVerifier: ConfirmationVerifier = VERIFIERS_BY_METHOD.dpop[0] as ConfirmationVerifier;

/** The verifiers of mTLS alone: what a route with the default `methods: [mtls]` checks. */
export const DEFAULT_VERIFIERS: readonly ConfirmationVerifier[] = [x5tS256Verifier];

/** The verifiers for a route's methods: members of other methods are then unknown (cnf.unknownMethods). */
export function verifiersFor(methods: readonly ProofMethodId[]): readonly ConfirmationVerifier[] {
  // A route's methods array lives as long as the route: its verifiers are worked out once.
  let verifiers = verifiersOfMethods.get(methods);
  if (verifiers === undefined) {
    verifiers = methods.flatMap((method) => VERIFIERS_BY_METHOD[method]);
    verifiersOfMethods.set(methods, verifiers);
  }
  return verifiers;
}
const verifiersOfMethods = new WeakMap<readonly ProofMethodId[], readonly ConfirmationVerifier[]>();

export type BindingOutcome =
  /** Every member verified; `methods`: the proof methods that verified them, sorted. */
  | { kind: 'bound'; methods: readonly ProofMethodId[] }
  | { kind: 'unbound' }
  | { kind: 'failed'; reason: BindingFailure | 'cnf_unsupported'; detail: string; evidence?: BindingEvidence };

/** The compared values, cut to a thumbprint's length at most (the cnf value is the AS's, not checked for shape). */
function evidenceOf(verifier: ConfirmationVerifier, value: unknown, proof: Proof): BindingEvidence {
  return { member: verifier.member, presented: verifier.presented?.(proof)?.slice(0, 128), bound: typeof value === 'string' ? value.slice(0, 128) : undefined };
}

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
  const methods: ProofMethodId[] = [];
  for (const member of members) {
    const verifier = verifiers.find((v) => v.member === member);
    if (verifier === undefined) {
      if (unknownMethods === 'ignore') continue;
      return { kind: 'failed', reason: 'cnf_unsupported', detail: `cnf member ${member.slice(0, 40)}` };
    }
    if (!methods.includes(verifier.method)) methods.push(verifier.method);
    const result = verifier.verify(cnf?.[member], proof);
    if (result === 'mismatch') return { kind: 'failed', reason: verifier.mismatchReason ?? 'certificate_mismatch', detail: `${member} mismatch`, evidence: evidenceOf(verifier, cnf?.[member], proof) };
    if (result === 'missing') missing ??= verifier;
  }
  if (missing !== undefined) return { kind: 'failed', reason: missing.missingReason ?? 'certificate_missing', detail: `${missing.member} proof missing`, evidence: evidenceOf(missing, cnf?.[missing.member], proof) };
  return methods.length === 0 ? { kind: 'unbound' } : { kind: 'bound', methods: methods.sort() };
}
