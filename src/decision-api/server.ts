/**
 * The decision API: a second edge into the same pipeline, for a proxy in front that asks before
 * it forwards (nginx `auth_request`, Envoy ext_authz HTTP service, Traefik forwardAuth). Each
 * path reads the ORIGINAL request the way its proxy sends it, turns it into {@link RequestFacts},
 * and answers from the {@link Verdict}: 200 with the identity headers the proxy listener would set
 * upstream, or the refusal the proxy listener would send (same renderer). Only `trustedProxies`
 * peers may call it; anyone else gets 403 and no pipeline call.
 *
 * The auth subrequest carries no body: the facts say "no body", and the form reader passed to the
 * pipeline returns an empty read (it is never reached with `form: false`).
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Logger } from '../log.ts';
import type { AccessLog } from '../observe/access-log.ts';
import { forwardedClient } from '../observe/traffic.ts';
import { GuardError } from '../oauth/errors.ts';
import type { CertificateSource } from '../pipeline/client-cert.ts';
import { setIdentityHeaders, type IdentityHeaderNames } from '../pipeline/identity-headers.ts';
import type { FormReader, RequestFacts, Verdict } from '../pipeline/pipeline.ts';
import type { ClaimHeader } from '../pipeline/route.ts';
import { pathOf } from '../proxy/proxy-edge.ts';
import { renderFor } from '../proxy/respond.ts';
import type { Runtime } from '../runtime.ts';

export type DecisionFront = 'nginx' | 'envoy' | 'traefik';

export interface DecisionApiDependencies {
  runtime: () => Runtime;
  certificates: CertificateSource;
  accessLog: AccessLog;
  logger: Logger;
}

/** The original request as a front proxy describes it. */
interface Original {
  front: DecisionFront;
  method: string | undefined;
  target: string | undefined;
  hostLines: readonly string[] | undefined;
  /** False when the front says the original request was not HTTPS (Traefik's X-Forwarded-Proto). */
  overTls: boolean;
}

const ENVOY_PREFIX = '/envoy';

const one = (lines: string[] | undefined): string | undefined => (lines?.length === 1 ? lines[0] : undefined);

/** Which front is asking, and what it says the original request was; undefined for an unknown path. */
export function originalOf(req: IncomingMessage): Original | undefined {
  const url = req.url ?? '/';
  const path = pathOf(url);
  const h = req.headersDistinct;
  // nginx and Envoy say nothing of the scheme: the recipes listen with TLS only.
  if (path === '/nginx') return { front: 'nginx', method: one(h['x-original-method']), target: one(h['x-original-uri']), hostLines: h.host, overTls: true };
  if (path === '/traefik') {
    const host = h['x-forwarded-host'];
    // Traefik always sends X-Forwarded-Proto (forward.go): anything but one `https` is a plain-HTTP entry point.
    const overTls = one(h['x-forwarded-proto'])?.toLowerCase() === 'https';
    return { front: 'traefik', method: one(h['x-forwarded-method']), target: one(h['x-forwarded-uri']), hostLines: host, overTls };
  }
  if (url === ENVOY_PREFIX || url.startsWith(`${ENVOY_PREFIX}/`) || url.startsWith(`${ENVOY_PREFIX}?`)) {
    const rest = url.slice(ENVOY_PREFIX.length);
    return { front: 'envoy', method: req.method, target: rest.startsWith('/') ? rest : `/${rest}`, hostLines: h.host, overTls: true };
  }
  return undefined;
}

/**
 * nginx's auth_request relays 401 and 403 and turns every other status into 500. /nginx answers
 * those others with 403 and the original status in `X-Cnfguard-Status` (README: Decision API).
 */
function statusFor(front: DecisionFront, status: number): number {
  return front === 'nginx' && status !== 401 && status !== 403 ? 403 : status;
}

/**
 * Envoy's HTTP ext_authz copies the headers of a 200 that `allowed_upstream_headers` matches onto
 * the upstream request, overwriting the client's copies, and then removes the ones this header
 * names (ext_authz_http_impl.cc). An identity header the verdict leaves out (no `sub`, no
 * certificate, no DPoP key) would otherwise reach the upstream as the client sent it. nginx's
 * `proxy_set_header` with an empty value and Traefik's `authResponseHeaders` (delete, then copy)
 * need no such help.
 */
export const ENVOY_HEADERS_TO_REMOVE = 'x-envoy-auth-headers-to-remove';

/** The identity and claim header names a verdict manages but did not set, in a stable order. */
function unsetIdentityHeaders(set: Record<string, unknown>, names: IdentityHeaderNames, claimHeaders: readonly ClaimHeader[]): string[] {
  const managed = new Set([...Object.values(names), ...claimHeaders.map((c) => c.header)]);
  return [...managed].filter((name) => set[name] === undefined);
}

const EMPTY_FORM: FormReader = () => Promise.resolve({ kind: 'read', bytes: Buffer.alloc(0) });

export function createDecisionHandler(deps: DecisionApiDependencies): (req: IncomingMessage, res: ServerResponse) => void {
  const { certificates, accessLog, logger } = deps;

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = performance.now();
    const peer = req.socket.remoteAddress;
    if (!certificates.isTrustedProxy(peer)) {
      res.writeHead(403, { 'content-length': 0 }).end();
      return;
    }
    const original = originalOf(req);
    if (original === undefined) {
      res.writeHead(404, { 'content-length': 0 }).end();
      return;
    }
    const runtime = deps.runtime();
    const requestId = randomUUID();
    let verdict: Verdict | undefined;
    let failure: GuardError | undefined;
    const path = (): string => (verdict === undefined ? pathOf(original.target ?? '/') : pathOf(verdict.target));
    res.once('close', () => {
      accessLog.record({
        requestId,
        method: original.method,
        path: path(),
        status: res.statusCode,
        verdict,
        failure,
        upstreamStatus: undefined,
        thumbprint: verdict?.decision.allow === true ? verdict.decision.identity.certificate?.thumbprint : undefined,
        latencyMs: Math.round((performance.now() - started) * 100) / 100,
        edge: `decision-api/${original.front}`,
        client: peer,
        forwardedFor: forwardedClient(req.headers['x-forwarded-for']),
      });
    });
    const refuse = (err: GuardError): void => {
      const rendered = renderFor(err, runtime.realm, verdict);
      const status = statusFor(original.front, rendered.status);
      const extra = status === rendered.status ? {} : { 'x-cnfguard-status': String(rendered.status) };
      res.writeHead(status, { ...rendered.headers, ...extra, 'content-length': Buffer.byteLength(rendered.body), 'x-request-id': requestId });
      res.end(rendered.body);
    };
    try {
      let certificate;
      let certificateError;
      try {
        certificate = certificates.certificateOf({ socket: undefined, peerAddress: peer, headers: req.headers, headersDistinct: req.headersDistinct });
      } catch (err) {
        if (!(err instanceof GuardError)) throw err;
        certificateError = err;
      }
      if (original.method === undefined || original.target === undefined) {
        failure = new GuardError('path_malformed', { detail: `the ${original.front} check request does not say the original method and target` });
        refuse(failure);
        return;
      }
      if (!original.overTls) {
        // The proxy listener only speaks TLS; a token sent in the clear is not judged (RFC 6750 §5.3).
        failure = new GuardError('transport_insecure', { detail: `the ${original.front} check request says the original request was not HTTPS` });
        refuse(failure);
        return;
      }
      const facts: RequestFacts = {
        method: original.method,
        target: original.target,
        hostLines: original.hostLines,
        headerCount: req.rawHeaders.length / 2,
        authorization: req.headersDistinct.authorization,
        // The front passes the client's headers on: the DPoP proof among them.
        dpop: req.headersDistinct.dpop,
        peer,
        certificate,
        certificateError,
        body: { declaredLength: undefined, chunked: false, form: false },
        // The front forwards the original target as it came, not the path judged here.
        targetForwardedRaw: true,
      };
      verdict = await runtime.pipeline.evaluate(facts, EMPTY_FORM);
      const { decision, route } = verdict;
      if (!decision.allow) {
        refuse(decision.error);
        return;
      }
      const headers: Record<string, string | string[] | undefined> = {};
      setIdentityHeaders(headers, decision.identity, route.headerNames, route.claimHeaders);
      headers[route.headerNames.binding] = decision.reason;
      if (original.front === 'envoy') {
        const unset = unsetIdentityHeaders(headers, route.headerNames, route.claimHeaders);
        if (unset.length > 0) headers[ENVOY_HEADERS_TO_REMOVE] = unset.join(', ');
      }
      headers['x-request-id'] = requestId;
      if (verdict.dpopNonce !== undefined) headers['dpop-nonce'] = verdict.dpopNonce;
      res.writeHead(200, { ...headers, 'content-length': 0 });
      res.end();
    } catch (err) {
      logger.error({ reqId: requestId, err }, 'decision failed');
      failure = new GuardError('internal_error');
      if (!res.headersSent) refuse(failure);
    }
  }
  return (req, res) => void handle(req, res);
}

export function createDecisionApi(deps: DecisionApiDependencies): Server {
  const server = createServer({ requestTimeout: 30_000, headersTimeout: 10_000 }, createDecisionHandler(deps));
  return server;
}
