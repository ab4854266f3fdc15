/**
 * One request's life at any edge, the same for every way in: its id, its timer, the verdict, what
 * went wrong after the verdict, and the one access line (and count) written when it is over. Every
 * edge (HTTP/1.1 and HTTP/2 proxy, upgrades, the decision API) opens one exchange per request and
 * closes it once; what the line says is built here, never in an edge.
 */
import { randomUUID } from 'node:crypto';
import type { AccessLog } from '../observe/access-log.ts';
import type { RequestSpan, UpstreamSpan } from '../observe/tracing.ts';
import type { Traffic } from '../observe/traffic.ts';
import { GuardError } from '../oauth/reasons.ts';
import { pathOf } from '../pipeline/path.ts';
import type { FormReader, Pipeline, RequestFacts, Verdict } from '../pipeline/pipeline.ts';


/** Who the request came from, read when it started (an HTTP/2 session's socket may be gone by its end). */
export interface ExchangeOrigin {
  method: string | undefined;
  /** The target as received: the access line's path until a verdict names the canonical one. */
  target: string | undefined;
  /** The TCP peer's address. */
  client: string | undefined;
  /** The client a `trustedProxies` peer names, when it is one. */
  forwardedFor: string | undefined;
  /** Which edge answered, when not the proxy listener (e.g. `decision-api/nginx`). */
  edge?: string;
}

/** Failures an edge meets after (or instead of) a verdict, with their reason ids. */
export const edgeFailures = {
  clientAborted: (detail: string) => new GuardError('client_aborted', { detail }),
  bodyTooLarge: (detail: string) => new GuardError('body_too_large', { detail }),
  requestTimeout: (detail: string) => new GuardError('request_timeout', { detail }),
  draining: () => new GuardError('server_busy', { detail: 'draining' }),
  internal: () => new GuardError('internal_error'),
  frontIncomplete: (front: string) => new GuardError('path_malformed', { detail: `the ${front} check request does not say the original method (one RFC 9110 token) and target` }),
  frontInsecure: (front: string) => new GuardError('transport_insecure', { detail: `the ${front} check request says the original request was not HTTPS` }),
} as const;

/**
 * One request's exchange. A class, not a closure: one is made per request, and its methods live
 * on the prototype (a request that outlives a young-generation GC is promoted with all it holds).
 */
export class Exchange {
  readonly requestId = randomUUID();
  verdict: Verdict | undefined = undefined;
  upstreamStatus: number | undefined = undefined;
  #failure: GuardError | undefined = undefined;
  #finished = false;
  readonly #started = performance.now();
  readonly #accessLog: AccessLog;
  readonly #origin: ExchangeOrigin;
  /** With tracing: this request's `cnfguard.request` span, ended with the access line. */
  readonly span: RequestSpan | undefined;

  constructor(accessLog: AccessLog, origin: ExchangeOrigin, span?: RequestSpan) {
    this.#accessLog = accessLog;
    this.#origin = origin;
    this.span = span;
  }

  /**
   * The pipeline's verdict, and the one this exchange keeps. With tracing it is judged under the
   * request's span (the parent of introspection, JWKS and store spans); without, no closure is made.
   */
  async evaluate(pipeline: Pipeline, facts: RequestFacts, readForm: FormReader): Promise<Verdict> {
    const span = this.span;
    this.verdict = await (span === undefined ? pipeline.evaluate(facts, readForm) : span.run(() => pipeline.evaluate(facts, readForm)));
    return this.verdict;
  }

  /** With tracing: the upstream call's span, whose trace context replaces the client's in `headers` (its tracestate dropped). */
  upstreamSpan(upstream: URL, headers: Record<string, unknown>): UpstreamSpan | undefined {
    const span = this.span?.upstream(upstream);
    if (span !== undefined) {
      delete headers.tracestate;
      Object.assign(headers, span.headers);
    }
    return span;
  }

  /** What went wrong after the verdict: the upstream, the body, the client, or cnfguard itself. */
  get failure(): GuardError | undefined {
    return this.#failure;
  }

  /** Records `err` as what went wrong, unless something already was. Returns whether it was recorded. */
  fail(err: GuardError): boolean {
    if (this.#failure !== undefined) return false;
    this.#failure = err;
    return true;
  }

  /** The status the access line reports: 499 when the client went away first. */
  statusFor(sent: number): number {
    return this.#failure?.reason === 'client_aborted' ? 499 : sent;
  }

  /** Writes the access line and counts the request; only the first call counts. */
  finish(status: number, traffic?: Traffic): void {
    if (this.#finished) return;
    this.#finished = true;
    const { verdict } = this;
    const origin = this.#origin;
    const decision = verdict?.decision;
    const outcome = this.#accessLog.record({
      requestId: this.requestId,
      method: origin.method,
      path: pathOf(verdict?.target ?? origin.target ?? '/'),
      status: this.statusFor(status),
      verdict,
      failure: this.#failure,
      upstreamStatus: this.upstreamStatus,
      thumbprint: decision?.allow === true ? decision.identity.certificate?.thumbprint : undefined,
      latencyMs: Math.round((performance.now() - this.#started) * 100) / 100,
      client: origin.client,
      forwardedFor: origin.forwardedFor,
      bytesIn: traffic?.bytesIn,
      bytesOut: traffic?.bytesOut,
      ...(origin.edge !== undefined && { edge: origin.edge }),
    });
    if (this.span !== undefined) {
      const proofMethod = decision?.allow === true ? (decision.verifiedBy?.join('+') ?? 'none') : 'none';
      this.span.end({ requestId: this.requestId, route: outcome.route, decision: outcome.decision, reason: outcome.reason, status: this.statusFor(status), proofMethod });
    }
  }
}
