/**
 * The proof-of-possession methods cnfguard knows, in the order they are advertised
 * (`supported_cnf_methods`, challenges, RFC 9728 fields). A new method is one module implementing
 * {@link ProofMethod} (method.ts) and one line here: the config's `methods` enum, the binding
 * check, the proof step, the challenges and the metadata document all read this list.
 */
import { dpop } from './dpop-method.ts';
import { httpsig } from './httpsig.ts';
import type { ChallengeContext, MetadataRoute, ProofMethod } from './method.ts';
import { mtls } from './mtls.ts';

export type { ChallengeContext, MemberCheck, Proof, ProofMethod, ProvenKey } from './method.ts';

/** The registry: one line per method. */
const ENTRIES = [mtls, dpop, httpsig] as const satisfies readonly ProofMethod[];

/** A proof method's id, as routes list it (`methods:`). */
export type ProofMethodId = (typeof ENTRIES)[number]['id'];

export const PROOF_METHODS: readonly ProofMethod<ProofMethodId>[] = ENTRIES;

/** The Authorization scheme of a proof method that has one, lower case (`dpop`). */
export type ProofSchemeName = Extract<(typeof ENTRIES)[number], { readonly scheme: unknown }>['scheme']['name'];

export const PROOF_METHOD_IDS = PROOF_METHODS.map((method) => method.id) as unknown as readonly [ProofMethodId, ...ProofMethodId[]];

/** The methods whose requests use their own Authorization scheme (DPoP), by that scheme's lower-case name. */
const BY_SCHEME: ReadonlyMap<string, ProofMethod> = new Map(PROOF_METHODS.flatMap((method) => (method.scheme === undefined ? [] : [[method.scheme.name, method] as const])));

/** The method a request's Authorization scheme belongs to (`dpop`); undefined for Bearer. */
export function methodOfScheme(scheme: string): ProofMethod<ProofMethodId> | undefined {
  return BY_SCHEME.get(scheme) as ProofMethod<ProofMethodId> | undefined;
}

/** The Authorization schemes of proof methods, lower case (`dpop`). */
export const PROOF_SCHEMES: readonly string[] = [...BY_SCHEME.keys()];

/** Request header fields that carry a per-request proof (`dpop`). */
export const PROOF_HEADERS: ReadonlySet<string> = new Set(PROOF_METHODS.flatMap((method) => method.proofHeaders));

/** Every `cnf` member of each method, worked out once (decide asks on every request with a scheme). */
const MEMBERS: ReadonlyMap<ProofMethod, readonly string[]> = new Map(PROOF_METHODS.map((method) => [method, Object.freeze([method.cnfMember, ...(method.otherCnfMembers ?? [])])]));

/** Every `cnf` member a method verifies: its own, and the other spellings of its key (httpsig: `jwk`, `htsk`). */
export function cnfMembersOf(method: ProofMethod): readonly string[] {
  return MEMBERS.get(method) ?? [method.cnfMember, ...(method.otherCnfMembers ?? [])];
}

/** The `cnf` members of methods with a scheme: a token bound by one needs that scheme (RFC 9449 §7.2). */
export const SCHEME_CNF_MEMBERS: readonly string[] = [...BY_SCHEME.values()].flatMap(cnfMembersOf);

/** Response header fields the challenges of a route accepting `methods` carry (httpsig: `Accept-Signature`). */
export function challengeHeadersFor(methods: readonly string[], context: ChallengeContext): Record<string, string> {
  return Object.assign({}, ...PROOF_METHODS.filter((method) => methods.includes(method.id)).map((method) => method.challengeHeaders?.(context) ?? {})) as Record<string, string>;
}

/** The RFC 9728 fields every method contributes for a resource served by `routes`, in registry order. */
export function metadataFields(routes: readonly MetadataRoute[], context: ChallengeContext): Record<string, unknown> {
  return Object.assign({}, ...PROOF_METHODS.map((method) => method.metadata(routes, context))) as Record<string, unknown>;
}
