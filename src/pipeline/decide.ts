/**
 * Step (pure): the decision. Given what the AS said about the token, the connection's
 * certificate, the route's policy and the time, allow (with the identity to forward) or deny
 * (with the error to render). No I/O, no clock of its own: every row of the contract's decision
 * table is a unit test of this function.
 */
import type { TokenInfo } from '../introspection/token-info.ts';
import { GuardError, REASONS, type BindingEvidence, type ReasonId } from '../oauth/reasons.ts';
import { cnfMembersOf, methodOfScheme, PROOF_METHODS, SCHEME_CNF_MEMBERS, type Proof, type ProofMethodId, type ProvenKey } from '../proof/registry.ts';
import { checkBinding, verifiersFor, type BindingFailure, type ConfirmationVerifier } from './binding.ts';
import type { ClientCertificate } from './client-cert.ts';
import type { RoutePolicy } from './route.ts';
import { stepUpFailure } from './step-up.ts';
import type { TokenScheme } from './token.ts';

export interface DecisionInput {
  token: TokenInfo;
  certificate: ClientCertificate | undefined;
  policy: RoutePolicy;
  /** Seconds since the epoch. */
  now: number;
  /** Default: the verifiers of the route's `methods` (a member of another method is then unknown). */
  verifiers?: readonly ConfirmationVerifier[];
  /** The scheme of the Authorization header. Default `bearer`. */
  scheme?: TokenScheme;
  /** With a proof method's scheme (`dpop`): the key its proof check accepted (its thumbprint). */
  proof?: ProvenKey | undefined;
  /** With a proof method's scheme under `report-only`: why the proof was refused (reported, not enforced). */
  proofFailure?: GuardError | undefined;
}

export interface Identity {
  subject: string | undefined;
  clientId: string | undefined;
  scope: string | undefined;
  certificate: ClientCertificate | undefined;
  /** The introspection answer, for claim -> header mappings. */
  claims: Readonly<Record<string, unknown>>;
  /** With the DPoP scheme: the proof key's RFC 7638 thumbprint, forwarded as headers.dpopThumbprint. */
  dpopThumbprint?: string;
}

/** Why a request was let through: a verified binding, an unbound token the route accepts, no check, or report-only. */
export type AllowReason = 'bound' | 'unbound' | 'binding_off' | 'report_only';

export type Decision =
  | {
      allow: true;
      reason: AllowReason;
      identity: Identity;
      /** report-only: what `required` would have denied */
      wouldDeny?: GuardError;
      /** With reason `bound`: the proof methods that verified the token's cnf (logged, counted). */
      verifiedBy?: readonly ProofMethodId[];
    }
  | { allow: false; error: GuardError };

function deny(reason: ReasonId, detail?: string): Decision {
  return { allow: false, error: new GuardError(reason, detail === undefined ? {} : { detail }) };
}

function bindingError(reason: BindingFailure | 'cnf_unsupported' | 'token_unbound' | 'certificate_untrusted', policy: RoutePolicy, detail: string, evidence?: BindingEvidence, scheme: TokenScheme = 'bearer'): GuardError {
  if (reason === 'certificate_missing') {
    return new GuardError(reason, { status: policy.missingCertificate.status, error: policy.missingCertificate.code, detail, ...(evidence !== undefined && { evidence }) });
  }
  // The proof of another scheme's method is missing (a token bound to a DPoP key too, sent with
  // HTTPSig): that scheme's own code (invalid_dpop_proof, RFC 9449 §7.1) is not one for the
  // challenge of the scheme used; the token is refused as that scheme refuses tokens, saying why.
  const owner = PROOF_METHODS.find((method) => method.missingReason === reason && method.scheme !== undefined && method.scheme.name !== scheme);
  if (owner?.scheme !== undefined && REASONS[reason].error !== 'invalid_token') {
    const name = owner.scheme.challenge;
    return new GuardError(reason, { error: 'invalid_token', description: `the access token is bound to a ${name} key too: a ${name} proof is required as well`, detail, ...(evidence !== undefined && { evidence }) });
  }
  return new GuardError(reason, { detail, ...(evidence !== undefined && { evidence }) });
}

export function scopesOf(scope: string | undefined): Set<string> {
  return new Set((scope ?? '').split(' ').filter((s) => s.length > 0));
}

/** Whether the route takes credentials in this scheme: Bearer always, a proof method's (DPoP) when that method is in its methods. */
export function schemeAccepted(policy: Pick<RoutePolicy, 'methods'>, scheme: TokenScheme): boolean {
  if (scheme === 'bearer') return true;
  const method = methodOfScheme(scheme);
  return method !== undefined && policy.methods.includes(method.id);
}

export function decide(input: DecisionInput): Decision {
  const { token, certificate, policy, now } = input;
  const scheme = input.scheme ?? 'bearer';
  // The DPoP scheme where DPoP is not accepted: as if no credentials came (the challenges say which schemes are).
  const method = methodOfScheme(scheme);
  if (!schemeAccepted(policy, scheme)) return deny('credentials_missing', `${method?.scheme?.challenge ?? scheme} scheme on a route without ${method?.id ?? scheme}`);
  // The pipeline verifies the proof before deciding; a DPoP request without one never gets further.
  if (method !== undefined && input.proof === undefined && (policy.binding !== 'report-only' || input.proofFailure === undefined)) {
    return input.proofFailure === undefined ? deny(method.missingReason) : { allow: false, error: input.proofFailure };
  }
  if (!token.active) return deny('token_inactive');
  if (token.exp !== undefined && token.exp <= now) return deny('token_expired');
  if (token.nbf !== undefined && token.nbf > now) return deny('token_not_yet_valid');
  const cnf = token.cnf;
  const tokenType = token.tokenType?.toLowerCase();
  // A token bound to a scheme's proof (DPoP) presented with the Bearer scheme is a downgrade (RFC
  // 9449 §7.2): refused on every route, whatever its binding mode or cnf.unknownMethods.
  if (scheme === 'bearer' && ((tokenType !== undefined && methodOfScheme(tokenType) !== undefined) || (cnf !== undefined && SCHEME_CNF_MEMBERS.some((member) => Object.hasOwn(cnf, member))))) return deny('token_type_unsupported');
  // A scheme's proof (DPoP) is for tokens bound to it (RFC 9449 §7.1, §6.2): a proof binds nothing
  // to a token without its cnf member, so such a token is refused on every route, as its Bearer mirror is.
  if (method?.scheme !== undefined) {
    const bound = cnf !== undefined && cnfMembersOf(method).some((member) => Object.hasOwn(cnf, member));
    if (!bound) return deny(method.scheme.unboundReason, `no cnf.${method.cnfMember}`);
    // Bound, but the AS calls it a Bearer token (RFC 9449 §6.2 wants token_type DPoP): refused
    // under the same reason id, with words that do not say it is unbound.
    if (tokenType === 'bearer') {
      return { allow: false, error: new GuardError(method.scheme.unboundReason, { description: `the access token is of type Bearer, not ${method.scheme.challenge}`, detail: `token_type Bearer with cnf.${method.cnfMember}` }) };
    }
  }
  // RFC 7662 makes `iss` optional: an answer without one is the configured AS's own word.
  if (policy.issuer !== undefined && token.iss !== undefined && token.iss !== policy.issuer) return deny('issuer_mismatch');
  if (policy.audience !== undefined && !token.aud.includes(policy.audience)) return deny('audience_mismatch');

  const identity: Identity = { subject: token.subject, clientId: token.clientId, scope: token.scope, certificate, claims: token.claims };
  if (method?.forwardsThumbprint === true && input.proof !== undefined) identity.dpopThumbprint = input.proof.jkt;
  let reason: AllowReason = 'binding_off';
  let wouldDeny: GuardError | undefined;
  let verifiedBy: readonly ProofMethodId[] | undefined;

  if (policy.binding !== 'off') {
    // Every cnf member must be verified by a method the route accepts; a scheme's proof is offered
    // only when the request used that scheme.
    const proof: Proof = method === undefined ? { certificate } : { certificate, [method.id]: input.proof };
    const outcome = checkBinding(token.cnf, proof, input.verifiers ?? verifiersFor(policy.methods), policy.unknownCnf);
    let failure: GuardError | undefined;
    if (certificate !== undefined && !certificate.trusted) {
      failure = bindingError('certificate_untrusted', policy, 'client certificate does not chain to tls.clientCa');
    } else if (outcome.kind === 'failed') {
      failure = bindingError(outcome.reason, policy, outcome.detail, outcome.evidence, scheme);
    } else if (outcome.kind === 'unbound' && policy.binding !== 'optional') {
      failure = bindingError('token_unbound', policy, 'token has no cnf');
    }
    // A refused proof is what report-only reports, before the missing jkt proof it causes.
    failure = input.proofFailure ?? failure;
    if (failure === undefined) {
      reason = outcome.kind === 'bound' ? 'bound' : 'unbound';
      if (outcome.kind === 'bound') verifiedBy = outcome.methods;
    } else if (policy.binding === 'report-only') {
      reason = 'report_only';
      wouldDeny = failure;
    } else return { allow: false, error: failure };
  }

  if (policy.scopes.length > 0) {
    const granted = scopesOf(token.scope);
    const missing = policy.scopes.filter((s) => !granted.has(s));
    if (missing.length > 0) {
      return { allow: false, error: new GuardError('insufficient_scope', { scope: policy.scopes.join(' '), detail: `missing ${missing.join(' ')}` }) };
    }
  }
  // RFC 9470 step-up, last: a token must be valid, bound and scoped before it learns the requirement.
  const stepUp = policy.stepUp === undefined ? undefined : stepUpFailure(token, policy.stepUp, now);
  if (stepUp !== undefined) {
    if (policy.binding !== 'report-only') return { allow: false, error: stepUp };
    reason = 'report_only';
    wouldDeny ??= stepUp;
  }
  return { allow: true, reason, identity, ...(wouldDeny !== undefined && { wouldDeny }), ...(verifiedBy !== undefined && { verifiedBy }) };
}
