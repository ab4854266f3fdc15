/**
 * The request's way through cnfguard, one step a line:
 *   route -> token (header only) -> introspection (cached) -> decision (binding, policy).
 * Input is plain data gathered by the HTTP edge (src/proxy/handler.ts); output is the route and
 * the decision. Only introspection does I/O, and it is injected.
 */
import { GuardError } from '../oauth/errors.ts';
import type { ClientCertificate } from './client-cert.ts';
import { decide, type Decision } from './decide.ts';
import type { TokenIntrospector } from './introspect.ts';
import { normalizeTarget, type NormalizedTarget } from './path.ts';
import { matchRoute, type RoutePolicy, type RouteTable } from './route.ts';
import { bearerTokenFrom, formCarriesToken, queryCarriesToken } from './token.ts';

export interface RequestFacts {
  /** Every Host header line. */
  hostHeaders?: readonly string[] | undefined;
  /** Header lines received. */
  headerCount?: number;
  /** Declared Content-Length, when there is one. */
  contentLength?: number | undefined;
  /** Every Authorization header line (`req.headersDistinct.authorization`). */
  authorization: readonly string[] | undefined;
  /** The request target as received (path and query). */
  target: string;
  /** Host name without port, lower-case. */
  host: string;
  /** The body, when it is a form (the only body RFC 6750 would take a token from). */
  formBody: Buffer | undefined;
  /** A form body larger than cnfguard reads to inspect it. */
  formBodyTooLarge?: boolean;
  certificate: ClientCertificate | undefined;
  /** A forwarded certificate header from a trusted hop that could not be read. */
  certificateError?: GuardError | undefined;
}

export interface Verdict {
  route: RoutePolicy;
  decision: Decision;
  /** The canonical path and query to forward (the one the route was matched on). */
  target: string;
}

export interface GuardLimits {
  urlBytes: number;
  headerCount: number;
}

export interface GuardDependencies {
  routes: RouteTable;
  limits?: GuardLimits;
  introspector: TokenIntrospector;
  /** Milliseconds since the epoch. */
  now: () => number;
}

export function pathOf(target: string): string {
  const end = target.search(/[?#]/);
  return end === -1 ? target : target.slice(0, end);
}

export type Authorize = (facts: RequestFacts) => Promise<Verdict>;

/** One Host line, a host name or IP literal with an optional port: anything else could route one way and be read another. */
const HOST = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?\.?)(?::\d{1,5})?$/;

/** Checks on the request's shape that need no route: size limits, Host, path. */
function shapeOf(facts: RequestFacts, limits: GuardLimits | undefined): NormalizedTarget {
  if (limits !== undefined && facts.target.length > limits.urlBytes) throw new GuardError('url_too_long');
  if (limits !== undefined && (facts.headerCount ?? 0) > limits.headerCount) throw new GuardError('headers_too_many');
  if (facts.hostHeaders !== undefined && (facts.hostHeaders.length !== 1 || !HOST.test(facts.hostHeaders[0] ?? ''))) {
    throw new GuardError('host_malformed');
  }
  return normalizeTarget(facts.target);
}

export function createGuard({ routes, introspector, now, limits }: GuardDependencies): Authorize {
  return async function authorize(facts) {
    let normalized: NormalizedTarget;
    try {
      normalized = shapeOf(facts, limits);
    } catch (err) {
      if (err instanceof GuardError) return { route: routes.fallback, decision: { allow: false, error: err }, target: facts.target };
      throw err;
    }
    const route = matchRoute(routes, facts.host, normalized.path);
    const { target } = normalized;
    try {
      if (facts.contentLength !== undefined && facts.contentLength > route.maxBodyBytes) throw new GuardError('body_too_large');
      if (facts.certificateError !== undefined) throw facts.certificateError;
      if (queryCarriesToken(facts.target)) throw new GuardError('token_in_query');
      const token = bearerTokenFrom(facts.authorization);
      if (facts.formBodyTooLarge === true) throw new GuardError('form_body_too_large');
      if (facts.formBody !== undefined && formCarriesToken(facts.formBody)) throw new GuardError('token_in_body');
      const info = await introspector.lookup(token);
      return { route, target, decision: decide({ token: info, certificate: facts.certificate, policy: route, now: now() / 1000 }) };
    } catch (err) {
      if (err instanceof GuardError) return { route, target, decision: { allow: false, error: err } };
      throw err;
    }
  };
}
