/**
 * Every refusal cnfguard makes is a {@link GuardError}: a stable reason id (used alike in the log
 * line, the metric label and tests), the HTTP status, the OAuth `error` code (RFC 6750 §3.1) when
 * there is one, a client-safe description, and a log-only detail. They are rendered in one place,
 * {@link renderError}.
 */
import { challengeHeadersFor, PROOF_METHODS, type ChallengeContext } from '../proof/registry.ts';
import type { GuardError } from '../oauth/reasons.ts';

export { GuardError, REASONS, type GuardErrorOverrides, type ReasonId } from '../oauth/reasons.ts';

/**
 * Error codes for cnfguard's own faults (not OAuth's): in the body, and on the challenge, since
 * every error carries `WWW-Authenticate` with its `error` and `error_description` (the contract).
 */
const SERVER_FAULT_CODES: Readonly<Record<number, string>> = {
  400: 'invalid_request',
  408: 'request_timeout',
  413: 'request_too_large',
  414: 'uri_too_long',
  429: 'too_many_requests',
  500: 'server_error',
  431: 'request_header_fields_too_large',
  502: 'bad_gateway',
  503: 'temporarily_unavailable',
  504: 'gateway_timeout',
};

/** The statuses RFC 6750 has challenges for: the request's credentials are what is refused. */
const CREDENTIAL_STATUSES: ReadonlySet<number> = new Set([400, 401, 403]);

export interface RenderedError {
  status: number;
  /** `www-authenticate` holds every challenge on one field line, comma-separated (RFC 9110 §11.6.1). */
  headers: Record<string, string>;
  body: string;
  /**
   * The same challenges one per entry, for edges that send one `WWW-Authenticate` field line per
   * challenge (`res.setHeader('www-authenticate', challenges)`), which interoperates better. Empty
   * when the status carries none. Always set by renderError; optional so that responses built
   * elsewhere (without challenges) still type-check.
   */
  challenges?: string[];
}

/**
 * RFC 6750 §3 values allow %x20-21 / %x23-5B / %x5D-7E: no `"`, no `\`, no control characters.
 * Characters outside that set are dropped rather than escaped, so nothing a client sent can
 * reshape the challenge.
 */
export function challengeSafe(value: string): string {
  return value.replace(/[^\x20\x21\x23-\x5b\x5d-\x7e]/g, '');
}

/** RFC 9110 quoted-string: escape `"` and `\` (the only characters senders escape). */
export function quoteString(value: string): string {
  return `"${value.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
}

/**
 * One challenge in RFC 9110 §11.2 form, `Scheme name="value", …`, values made safe and quoted:
 * `head` (Bearer's realm), then with an error its `error`, the scheme's own parameters (DPoP's
 * `algs`, RFC 9449 §7.1, sent with or without an error), the description and scope, then `extra`.
 */
function challenge(scheme: string, head: readonly (readonly [string, string])[], error: GuardError | undefined, own: readonly (readonly [string, string])[], extra: Record<string, string>): string {
  const params: (readonly [string, string])[] = [...head];
  const code = codeOf(error);
  if (code) params.push(['error', code]);
  params.push(...own);
  if (code && error !== undefined) {
    params.push(['error_description', error.description]);
    if (error.scope) params.push(['scope', error.scope]);
  }
  params.push(...Object.entries(extra));
  const rendered = params.map(([name, value]) => `${name}=${quoteString(challengeSafe(value))}`).join(', ');
  return rendered.length === 0 ? scheme : `${scheme} ${rendered}`;
}

/** The code an error is rendered with: its OAuth error, or for cnfguard's own faults its status's (none: no credentials at all). */
function codeOf(err: GuardError | undefined): string | undefined {
  return err === undefined ? undefined : (err.error ?? SERVER_FAULT_CODES[err.status]);
}

/**
 * The `WWW-Authenticate` value for a Bearer challenge. With no `error` this is the bare
 * challenge RFC 6750 §3.1 asks for when a request carries no credentials.
 */
export function bearerChallenge(realm: string, error?: GuardError, extra: Record<string, string> = {}): string {
  return challenge('Bearer', [['realm', realm]], error, [], extra);
}

export interface RenderOptions extends ChallengeContext {
  realm: string;
  /** Extra auth-params for every challenge (e.g. `resource_metadata`). */
  challengeParams?: Record<string, string>;
  /**
   * The route's proof methods. Absent: one Bearer challenge, exactly as before methods existed.
   * Present: a Bearer challenge always, and one per method among them with a scheme of its own (DPoP).
   */
  methods?: readonly string[];
  /** With `methods`: the Bearer challenge carries `supported_cnf_methods="…"` (errors.advertiseMethods). Default true. */
  advertiseMethods?: boolean;
  /** The scheme the request used: the `error` goes on its challenge (RFC 9449 §7.2). Default bearer. */
  scheme?: string | undefined;
}

/** The challenges for an error, in order: Bearer, then each accepted method's scheme (DPoP) in registry order. */
export function challengesFor(err: GuardError | undefined, options: RenderOptions): string[] {
  const extra = { ...options.challengeParams, ...stepUpParams(err) };
  const methods = options.methods;
  if (methods === undefined) return [bearerChallenge(options.realm, err, extra)];
  const schemes = PROOF_METHODS.filter((method) => method.scheme !== undefined && methods.includes(method.id));
  const onScheme = schemes.some((method) => method.scheme?.name === options.scheme);
  const bearerExtra = options.advertiseMethods === false ? extra : { ...extra, supported_cnf_methods: methods.join(' ') };
  const challenges = [bearerChallenge(options.realm, onScheme ? undefined : err, bearerExtra)];
  for (const method of schemes) {
    const { scheme } = method;
    if (scheme === undefined) continue;
    challenges.push(challenge(scheme.challenge, scheme.realm === true ? [['realm', options.realm]] : [], scheme.name === options.scheme ? err : undefined, method.challengeParams?.(options) ?? [], extra));
  }
  return challenges;
}

/** RFC 9470 §3: a step-up refusal's `acr_values` and `max_age`, on every challenge (not only the one carrying the error). */
function stepUpParams(err: GuardError | undefined): Record<string, string> {
  const stepUp = err?.stepUp;
  if (stepUp === undefined) return {};
  return { ...(stepUp.acrValues !== undefined && { acr_values: stepUp.acrValues }), ...(stepUp.maxAge !== undefined && { max_age: String(stepUp.maxAge) }) };
}

/**
 * The one place an error becomes a response: status, `WWW-Authenticate` (every error: the
 * contract's rule, beyond RFC 6750's 400/401/403, which it allows), `Cache-Control: no-store`, and
 * a JSON body `{"error", "error_description"}`.
 */
export function renderError(err: GuardError, options: RenderOptions): RenderedError {
  const headers: Record<string, string> = {
    'content-type': 'application/json',
    'cache-control': 'no-store',
  };
  const challenges = challengesFor(err, options);
  if (challenges.length > 0) headers['www-authenticate'] = challenges.join(', ');
  // What the route's methods say beside their challenges (httpsig: Accept-Signature, RFC 9421 §5.1),
  // where a signature could change the answer: not on cnfguard's own faults.
  if (CREDENTIAL_STATUSES.has(err.status) && options.methods !== undefined) Object.assign(headers, challengeHeadersFor(options.methods, options));
  if (err.retryAfterSeconds !== undefined) headers['retry-after'] = String(err.retryAfterSeconds);
  // RFC 9449 §8/§9: the nonce to use; the value is ours (base64url), never client text.
  if (err.dpopNonce !== undefined) headers['dpop-nonce'] = challengeSafe(err.dpopNonce);
  // No credentials at all gets no error code, in the body as in the challenge (RFC 6750 §3.1).
  const code = codeOf(err);
  const body = JSON.stringify(code ? { error: code, error_description: err.description } : { error_description: err.description });
  return { status: err.status, headers, body, challenges };
}
