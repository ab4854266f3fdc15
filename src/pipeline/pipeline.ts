/**
 * The request's way through cnfguard, written once. Every edge (the HTTP/1.1 proxy; HTTP/2 and
 * the decision API plug in the same way) turns a request into {@link RequestFacts}, calls
 * {@link Pipeline.evaluate}, and applies the {@link Verdict}. Nothing here knows the protocol; the
 * only I/O, introspection and reading a form body, is injected.
 *
 *   0. documents    public documents (RFC 9728 metadata), before any check  metadata.ts
 *   1. shape        limits, Host, the target parsed once                  path.ts
 *   2. route        both readings of the path choose one route            route.ts
 *   3. body size    a declared length over the route's maxBodyBytes
 *   4. certificate  a trusted proxy's certificate header that is malformed client-cert.ts (edge)
 *   5. token        from the Authorization header only (Bearer or DPoP), none in the URL  token.ts
 *   6. proof        a proof method's scheme (DPoP, HTTPSig): its proof, before any AS call   proof/registry.ts
 *                   (HTTPSig reads the body first, up to httpsig.maxBufferedBodyBytes)
 *   7. validation   introspection or a local JWT, cached (per route)     validator.ts, introspection/cache.ts
 *                   then a proof whose key is the token's (HTTPSig): its signatures and nonces
 *   8. decision     activity, expiry, issuer, audience, binding, scopes   decide.ts, binding.ts
 *   9. form body    read only when the token would be allowed: no token in it
 *  10. verdict      route, decision, target and body to forward, and the identity headers
 *                   (with the signed assertion where the route has one), computed once; the
 *                   edge applies it                      identity-headers.ts, assertion/issuer.ts
 *
 * Each step reports its outcome to an optional {@link PipelineObserver} (observer.ts; `cnfguard
 * explain`); a new step reports itself the same way. Absent at the edges: one undefined check.
 */
import { WELL_KNOWN_PREFIX, type MetadataDirectory } from './metadata.ts';
import type { AssertionIssuer } from '../assertion/issuer.ts';
import { GuardError } from '../oauth/reasons.ts';
import type { DpopDeps } from '../proof/dpop.ts';
import { createHttpsigDeps, type HttpsigDeps } from '../proof/httpsig.ts';
import type { ProofCheck, ProofRequest } from '../proof/method.ts';
import { expectedHtu } from '../proof/htu.ts';
import { methodOfScheme, type ProvenKey } from '../proof/registry.ts';
import type { PipelineObserver } from './observer.ts';
import type { ClientCertificate } from './client-cert.ts';
import { decide, schemeAccepted, type Decision } from './decide.ts';
import { identityHeadersOf } from './identity-headers.ts';
import type { TokenValidator, ValidationSource } from '../validation/validator.ts';
import { parseTarget, pathOf, type ParsedTarget } from './path.ts';
import { hostName, routeFor, type RoutePolicy, type RouteTable } from './route.ts';
import { credentialsFrom, formCarriesToken, queryCarriesToken, type TokenScheme } from './token.ts';

export interface BodyFacts {
  /** Declared Content-Length, when there is one. */
  declaredLength: number | undefined;
  /** A body without a declared length (Transfer-Encoding: chunked). */
  chunked: boolean;
  /** HTTP/1.1: a Transfer-Encoding other than `chunked` alone (gzip, chunked; identity): nothing here can undo it for the upstream. */
  otherTransferCoding?: boolean;
  /** `application/x-www-form-urlencoded`: the one body RFC 6750 would take a token from. */
  form: boolean;
}

/** What reading a form body gave: its bytes, or why it was left unread. */
export type FormRead = { kind: 'read'; bytes: Buffer } | { kind: 'too_large' } | { kind: 'busy' } | { kind: 'aborted' };

/** Reads the form body up to `limitBytes`; supplied by the edge. */
export type FormReader = (limitBytes: number) => Promise<FormRead>;

export interface RequestFacts {
  method: string;
  /** The request target as received (path and query). */
  target: string;
  /**
   * The target travels on as received, not as cnfguard canonicalises it (the decision API: the
   * front forwards its own request), so every reading an upstream could make of it must choose one
   * route (route.ts `routeFor`). Absent or false: the edge forwards the canonical target.
   */
  targetForwardedRaw?: boolean;
  /** Every Host line (HTTP/2: the `:authority`). */
  hostLines: readonly string[] | undefined;
  /** Header lines received. */
  headerCount: number;
  /**
   * HTTP/2: the header list's size, RFC 9113 §6.5.2 (name + value + 32 per field, pseudo-headers
   * included). nghttp2 applies SETTINGS_MAX_HEADER_LIST_SIZE only once the client has acknowledged
   * it, so the first requests of a connection are measured here. The decision API: the client's
   * lines as Node counts them, the front's own left out (its listener's Node limit has room for
   * them). Unset on the HTTP/1.1 proxy listener, where Node's parser enforces the limit.
   */
  headerBytes?: number;
  /** Every Authorization line. */
  authorization: readonly string[] | undefined;
  /** Every DPoP line (the proof, RFC 9449 §4.1). */
  dpop: readonly string[] | undefined;
  /** Every line of any header field, by lower-case name: what an HTTP message signature covers (read only for HTTPSig). */
  fieldLines?: (name: string) => readonly string[] | undefined;
  /** The request has a body this edge does not receive (the decision API: the front keeps it). */
  bodyWithheld?: boolean;
  /** The TCP peer's address. */
  peer: string | undefined;
  certificate: ClientCertificate | undefined;
  /** A forwarded certificate header from a trusted hop that could not be read. */
  certificateError: GuardError | undefined;
  body: BodyFacts;
}

export type BodyPlan =
  /** Nothing to send, or the request's own body within its declared length. */
  | { kind: 'as-received' }
  /** The form body, already read. */
  | { kind: 'buffered'; bytes: Buffer }
  /** A body of unknown length: cut off past `limitBytes`. */
  | { kind: 'limited'; limitBytes: number };

export interface Verdict {
  route: RoutePolicy;
  decision: Decision;
  /** The canonical path and query to forward (the one the route was judged on). */
  target: string;
  /** The validated Host line, forwarded as Host and X-Forwarded-Host. */
  host: string | undefined;
  body: BodyPlan;
  /** A body was left unread and cannot be skipped safely: the edge closes the connection after answering. */
  closeConnection: boolean;
  /** Which validation judged the token (absent when none ran). */
  source?: ValidationSource;
  /** The Authorization scheme the request used (bearer when none could be read): its challenge carries the error. */
  scheme: TokenScheme;
  /** With DPoP nonces: a fresh nonce for the response's `DPoP-Nonce` (RFC 9449 §8.2). */
  dpopNonce?: string;
  /** The validated token's `client_id`, allowed or not (for the access line; absent when no token was validated). */
  clientId?: string | undefined;
  /** When allowed: the identity and claim headers the upstream receives (a front: in the allow answer). */
  identityHeaders?: Readonly<Record<string, string>>;
}

export interface PipelineLimits {
  urlBytes: number;
  headerCount: number;
  /** Checked against `RequestFacts.headerBytes` when the edge measured it. */
  headerBytes?: number;
  formBodyBytes: number;
}

export interface PipelineDependencies {
  routes: RouteTable;
  limits: PipelineLimits;
  validator: TokenValidator;
  /** DPoP proof checking: policy, replay store, nonces (when `dpop.nonce`), clock. */
  dpop: DpopDeps;
  /** HTTP Message Signature checking (`httpsig`); default: the contract's defaults on DPoP's replay store and clock. */
  httpsig?: HttpsigDeps;
  /** RFC 9728 documents, served to anyone before any check. */
  metadata: MetadataDirectory;
  /** With `assertion`: signs the identity for the upstream (verdict step), and the JWKS published at {@link ASSERTION_JWKS_PATH}. */
  assertions?: { issuer: AssertionIssuer; jwks: () => string } | undefined;
  /** Milliseconds since the epoch. */
  now: () => number;
}

export interface Pipeline {
  /** Step 0: the public document a GET or HEAD of `target` on `host` names, if any; no token needed. */
  publicDocument(method: string | undefined, target: string, host: string | undefined): PublicDocument | undefined;
  /** `observer`: told each step's outcome (explain); absent at the edges. */
  evaluate(facts: RequestFacts, readForm: FormReader, observer?: PipelineObserver): Promise<Verdict>;
  readonly routes: RouteTable;
}

/** Where the proxy listener publishes the assertion keys (a public document, like RFC 9728 metadata). */
export const ASSERTION_JWKS_PATH = '/.well-known/cnfguard/jwks.json';

/** A document served before any token check, with how it is sent: every edge writes it as it is. */
export interface PublicDocument {
  /** 404: a path cnfguard owns that names nothing in this config (the JWKS without `assertion`); never judged or forwarded. */
  readonly status: 200 | 404;
  readonly body: string;
  readonly contentType: string;
  readonly cacheControl: string;
}

/**
 * RFC 9728 metadata change only with the config: caches may keep them a while. The assertion
 * JWKS may not be cached: after a key change the previous key is published for one assertion
 * lifetime only (10 s at the least), and a verifier that fetches again on an unknown kid must get
 * the new key at once, not a copy a cache kept from before the change.
 */
const METADATA_DOCUMENT = { status: 200, contentType: 'application/json', cacheControl: 'max-age=300' } as const;
const JWKS_DOCUMENT = { status: 200, contentType: 'application/jwk-set+json', cacheControl: 'no-store' } as const;
const NO_JWKS: PublicDocument = Object.freeze({ status: 404, body: 'not found: no assertion is configured, so no assertion keys are published\n', contentType: 'text/plain; charset=utf-8', cacheControl: 'no-store' });

/** One Host line, a host name or IP literal with an optional port: anything else could route one way and be read another. */
const HOST = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?\.?)(?::\d{1,5})?$/;

/** Step 1: checks on the request's shape that need no route. */
function shapeOf(facts: RequestFacts, limits: PipelineLimits): { target: ParsedTarget; host: string } {
  // Refused on every edge alike (an HTTP/1.1 or HTTP/2 CONNECT, or a front's check of one), before anything else is read of it.
  if (facts.method === 'CONNECT') throw new GuardError('method_unsupported');
  // RFC 9112 §6.1: a transfer coding the server does not understand is 501. Forwarded without it, the upstream would read coded bytes as the body.
  if (facts.body.otherTransferCoding === true) throw new GuardError('transfer_coding_unsupported');
  if (facts.target.length > limits.urlBytes) throw new GuardError('url_too_long');
  if (facts.headerCount > limits.headerCount) throw new GuardError('headers_too_many');
  if (facts.headerBytes !== undefined && limits.headerBytes !== undefined && facts.headerBytes > limits.headerBytes) throw new GuardError('headers_too_large');
  const lines = facts.hostLines;
  if (lines === undefined || lines.length !== 1 || !HOST.test(lines[0] ?? '')) throw new GuardError('host_malformed');
  return { target: parseTarget(facts.target), host: lines[0] as string };
}

const FORM_REFUSALS = {
  too_large: () => new GuardError('form_body_too_large'),
  busy: () => new GuardError('server_busy', { detail: 'buffered form bodies at limits.bufferedBodyBytes', retryAfterSeconds: 1 }),
  aborted: () => new GuardError('client_aborted', { detail: 'the client went away while sending the form body' }),
} as const;

/** A token the decision will refuse for itself (inactive, expired, not yet valid): no proof of it is worth checking. */
function tokenUsable(info: { active: boolean; exp?: number | undefined; nbf?: number | undefined }, nowSeconds: number): boolean {
  return info.active && !(info.exp !== undefined && info.exp <= nowSeconds) && !(info.nbf !== undefined && info.nbf > nowSeconds);
}

/** Stands for a proof left unchecked because the token is refused anyway (decide refuses it first). */
const UNCHECKED: ProvenKey = Object.freeze({ jkt: '' });

export function createPipeline({ routes, validator, dpop, httpsig, now, limits, metadata, assertions }: PipelineDependencies): Pipeline {
  /** What each proof method's check needs, by method id. */
  const httpsigDeps = httpsig ?? createHttpsigDeps({ replayStore: dpop.replayStore, now: dpop.now });
  const proofDeps = { dpop, httpsig: httpsigDeps };
  function publicDocument(method: string | undefined, target: string, host: string | undefined): PublicDocument | undefined {
    if ((method !== 'GET' && method !== 'HEAD') || !target.startsWith('/.well-known/')) return undefined;
    if (target.startsWith(WELL_KNOWN_PREFIX)) {
      const body = metadata.lookup(hostName(host), pathOf(target));
      return body === undefined ? undefined : { ...METADATA_DOCUMENT, body };
    }
    if (pathOf(target) !== ASSERTION_JWKS_PATH) return undefined;
    // The path is cnfguard's with or without `assertion` (docs/signed-trust.md): never the upstream's.
    return assertions === undefined ? NO_JWKS : { ...JWKS_DOCUMENT, body: assertions.jwks() };
  }

  async function evaluate(facts: RequestFacts, readForm: FormReader, observer?: PipelineObserver): Promise<Verdict> {
    let shape: ReturnType<typeof shapeOf>;
    let route = routes.fallback;
    let scheme: TokenScheme = 'bearer';
    let clientId: string | undefined;
    /** The step running: the one a refusal is reported against. */
    let step = 'shape';
    const refuse = (error: GuardError, target: string, host: string | undefined, closeConnection = false): Verdict => {
      observer?.step(step, 'refused', { reason: error.reason, detail: error.detail });
      return {
        route,
        target,
        host,
        decision: { allow: false, error },
        body: { kind: 'as-received' },
        closeConnection,
        scheme,
        ...(clientId !== undefined && { clientId }),
      };
    };
    try {
      shape = shapeOf(facts, limits);
      observer?.step(step, 'passed', { host: shape.host, path: pathOf(shape.target.target) });
      step = 'route';
      route = routeFor(routes, hostName(shape.host), shape.target, { forwardedRaw: facts.targetForwardedRaw === true });
      observer?.step(step, 'passed', { route: route.id, methods: route.methods, binding: route.binding, validation: route.validation });
    } catch (err) {
      if (err instanceof GuardError) return refuse(err, facts.target, undefined);
      throw err;
    }
    const { target, host } = { target: shape.target.target, host: shape.host };
    try {
      const { body } = facts;
      step = 'body size';
      if (body.declaredLength !== undefined && body.declaredLength > route.maxBodyBytes) throw new GuardError('body_too_large');
      step = 'certificate';
      if (facts.certificateError !== undefined) throw facts.certificateError;
      observer?.step(step, 'passed', { thumbprint: facts.certificate?.thumbprint ?? 'none', trusted: facts.certificate?.trusted });
      step = 'token';
      if (queryCarriesToken(shape.target.query)) throw new GuardError('token_in_query');
      const credentials = credentialsFrom(facts.authorization);
      const token = credentials.token;
      scheme = credentials.scheme;
      // The DPoP scheme where DPoP is not accepted: as if no credentials came (the challenges say which schemes are).
      const method = methodOfScheme(scheme);
      if (!schemeAccepted(route, scheme)) throw new GuardError('credentials_missing', { detail: `${method?.scheme?.challenge ?? scheme} scheme on a route without ${method?.id ?? scheme}` });
      observer?.step(step, 'passed', { scheme });
      // The proof first: a request it refuses costs no AS call (and a nonce round trip none either).
      let proof: ProvenKey | undefined;
      let proofFailure: GuardError | undefined;
      let dpopNonce: string | undefined;
      step = 'proof';
      let pending: Extract<ProofCheck, { confirm: unknown }>['confirm'] | undefined;
      /** Under report-only a refused proof is a binding failure like any other: decided (and forwarded, counted) after validation. A store that cannot answer is never reported away. */
      const take = (checked: ProofCheck): void => {
        if (!checked.ok && (route.binding !== 'report-only' || checked.error.status >= 500)) throw checked.error;
        if (!checked.ok) proofFailure = checked.error;
        else if ('confirm' in checked) pending = checked.confirm;
        else {
          proof = checked.key;
          dpopNonce = checked.nonce;
        }
        observer?.step('proof', checked.ok ? 'passed' : 'reported', { method: method?.id, ...(!checked.ok ? { reason: checked.error.reason } : 'confirm' in checked ? { key: "the token's (checked after validation)" } : { jkt: checked.key.jkt }) });
      };
      let buffered: Buffer | undefined;
      if (method?.check !== undefined) {
        let requestBody: ProofRequest['body'] = { kind: 'none' };
        if (method.readsBody === true && facts.bodyWithheld === true) requestBody = { kind: 'unavailable' };
        else if (method.readsBody === true && (body.chunked || (body.declaredLength ?? 0) > 0)) {
          // Read before anything is forwarded: a body too large to check is refused, never streamed on.
          const read = await readForm(Math.min(httpsigDeps.maxBufferedBodyBytes, route.maxBodyBytes));
          if (read.kind !== 'read') return refuse(read.kind === 'too_large' ? new GuardError('httpsig_body_too_large') : FORM_REFUSALS[read.kind](), target, host, true);
          buffered = read.bytes;
          if (buffered.length > 0) requestBody = { kind: 'read', bytes: buffered };
        }
        const received = shape.target.received;
        const request: ProofRequest = {
          lines: (name: string) => (name === 'dpop' ? facts.dpop : name === 'authorization' ? facts.authorization : facts.fieldLines?.(name)),
          method: facts.method,
          uri: expectedHtu(route.publicOrigin, host, received),
          targetUri: `${route.publicOrigin ?? `https://${host}`}${received}${shape.target.query}`,
          body: requestBody,
          accessToken: token,
        };
        take(await method.check(request, proofDeps));
      }
      // A verified certificate is charged its own introspection budget, the rest their address's.
      const certificate = facts.certificate?.trusted === true ? facts.certificate.thumbprint : undefined;
      step = 'validation';
      const { info, source } = await validator.validate(token, route, { peer: facts.peer, certificate });
      clientId = info.clientId;
      observer?.step(step, 'passed', { source, active: info.active, tokenType: info.tokenType, clientId, subject: info.subject, scope: info.scope, iss: info.iss, aud: info.aud, exp: info.exp, nbf: info.nbf, acr: info.acr, authTime: info.authTime, cnf: info.cnf });
      // A proof whose key is the token's: checked now, unless the decision refuses the token anyway.
      if (pending !== undefined) {
        step = 'proof';
        if (tokenUsable(info, now() / 1000)) take(await pending(info.cnf));
        else proof = UNCHECKED;
      }
      step = 'decision';
      const decision = decide({ token: info, certificate: facts.certificate, policy: route, now: now() / 1000, scheme, proof, proofFailure });
      observer?.step(step, decision.allow ? (decision.wouldDeny === undefined ? 'passed' : 'reported') : 'refused', decision.allow ? { allowed: decision.reason, verifiedBy: decision.verifiedBy, wouldDeny: decision.wouldDeny?.reason } : { reason: decision.error.reason, detail: decision.error.detail, ...decision.error.stepUp });
      let identityHeaders = decision.allow ? identityHeadersOf(decision, route) : undefined;
      // The signed identity (assertion/issuer.ts), beside the plain headers, so every edge and the decision API carry it.
      if (decision.allow && route.assertion !== undefined && assertions !== undefined) {
        const assertion = assertions.issuer.issue(info, route, decision.verifiedBy);
        observer?.step('assertion', 'passed', { header: assertions.issuer.header, issued: assertion !== undefined });
        if (assertion !== undefined) identityHeaders = { ...identityHeaders, [assertions.issuer.header]: assertion };
      }
      const verdict = (body: BodyPlan): Verdict => ({ route, target, host, decision, body, closeConnection: false, source, scheme, clientId, ...(dpopNonce !== undefined && { dpopNonce }), ...(identityHeaders !== undefined && { identityHeaders }) });
      if (buffered !== undefined) {
        // The body was read for its signature: it travels as read, and a form is still searched for a token.
        if (decision.allow && body.form && formCarriesToken(buffered)) throw new GuardError('token_in_body');
        return verdict(decision.allow ? { kind: 'buffered', bytes: buffered } : { kind: 'as-received' });
      }
      if (!decision.allow || !body.form) return verdict(decision.allow && body.chunked ? { kind: 'limited', limitBytes: route.maxBodyBytes } : { kind: 'as-received' });
      step = 'form body';
      const form = await readForm(Math.min(limits.formBodyBytes, route.maxBodyBytes));
      if (form.kind !== 'read') return refuse(FORM_REFUSALS[form.kind](), target, host, true);
      if (formCarriesToken(form.bytes)) throw new GuardError('token_in_body');
      return verdict({ kind: 'buffered', bytes: form.bytes });
    } catch (err) {
      if (err instanceof GuardError) return refuse(err, target, host);
      throw err;
    }
  }
  return { publicDocument, evaluate, routes };
}
