/**
 * What a proof-of-possession method is to cnfguard: the one interface each method implements
 * (mtls.ts, dpop-method.ts), listed in registry.ts. Everything per method the rest of cnfguard
 * needs (the `cnf` member it verifies, the Authorization scheme its requests use, its per-request
 * proof check, its challenge parameters and RFC 9728 fields, its proof header fields) is read from
 * here; nothing outside src/proof names a method.
 */
import type { GuardError, ReasonId } from '../oauth/reasons.ts';

/** How one `cnf` member compares with what the request proved. */
export type MemberCheck = 'match' | 'mismatch' | 'missing';

/** The key a per-request proof verified: its RFC 7638 thumbprint. */
export interface ProvenKey {
  readonly jkt: string;
}

/**
 * What a request offers as proof of possession: the connection's certificate, and the key each
 * per-request proof verified, by method id (`dpop`).
 */
export interface Proof {
  readonly certificate: { readonly thumbprint: string } | undefined;
  readonly [method: string]: ProvenKey | { readonly thumbprint: string } | undefined;
}

/** What a per-request proof is checked against: the request as the client sent it. */
export interface ProofRequest {
  /** Every line of a request header field, by lower-case name (`dpop`). */
  readonly lines: (name: string) => readonly string[] | undefined;
  /** The request method as received. */
  readonly method: string;
  /** The URI the client called (the route's `publicOrigin`, else https://Host, and the path). */
  readonly uri: string;
  /** The same with the query as received: RFC 9421's `@target-uri`. */
  readonly targetUri: string;
  /**
   * The request body, for a method that reads it ({@link ProofMethod.readsBody}): none sent, read
   * (within the method's limit), or not available here (the decision API: the front keeps it).
   */
  readonly body: { readonly kind: 'none' } | { readonly kind: 'read'; readonly bytes: Buffer } | { readonly kind: 'unavailable' };
  /** The access token the request carries. */
  readonly accessToken: string;
}

export type ProofCheck =
  | { readonly ok: true; readonly key: ProvenKey; /** A fresh nonce for the answer (DPoP-Nonce). */ readonly nonce?: string | undefined }
  /**
   * The proof is well formed, but its key is the token's (HTTP Message Signatures: `cnf.jwk`):
   * `confirm` finishes the check once the token is validated, with its `cnf`.
   */
  | { readonly ok: true; readonly confirm: (cnf: Readonly<Record<string, unknown>> | undefined) => Promise<ProofCheck> }
  | { readonly ok: false; readonly error: GuardError };

/** The settings a method's challenge parameters and metadata fields are taken from. */
export interface ChallengeContext {
  /** `dpop.algorithms`: DPoP's `algs` (RFC 9449 §7.1) and `dpop_signing_alg_values_supported`. */
  readonly dpopAlgorithms?: readonly string[] | undefined;
  /** `httpsig.requiredComponents`: named in `Accept-Signature` beside the profile's own. */
  readonly httpsigComponents?: readonly string[] | undefined;
}

/** What the RFC 9728 fields are computed from: the routes of one resource. */
export interface MetadataRoute {
  readonly methods: readonly string[];
  readonly binding: string;
}

export interface ProofMethod<Id extends string = string> {
  readonly id: Id;
  /** The token's `cnf` member (RFC 7800 §3.1) this method verifies. */
  readonly cnfMember: string;
  /** Further `cnf` members naming this method's key another way (httpsig: `htsk` beside `jwk`). */
  readonly otherCnfMembers?: readonly string[];
  /**
   * The key a `cnf` member's value names, as {@link provenKey} spells a proven one (a base64url
   * SHA-256); default: the value itself (a thumbprint).
   */
  memberKey?(member: string, value: unknown): string | undefined;
  /** Whether the proven key is forwarded as `headers.dpopThumbprint` (DPoP's RFC 7638 thumbprint). */
  readonly forwardsThumbprint?: boolean;
  /** Whether the per-request check reads the request body (then buffered up to the method's limit). */
  readonly readsBody?: boolean;
  /**
   * The Authorization scheme (lower case) of requests that carry this method's per-request proof
   * (RFC 9449 §7.1: `DPoP`), and its spelling in a challenge. None for mTLS: its proof is the
   * connection, and its tokens travel as Bearer.
   */
  readonly scheme?: {
    readonly name: string;
    /** Its spelling in a challenge (`DPoP`). */
    readonly challenge: string;
    /** Whether its challenge carries `realm` (HTTPSig does; DPoP's does not). */
    readonly realm?: boolean;
    /** The refusal of a token presented with this scheme that its `cnf` does not bind to this method. */
    readonly unboundReason: ReasonId;
  };
  /** Request header fields that carry the proof: forwarded with the Authorization header or not at all, never in a trailer. */
  readonly proofHeaders: readonly string[];
  /** The reason ids of a binding that failed: no proof, or a proof of another key. */
  readonly missingReason: ReasonId;
  readonly mismatchReason: ReasonId;
  /** The key this request proved by this method, to compare with the `cnf` member; undefined: none. */
  provenKey(proof: Proof): string | undefined;
  /** With a scheme: the per-request proof check, run before any AS call (a key from the token: finished after it, see {@link ProofCheck}). */
  check?(request: ProofRequest, deps: ProofDeps): Promise<ProofCheck>;
  /** Parameters of this scheme's challenge after `error` (DPoP: `algs`). */
  challengeParams?(context: ChallengeContext): readonly (readonly [string, string])[];
  /** Response header fields every challenge of a route accepting this method carries (httpsig: `Accept-Signature`). */
  challengeHeaders?(context: ChallengeContext): Readonly<Record<string, string>>;
  /** This method's RFC 9728 fields for a resource served by `routes` (all of them, whichever methods they list). */
  metadata(routes: readonly MetadataRoute[], context: ChallengeContext): Readonly<Record<string, unknown>>;
}

/**
 * The dependencies per-request proof checks need, built once per runtime (src/runtime.ts), by
 * method id. Opaque here: each method knows its own.
 */
export type ProofDeps = Readonly<Record<string, unknown>>;
