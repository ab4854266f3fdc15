/**
 * Every refusal cnfguard makes is a {@link GuardError}: a stable reason id (used alike in the log
 * line, the metric label and tests), the HTTP status, the OAuth `error` code (RFC 6750 §3.1) when
 * there is one, a client-safe description, and a log-only detail. They are rendered in one place,
 * `renderError` (errors.ts, with the challenges of each proof method).
 */

export type ReasonId =
  | 'http_malformed'
  | 'method_unsupported'
  | 'transfer_coding_unsupported'
  | 'request_timeout'
  | 'url_too_long'
  | 'headers_too_many'
  | 'headers_too_large'
  | 'host_malformed'
  | 'body_too_large'
  | 'credentials_missing'
  | 'authorization_malformed'
  | 'path_malformed'
  | 'path_ambiguous'
  | 'transport_insecure'
  | 'forwarded_certificate_malformed'
  | 'authorization_duplicated'
  | 'token_in_query'
  | 'token_in_body'
  | 'form_body_too_large'
  | 'form_body_encoding'
  | 'token_inactive'
  | 'token_expired'
  | 'token_not_yet_valid'
  | 'token_type_unsupported'
  | 'audience_mismatch'
  | 'issuer_mismatch'
  | 'certificate_missing'
  | 'certificate_mismatch'
  | 'certificate_untrusted'
  | 'token_unbound'
  | 'cnf_unsupported'
  | 'insufficient_scope'
  | 'step_up_required'
  | 'dpop_proof_missing'
  | 'dpop_proof_repeated'
  | 'dpop_proof_invalid'
  | 'dpop_alg_unsupported'
  | 'dpop_key_invalid'
  | 'dpop_signature_invalid'
  | 'dpop_htm_mismatch'
  | 'dpop_htu_mismatch'
  | 'dpop_iat_window'
  | 'dpop_ath_mismatch'
  | 'dpop_proof_replayed'
  | 'dpop_nonce_required'
  | 'dpop_key_mismatch'
  | 'dpop_token_unbound'
  | 'dpop_replay_unavailable'
  // HTTP Message Signatures (RFC 9421, draft-richer-oauth-httpsig-03), src/proof/httpsig.ts
  | 'httpsig_signature_missing'
  | 'httpsig_signature_malformed'
  | 'httpsig_signature_invalid'
  | 'httpsig_components_missing'
  | 'httpsig_params_invalid'
  | 'httpsig_created_window'
  | 'httpsig_nonce_replayed'
  | 'httpsig_digest_mismatch'
  | 'httpsig_body_unavailable'
  | 'httpsig_body_too_large'
  | 'httpsig_alg_unsupported'
  | 'httpsig_key_invalid'
  | 'httpsig_key_mismatch'
  | 'httpsig_token_unbound'
  | 'httpsig_replay_unavailable'
  | 'introspection_unavailable'
  | 'shared_state_unavailable'
  | 'introspection_misconfigured'
  | 'introspection_rate_limited'
  | 'introspection_budget_exhausted'
  | 'introspection_unverified'
  // Local JWT access tokens (RFC 9068), src/validation/jwt.ts
  | 'jwt_malformed'
  | 'jwt_signature_invalid'
  | 'jwt_key_unknown'
  | 'jwt_type_invalid'
  | 'jwt_algorithm_refused'
  | 'jwt_issuer_mismatch'
  | 'jwt_audience_mismatch'
  | 'jwt_expired'
  | 'jwt_not_yet_valid'
  | 'jwt_claims_invalid'
  | 'jwks_unavailable'
  | 'upstream_unreachable'
  | 'upstream_timeout'
  | 'server_busy'
  | 'client_aborted'
  | 'internal_error';

interface ReasonSpec {
  readonly status: number;
  /** OAuth error code; absent for "no credentials" (RFC 6750 §3.1) and for cnfguard's own faults. */
  readonly error?: string;
  readonly description: string;
}

/** The table the whole product answers from: reason id -> status, OAuth code, client-safe text. */
export const REASONS: Readonly<Record<ReasonId, ReasonSpec>> = Object.freeze({
  http_malformed: { status: 400, description: 'malformed HTTP request' },
  // RFC 9112 §6.1: a transfer coding the server does not understand.
  transfer_coding_unsupported: { status: 501, description: 'only the chunked transfer coding is supported' },
  // RFC 9110 §15.6.2: a method the server supports for no resource. cnfguard forwards requests; it is not a tunnel.
  method_unsupported: { status: 501, description: 'CONNECT is not supported: this server forwards requests, it does not open tunnels' },
  request_timeout: { status: 408, description: 'the request was not received in time' },
  url_too_long: { status: 414, description: 'the request target is too long' },
  headers_too_many: { status: 431, description: 'too many request header fields' },
  headers_too_large: { status: 431, description: 'the request header fields are too large' },
  host_malformed: { status: 400, error: 'invalid_request', description: 'missing, repeated or malformed Host header' },
  body_too_large: { status: 413, description: 'the request body is too large' },
  credentials_missing: { status: 401, description: 'no bearer token' },
  authorization_malformed: { status: 400, error: 'invalid_request', description: 'malformed Authorization header' },
  path_malformed: { status: 400, error: 'invalid_request', description: 'the request path cannot be routed' },
  path_ambiguous: { status: 400, error: 'invalid_request', description: 'the request path is ambiguous' },
  /** A front proxy says the original request came without TLS (RFC 6750 §5.3: tokens only over TLS). */
  transport_insecure: { status: 400, error: 'invalid_request', description: 'the request did not arrive over TLS' },
  forwarded_certificate_malformed: { status: 400, error: 'invalid_request', description: 'the forwarded client certificate header is malformed' },
  authorization_duplicated: { status: 400, error: 'invalid_request', description: 'more than one Authorization header' },
  token_in_query: { status: 400, error: 'invalid_request', description: 'access tokens are not accepted in the URL' },
  token_in_body: { status: 400, error: 'invalid_request', description: 'access tokens are not accepted in the request body' },
  form_body_too_large: { status: 413, error: 'invalid_request', description: 'form body too large to inspect' },
  // RFC 9110 §15.5.16: a content coding the server cannot undo is 415. A form body is decoded to be searched for a token (pipeline/form-encoding.ts).
  form_body_encoding: { status: 415, error: 'invalid_request', description: 'the form body is in a content coding this server cannot inspect' },
  token_inactive: { status: 401, error: 'invalid_token', description: 'the access token is not active' },
  token_expired: { status: 401, error: 'invalid_token', description: 'the access token has expired' },
  token_not_yet_valid: { status: 401, error: 'invalid_token', description: 'the access token is not yet valid' },
  token_type_unsupported: { status: 401, error: 'invalid_token', description: 'the access token cannot be used with the Bearer scheme' },
  issuer_mismatch: { status: 401, error: 'invalid_token', description: 'the access token was not issued by the expected authorization server' },
  audience_mismatch: { status: 401, error: 'invalid_token', description: 'the access token is not intended for this resource' },
  certificate_missing: { status: 401, error: 'invalid_token', description: 'the access token is bound to a client certificate, but none was presented' },
  certificate_mismatch: { status: 401, error: 'invalid_token', description: 'the access token is bound to a different client certificate' },
  certificate_untrusted: { status: 401, error: 'invalid_token', description: 'the client certificate is not trusted' },
  token_unbound: { status: 401, error: 'invalid_token', description: 'the access token is not bound to a client certificate' },
  cnf_unsupported: { status: 401, error: 'invalid_token', description: 'the access token is bound by a confirmation method this server cannot verify' },
  insufficient_scope: { status: 403, error: 'insufficient_scope', description: 'the access token lacks a required scope' },
  // RFC 9470 §3: the token is good, the user's authentication is not strong or recent enough.
  step_up_required: { status: 401, error: 'insufficient_user_authentication', description: 'a stronger or more recent user authentication is required' },
  // RFC 9449 §7.1: a bad proof is invalid_dpop_proof; a proof of another key than cnf.jkt names is invalid_token.
  dpop_proof_missing: { status: 401, error: 'invalid_dpop_proof', description: 'a DPoP proof is required' },
  dpop_proof_repeated: { status: 401, error: 'invalid_dpop_proof', description: 'exactly one DPoP proof is required' },
  dpop_proof_invalid: { status: 401, error: 'invalid_dpop_proof', description: 'the DPoP proof is malformed' },
  dpop_alg_unsupported: { status: 401, error: 'invalid_dpop_proof', description: 'the DPoP proof uses an algorithm this resource does not accept' },
  dpop_key_invalid: { status: 401, error: 'invalid_dpop_proof', description: 'the DPoP proof does not carry a usable public key' },
  dpop_signature_invalid: { status: 401, error: 'invalid_dpop_proof', description: 'the DPoP proof signature is invalid' },
  dpop_htm_mismatch: { status: 401, error: 'invalid_dpop_proof', description: 'the DPoP proof is for another HTTP method' },
  dpop_htu_mismatch: { status: 401, error: 'invalid_dpop_proof', description: 'the DPoP proof is for another URI' },
  dpop_iat_window: { status: 401, error: 'invalid_dpop_proof', description: 'the DPoP proof is too old or issued in the future' },
  dpop_ath_mismatch: { status: 401, error: 'invalid_dpop_proof', description: 'the DPoP proof is for another access token' },
  dpop_proof_replayed: { status: 401, error: 'invalid_dpop_proof', description: 'the DPoP proof was already used' },
  dpop_nonce_required: { status: 401, error: 'use_dpop_nonce', description: 'the DPoP proof must carry the nonce this server provides' },
  dpop_key_mismatch: { status: 401, error: 'invalid_token', description: 'the access token is bound to a different DPoP key' },
  dpop_token_unbound: { status: 401, error: 'invalid_token', description: 'the access token is not bound to a DPoP key' },
  dpop_replay_unavailable: { status: 503, description: 'DPoP proofs cannot be checked for replay right now' },
  // HTTP Message Signatures: the draft defines no error code; every failed signature rule is
  // invalid_token (the contract), a field that does not parse is invalid_request.
  httpsig_signature_missing: { status: 401, error: 'invalid_token', description: 'an HTTP message signature tagged httpsig-oauth is required' },
  httpsig_signature_malformed: { status: 400, error: 'invalid_request', description: 'a Signature, Signature-Input or Content-Digest field is malformed' },
  httpsig_signature_invalid: { status: 401, error: 'invalid_token', description: 'the HTTP message signature does not verify' },
  httpsig_components_missing: { status: 401, error: 'invalid_token', description: 'the HTTP message signature does not cover the required components' },
  httpsig_params_invalid: { status: 401, error: 'invalid_token', description: 'the HTTP message signature needs created and nonce, and no alg, keyid or pub' },
  httpsig_created_window: { status: 401, error: 'invalid_token', description: 'the HTTP message signature is too old or created in the future' },
  httpsig_nonce_replayed: { status: 401, error: 'invalid_token', description: 'the HTTP message signature nonce was already used' },
  httpsig_digest_mismatch: { status: 401, error: 'invalid_token', description: 'the Content-Digest does not match the request body' },
  httpsig_body_unavailable: { status: 401, error: 'invalid_token', description: 'a signed request body cannot be checked on this path: the front does not pass bodies' },
  httpsig_body_too_large: { status: 413, description: 'the signed request body is larger than this resource checks' },
  httpsig_alg_unsupported: { status: 401, error: 'invalid_token', description: 'the access token key uses a signature algorithm this resource does not accept' },
  httpsig_key_invalid: { status: 401, error: 'invalid_token', description: 'the access token does not name one usable HTTP message signature key' },
  httpsig_key_mismatch: { status: 401, error: 'invalid_token', description: 'the access token is bound to a different HTTP message signature key' },
  httpsig_token_unbound: { status: 401, error: 'invalid_token', description: 'the access token is not bound to an HTTP message signature key' },
  httpsig_replay_unavailable: { status: 503, description: 'HTTP message signature nonces cannot be checked for replay right now' },
  introspection_unavailable: { status: 503, description: 'the authorization server is unavailable' },
  // The AS refused cnfguard itself (401/403: its client credentials; or a wrong URL). Not an AS
  // outage, so the circuit breaker does not count it; the client is told no more than for one.
  introspection_misconfigured: { status: 503, description: 'the authorization server is unavailable' },
  // Too many new tokens to check (cache misses), from this peer or in total: the AS is not called.
  introspection_rate_limited: { status: 429, description: 'too many new access tokens from this client; retry later' },
  introspection_budget_exhausted: { status: 503, description: 'too many new access tokens to check; retry later' },
  // RFC 9701: introspection.responseFormat jwt, and the answer was not a valid signed one (an AS failure, fail closed).
  introspection_unverified: { status: 503, description: 'the authorization server is unavailable' },
  // Local JWT access tokens (RFC 9068 §4: every failure is invalid_token; an unreachable JWKS fails closed).
  jwt_malformed: { status: 401, error: 'invalid_token', description: 'the access token is not a well-formed signed JWT' },
  jwt_signature_invalid: { status: 401, error: 'invalid_token', description: 'the access token signature is invalid' },
  jwt_key_unknown: { status: 401, error: 'invalid_token', description: 'the access token is signed with an unknown key' },
  jwt_type_invalid: { status: 401, error: 'invalid_token', description: 'the token is not a JWT access token' },
  jwt_algorithm_refused: { status: 401, error: 'invalid_token', description: 'the access token signing algorithm is not accepted' },
  jwt_issuer_mismatch: { status: 401, error: 'invalid_token', description: 'the access token was not issued by the expected authorization server' },
  jwt_audience_mismatch: { status: 401, error: 'invalid_token', description: 'the access token is not intended for this resource' },
  jwt_expired: { status: 401, error: 'invalid_token', description: 'the access token has expired' },
  jwt_not_yet_valid: { status: 401, error: 'invalid_token', description: 'the access token is not yet valid' },
  jwt_claims_invalid: { status: 401, error: 'invalid_token', description: 'the access token claims are invalid' },
  jwks_unavailable: { status: 503, description: 'the authorization server keys are unavailable' },
  shared_state_unavailable: { status: 503, description: 'shared state is unavailable; retry shortly' },
  upstream_unreachable: { status: 502, description: 'the upstream service is unreachable' },
  upstream_timeout: { status: 504, description: 'the upstream service did not answer in time' },
  server_busy: { status: 503, description: 'the server is busy; retry shortly' },
  // nginx's convention for a request the client abandoned: never sent, only logged and counted.
  client_aborted: { status: 499, description: 'the client closed the request' },
  internal_error: { status: 500, description: 'internal error' },
});

export interface GuardErrorOverrides {
  status?: number;
  error?: string;
  /** Client-safe text in place of the reason's own, where the same reason needs other words (see decide.ts). */
  description?: string;
  /** Space-delimited scopes for an `insufficient_scope` challenge. */
  scope?: string;
  /** Log-only: never sent to the client. Must not contain tokens or secrets. */
  detail?: string;
  /** Sent as Retry-After (503 while the authorization server is known to be down; 429/503 over the introspection budget). */
  retryAfterSeconds?: number;
  /** Sent as `DPoP-Nonce` (RFC 9449 §8: with use_dpop_nonce). */
  dpopNonce?: string;
  /** Log-only, at debug: the thumbprints a binding check compared (public values, never a key or token). */
  evidence?: BindingEvidence;
  /** RFC 9470 §3: `acr_values` and `max_age` for every challenge of the route (step_up_required). */
  stepUp?: StepUpChallenge;
}

/** What a binding check compared: the token's `cnf` member, its bound value, and what the request presented. */
export interface BindingEvidence {
  readonly member: string;
  /** The thumbprint the request presented (certificate x5t#S256, DPoP proof jkt); absent: no proof. */
  readonly presented: string | undefined;
  /** The token's `cnf` value for the member. */
  readonly bound: string | undefined;
}

/** The step-up requirement as challenge parameters: acr_values space-separated in preference order, max_age in seconds. */
export interface StepUpChallenge {
  readonly acrValues?: string;
  readonly maxAge?: number;
}

export class GuardError extends Error {
  readonly reason: ReasonId;
  readonly status: number;
  readonly error: string | undefined;
  readonly description: string;
  readonly scope: string | undefined;
  readonly detail: string | undefined;
  readonly retryAfterSeconds: number | undefined;
  readonly dpopNonce: string | undefined;
  readonly evidence: BindingEvidence | undefined;
  readonly stepUp: StepUpChallenge | undefined;

  constructor(reason: ReasonId, overrides: GuardErrorOverrides = {}) {
    const spec = REASONS[reason];
    // A refusal is an answer, not a fault: no stack trace is captured for it. Capturing one was the
    // larger part of a refused DPoP proof's cost past the signature check (a replay flood's cost).
    const stackTraceLimit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    super(overrides.detail ? `${reason}: ${overrides.detail}` : reason);
    Error.stackTraceLimit = stackTraceLimit;
    this.name = 'GuardError';
    this.reason = reason;
    this.status = overrides.status ?? spec.status;
    this.error = overrides.error ?? spec.error;
    this.description = overrides.description ?? spec.description;
    this.scope = overrides.scope;
    this.detail = overrides.detail;
    this.retryAfterSeconds = overrides.retryAfterSeconds;
    this.dpopNonce = overrides.dpopNonce;
    this.evidence = overrides.evidence;
    this.stepUp = overrides.stepUp;
  }
}

/** The decision a finished request is counted and logged as (metrics' and the access line's `decision`). */
export type OutcomeDecision = 'allow' | 'deny' | 'would_deny' | 'error' | 'aborted';

/** How a request that ended in a failure (not a pipeline verdict) is counted, where it is not plain `deny` or (5xx) `error`. */
export const FAILURE_DECISIONS: Readonly<Record<string, OutcomeDecision>> = {
  client_aborted: 'aborted',
  body_too_large: 'deny',
  upstream_unreachable: 'error',
  upstream_timeout: 'error',
  internal_error: 'error',
};
