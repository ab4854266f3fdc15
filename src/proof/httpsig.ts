/**
 * HTTP Message Signatures (RFC 9421) as a proof method, profile draft-richer-oauth-httpsig-03
 * (experimental: the draft is still moving): `Authorization: HTTPSig <token>`, the token bound by
 * `cnf.jwk` or `cnf.htsk` (httpsig-key.ts), each request signed per RFC 9421.
 *
 * Every signature tagged `httpsig-oauth` (at least one) must cover `@method`, `@target-uri`,
 * `authorization`, the configured extra components and, when the request has a body,
 * `content-digest` (checked against the body); carry `created` (within the window) and `nonce`
 * (never seen: the replay store), and neither `alg`, `keyid` nor `pub`; and verify with the
 * token's key. The field checks run before any AS call; the signature and the nonce once the token
 * is known ({@link ProofCheck} `confirm`). Signatures with other tags are not this method's.
 *
 * No field value, signature, nonce or token appears in a failure's detail.
 */
import type { LRUCache } from 'lru-cache';
import { lazyLru } from '../lru.ts';
import { serializeInnerList, type Parameters } from 'structured-headers';
import { GuardError, type ReasonId } from '../oauth/reasons.ts';
import { replayKey, ReplayStoreUnavailableError, type ReplayStore } from '../state/replay-store.ts';
import { contentDigestMatches, signatureBase, signatureEntries, SignatureBaseError, SignatureSyntaxError, verifySignatureBytes, type SignatureAlgorithm, type SignatureEntry } from './http-signature-base.ts';
import { httpsigKeyOf, memberKeyId, type HttpsigKey } from './httpsig-key.ts';
import type { ProofCheck, ProofMethod, ProofRequest, ProvenKey } from './method.ts';

/** The profiles implemented; `httpsig.profile` names one. */
export const HTTPSIG_PROFILES = ['draft-richer-oauth-httpsig-03'] as const;
/** The `tag` this profile's signatures carry. */
export const HTTPSIG_TAG = 'httpsig-oauth';
/** The components every signature of the profile covers. */
export const HTTPSIG_BASE_COMPONENTS = ['@method', '@target-uri', 'authorization'] as const;
/** Parameters a signature of the profile must not carry: the key comes from the token alone. */
const FORBIDDEN_PARAMS = ['alg', 'keyid', 'pub'] as const;
/** Longest nonce accepted (the store keeps a hash anyway). */
export const MAX_NONCE_LENGTH = 256;

export interface HttpsigPolicy {
  readonly profile: (typeof HTTPSIG_PROFILES)[number];
  readonly algorithms: readonly SignatureAlgorithm[];
  readonly maxAgeSeconds: number;
  readonly clockSkewSeconds: number;
  readonly requiredComponents: readonly string[];
}

/** The contract's defaults (`httpsig:` in the config). */
export const DEFAULT_HTTPSIG_POLICY: HttpsigPolicy = { profile: 'draft-richer-oauth-httpsig-03', algorithms: ['ed25519', 'ecdsa-p256-sha256', 'rsa-pss-sha512'], maxAgeSeconds: 30, clockSkewSeconds: 5, requiredComponents: [] };

export interface HttpsigDeps {
  readonly policy: HttpsigPolicy;
  /** A body whose Content-Digest must be checked is read up to this many bytes (`httpsig.maxBufferedBodyBytes`). */
  readonly maxBufferedBodyBytes: number;
  /** Nonces seen (the DPoP replay store: one per process, or the shared one). */
  readonly replayStore: ReplayStore;
  /** Epoch seconds. */
  readonly now: () => number;
  /** Keys imported from tokens, by member and value. */
  readonly keys: LRUCache<string, HttpsigKey | false>;
  /** The same by the value object (a cached token's cnf is one object): made with the deps unless given. */
  readonly keysByValue?: WeakMap<object, HttpsigKey | false>;
}

/** The dependencies with what a runtime does not set taken from the defaults; `keys` made here unless given. */
export function createHttpsigDeps(deps: Pick<HttpsigDeps, 'replayStore' | 'now'> & Partial<HttpsigDeps>): HttpsigDeps {
  return { policy: DEFAULT_HTTPSIG_POLICY, maxBufferedBodyBytes: 1_048_576, keys: lazyLru<string, HttpsigKey | false>(10_000), keysByValue: new WeakMap(), ...deps };
}

const fail = (reason: ReasonId, detail: string): ProofCheck => ({ ok: false, error: new GuardError(reason, { detail }) });

/** One tagged signature that passed the field checks: what is left to verify once the key is known. */
interface Prepared {
  readonly base: string;
  readonly signature: Buffer;
  readonly nonce: string;
  readonly created: number;
}

/** The tagged signature's parameters and covered components against the profile; a reason when one fails. */
function paramsProblem(entry: SignatureEntry, request: ProofRequest, policy: HttpsigPolicy, now: number): readonly [ReasonId, string] | undefined {
  for (const name of FORBIDDEN_PARAMS) if (entry.params.has(name)) return ['httpsig_params_invalid', `parameter ${name} present`];
  const created = entry.params.get('created');
  const nonce = entry.params.get('nonce');
  if (typeof created !== 'number' || !Number.isInteger(created)) return ['httpsig_params_invalid', 'created missing'];
  if (typeof nonce !== 'string' || nonce.length === 0 || nonce.length > MAX_NONCE_LENGTH) return ['httpsig_params_invalid', 'nonce missing or too long'];
  if (now - created > policy.maxAgeSeconds || created - now > policy.clockSkewSeconds) return ['httpsig_created_window', `created ${Math.round(now - created)}s ago`];
  const expires = entry.params.get('expires');
  if (expires !== undefined && (typeof expires !== 'number' || expires + policy.clockSkewSeconds < now)) return ['httpsig_created_window', 'expired'];
  // A covered component counts only in its plain form: `"authorization";bs` signs something else.
  const covers = (name: string): boolean => entry.components.some((component) => component.name === name && component.params.size === 0);
  const missing: string[] = HTTPSIG_BASE_COMPONENTS.filter((name) => !covers(name));
  for (const name of policy.requiredComponents) if (!covers(name)) missing.push(name);
  if (request.body.kind !== 'none' && !covers('content-digest')) missing.push('content-digest');
  if (missing.length > 0) return ['httpsig_components_missing', `not covered: ${missing.join(' ').slice(0, 120)}`];
  return undefined;
}

/**
 * The checks before any AS call: the fields parse, at least one signature is tagged, each tagged
 * one has the profile's components and parameters, its base can be built and the body matches
 * its Content-Digest. Returns the confirmation that verifies the signatures with the token's key.
 */
export function checkHttpsigFields(request: ProofRequest, deps: HttpsigDeps): ProofCheck {
  const { policy } = deps;
  let entries: SignatureEntry[] | undefined;
  try {
    entries = signatureEntries(request.lines('signature-input'), request.lines('signature'));
  } catch (err) {
    if (err instanceof SignatureSyntaxError) return fail('httpsig_signature_malformed', err.message);
    if (err instanceof SignatureBaseError) return fail('httpsig_signature_invalid', err.message);
    throw err;
  }
  const tagged = (entries ?? []).filter((entry) => entry.params.get('tag') === HTTPSIG_TAG);
  if (tagged.length === 0) return fail('httpsig_signature_missing', entries === undefined ? 'no signature' : `no signature tagged ${HTTPSIG_TAG}`);
  // The decision API: the front keeps the body, so its digest cannot be checked.
  if (request.body.kind === 'unavailable') return fail('httpsig_body_unavailable', 'the request has a body the front does not pass');
  const now = deps.now();
  const prepared: Prepared[] = [];
  for (const entry of tagged) {
    const problem = paramsProblem(entry, request, policy, now);
    if (problem !== undefined) return fail(problem[0], problem[1]);
    let base: string;
    try {
      base = signatureBase(entry, { method: request.method, targetUri: request.targetUri, fieldLines: request.lines });
    } catch (err) {
      if (err instanceof SignatureBaseError) return fail('httpsig_signature_invalid', err.message);
      throw err;
    }
    const digest = entry.components.some((component) => component.name === 'content-digest') ? request.lines('content-digest') : undefined;
    if (digest !== undefined) {
      try {
        if (!contentDigestMatches(digest, request.body.kind === 'read' ? request.body.bytes : Buffer.alloc(0))) return fail('httpsig_digest_mismatch', 'content-digest does not match the body');
      } catch (err) {
        if (err instanceof SignatureSyntaxError) return fail('httpsig_signature_malformed', err.message);
        throw err;
      }
    }
    prepared.push({ base, signature: entry.signature, nonce: entry.params.get('nonce') as string, created: entry.params.get('created') as number });
  }
  return { ok: true, confirm: (cnf) => confirmSignatures(prepared, cnf, deps) };
}

const KEY_PROBLEMS = {
  none: ['httpsig_token_unbound', 'no cnf.jwk or cnf.htsk'],
  ambiguous: ['httpsig_key_invalid', 'cnf.jwk and cnf.htsk both present'],
  invalid: ['httpsig_key_invalid', 'cnf key unusable'],
} as const satisfies Record<string, readonly [ReasonId, string]>;

/** With the token's `cnf`: every tagged signature verifies with its key, then every nonce is new. */
async function confirmSignatures(prepared: readonly Prepared[], cnf: Readonly<Record<string, unknown>> | undefined, deps: HttpsigDeps): Promise<ProofCheck> {
  const key = httpsigKeyOf(cnf, deps.keys, deps.keysByValue);
  if (typeof key === 'string') return fail(KEY_PROBLEMS[key][0], KEY_PROBLEMS[key][1]);
  if (!deps.policy.algorithms.includes(key.algorithm)) return fail('httpsig_alg_unsupported', `algorithm ${key.algorithm}`);
  for (const signature of prepared) {
    if (!verifySignatureBytes(key.algorithm, key.key, signature.base, signature.signature)) return fail('httpsig_signature_invalid', 'signature does not verify');
  }
  // Nonces last: one is spent only by a request whose signatures all verified.
  for (const signature of prepared) {
    let fresh: boolean;
    try {
      fresh = await deps.replayStore.remember(replayKey(key.id, `httpsig:${signature.nonce}`), signature.created + deps.policy.maxAgeSeconds + deps.policy.clockSkewSeconds + 1);
    } catch (err) {
      // Full, or the shared store down under fail-closed: a short outage, as for DPoP.
      if (err instanceof ReplayStoreUnavailableError) return { ok: false, error: new GuardError('httpsig_replay_unavailable', { detail: err.message, retryAfterSeconds: 1 }) };
      throw err;
    }
    if (!fresh) return fail('httpsig_nonce_replayed', 'nonce seen before');
  }
  return { ok: true, key: { jkt: key.id } };
}

/** RFC 9421 §5.1: what a signature must cover and carry, as an `Accept-Signature` dictionary member. */
export function acceptSignature(requiredComponents: readonly string[] = []): string {
  const components = [...new Set([...HTTPSIG_BASE_COMPONENTS, ...requiredComponents])].map((name) => [name, new Map()] as [string, Parameters]);
  const params: Parameters = new Map<string, string | boolean>([
    ['created', true],
    ['nonce', true],
    ['tag', HTTPSIG_TAG],
  ]);
  return `httpsig=${serializeInnerList([components, params])}`;
}

export const httpsig = {
  id: 'httpsig',
  cnfMember: 'jwk',
  otherCnfMembers: ['htsk'],
  memberKey: memberKeyId,
  scheme: { name: 'httpsig', challenge: 'HTTPSig', realm: true, unboundReason: 'httpsig_token_unbound' },
  proofHeaders: ['signature', 'signature-input'],
  readsBody: true,
  missingReason: 'httpsig_signature_missing',
  mismatchReason: 'httpsig_key_mismatch',
  provenKey: (proof) => (proof.httpsig as ProvenKey | undefined)?.jkt,
  check: (request, deps) => Promise.resolve(checkHttpsigFields(request, deps.httpsig as HttpsigDeps)),
  challengeHeaders: ({ httpsigComponents }) => ({ 'accept-signature': acceptSignature(httpsigComponents) }),
  // No RFC 9728 field is registered for httpsig-bound tokens yet.
  metadata: () => ({}),
} as const satisfies ProofMethod<'httpsig'>;
