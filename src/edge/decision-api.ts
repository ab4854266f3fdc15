/**
 * The decision API: an edge into the same pipeline for a proxy in front that asks before it
 * forwards (nginx `auth_request`, Envoy ext_authz HTTP service, Traefik forwardAuth). The check
 * request becomes the original request's facts (decision-facts.ts); the answer is the verdict:
 * 200 with the identity headers the proxy listener would set upstream, or the refusal the proxy
 * listener would send (same renderer). Only `trustedProxies` peers may ask; anyone else gets 403
 * and no pipeline call. RFC 9728 documents are public: served at their own paths to anyone, so
 * a front routes them here, and a check of one is allowed with no identity.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from '../log.ts';
import type { AccessLog } from '../observe/access-log.ts';
import { forwardedClient } from '../observe/traffic.ts';
import { traceHeadersOf, type TracingSlot } from '../observe/tracing.ts';
import type { GuardError } from '../oauth/reasons.ts';
import type { CertificateSource } from '../pipeline/client-cert.ts';
import type { IdentityHeaderNames } from '../pipeline/identity-headers.ts';
import type { FormReader } from '../pipeline/pipeline.ts';
import type { ClaimHeader, RoutePolicy } from '../pipeline/route.ts';
import { listenerOptions, listenerProperties, type Limits } from '../proxy/limits.ts';
import type { Runtime } from '../runtime.ts';
import { UNIX_SOCKET_PEER } from '../tls/peers.ts';
import { answerHeaders, renderFor, sendDocument } from './answer.ts';
import type { RenderedError } from './render.ts';
import { FRONT_HEADER_ALLOWANCE, FRONT_HEADER_BYTES_ALLOWANCE, decisionFacts, originalOf, type DecisionFront } from './decision-facts.ts';
import { headerLinesOf } from './http-facts.ts';
import { answerParserError } from './connection-errors.ts';
import { edgeFailures, Exchange } from './exchange.ts';

export interface DecisionApiDependencies {
  runtime: () => Runtime;
  certificates: CertificateSource;
  accessLog: AccessLog;
  logger: Logger;
  /** With `tracing`: a span per check; its peers are trusted proxies, so their trace headers are followed. */
  tracing?: TracingSlot | undefined;
}

/**
 * nginx's auth_request relays 401 and 403 and turns every other status into 500. /nginx answers
 * those others with 403 and the original status in `X-Cnfguard-Status` (README: Decision API).
 */
function statusFor(front: DecisionFront, status: number): number {
  return front === 'nginx' && status !== 401 && status !== 403 ? 403 : status;
}

const ORIGINAL_STATUS_HEADER = 'x-cnfguard-status';

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
function unsetIdentityHeaders(set: Readonly<Record<string, string>>, names: IdentityHeaderNames, claimHeaders: readonly ClaimHeader[], assertionHeader: string): string[] {
  const managed = new Set([...Object.values(names), ...claimHeaders.map((c) => c.header), assertionHeader]);
  return [...managed].filter((name) => set[name] === undefined);
}

/** The identity headers of an allowed answer, as a fresh object; for Envoy, with the names it must remove. */
function managed(front: DecisionFront, identity: Readonly<Record<string, string>>, { headerNames: names, claimHeaders, assertionHeader }: Pick<RoutePolicy, 'headerNames' | 'claimHeaders' | 'assertionHeader'>): Record<string, string> {
  if (front !== 'envoy') return { ...identity };
  const unset = unsetIdentityHeaders(identity, names, claimHeaders, assertionHeader);
  return unset.length > 0 ? { ...identity, [ENVOY_HEADERS_TO_REMOVE]: unset.join(', ') } : { ...identity };
}

/**
 * A parser refusal of a check request that was on its way to /nginx (malformed bytes the client
 * sent, which nginx passed on): nginx's rule applies (403, the status beside it), or auth_request
 * would make it a 500. A refusal that names no path (a stalled front) keeps its status.
 */
function asTheFrontRelays(rendered: RenderedError, rawPacket: Buffer | undefined): RenderedError {
  if (rawPacket === undefined || !/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+ \/nginx[ ?]/.test(rawPacket.toString('latin1', 0, 64))) return rendered;
  const status = statusFor('nginx', rendered.status);
  return status === rendered.status ? rendered : { ...rendered, status, headers: { ...rendered.headers, [ORIGINAL_STATUS_HEADER]: String(rendered.status) } };
}

/** A refusal as the front relays it (statusFor), the real status beside it when they differ. */
function sendRefusal(res: ServerResponse, front: DecisionFront, rendered: RenderedError, requestId: string): void {
  const status = statusFor(front, rendered.status);
  const extra = status === rendered.status ? {} : { [ORIGINAL_STATUS_HEADER]: String(rendered.status) };
  res.writeHead(status, { ...rendered.headers, ...extra, 'content-length': Buffer.byteLength(rendered.body), ...answerHeaders(undefined, requestId) });
  res.end(rendered.body);
}

/** The access line's `edge` of each front (built once, not per request). */
const EDGE_NAMES: Readonly<Record<DecisionFront, string>> = { nginx: 'decision-api/nginx', envoy: 'decision-api/envoy', traefik: 'decision-api/traefik' };

const EMPTY_FORM: FormReader = () => Promise.resolve({ kind: 'read', bytes: Buffer.alloc(0) });

/** Who asks: a TCP peer by its address; every peer of the Unix socket as UNIX_SOCKET_PEER (a `unixSocket: true` entry). */
export type DecisionTransport = 'tcp' | 'unix';

export function createDecisionHandler(deps: DecisionApiDependencies, transport: DecisionTransport = 'tcp'): (req: IncomingMessage, res: ServerResponse) => void {
  const { certificates, accessLog, logger } = deps;
  const peerOf = transport === 'unix' ? () => UNIX_SOCKET_PEER : (req: IncomingMessage) => req.socket.remoteAddress;

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const runtime = deps.runtime();
    const lines = headerLinesOf(req);
    const document = runtime.pipeline.publicDocument(req.method, req.url ?? '/', lines('host')?.[0]);
    if (document !== undefined) return sendDocument(res, req.method, document);
    const peer = peerOf(req);
    if (!certificates.isTrustedProxy(peer)) {
      res.writeHead(403, { 'content-length': 0 }).end();
      return;
    }
    const original = originalOf(req, lines);
    if (original === undefined) {
      res.writeHead(404, { 'content-length': 0 }).end();
      return;
    }
    // A public document the front did not route here: allowed as it is, with no identity (and no access line, as on the proxy listener).
    // The JWKS path without `assertion` publishes nothing: the request is judged as any other.
    if (original.method !== undefined && original.target !== undefined && original.overTls && runtime.pipeline.publicDocument(original.method, original.target, original.hostLines?.[0])?.status === 200) {
      res.writeHead(200, { ...managed(original.front, {}, runtime.pipeline.routes.fallback), 'content-length': 0 }).end();
      return;
    }
    const edge = EDGE_NAMES[original.front];
    const span = deps.tracing?.current?.request(edge, original.method, traceHeadersOf(req.headers));
    const exchange = new Exchange(accessLog, { method: original.method, target: original.target, client: peer, forwardedFor: forwardedClient(lines('x-forwarded-for')), edge }, span);
    // The status the decision stands for: /nginx answers most refusals 403 (statusFor), and the
    // recipe restores this one for the client; the access line, the metrics and the span say it.
    let decided: number | undefined;
    const refuse = (err: GuardError): void => {
      const rendered = renderFor(err, runtime.realm, exchange.verdict);
      decided = rendered.status;
      sendRefusal(res, original.front, rendered, exchange.requestId);
    };
    try {
      const { method, target } = original;
      if (method === undefined || target === undefined) {
        exchange.fail(edgeFailures.frontIncomplete(original.front));
        return refuse(exchange.failure as GuardError);
      }
      if (!original.overTls) {
        // The proxy listener only speaks TLS; a token sent in the clear is not judged (RFC 6750 §5.3).
        exchange.fail(edgeFailures.frontInsecure(original.front));
        return refuse(exchange.failure as GuardError);
      }
      const facts = decisionFacts(req, lines, peer, { ...original, method, target }, certificates);
      const verdict = await exchange.evaluate(runtime.pipeline, facts, EMPTY_FORM);
      if (!verdict.decision.allow) return refuse(verdict.decision.error);
      // One header object, filled in place: the answer is the decision API's whole output.
      const headers: Record<string, string | number> = Object.assign(managed(original.front, verdict.identityHeaders ?? {}, verdict.route), answerHeaders(verdict, exchange.requestId));
      headers['content-length'] = 0;
      res.writeHead(200, headers).end();
    } catch (err) {
      logger.error({ reqId: exchange.requestId, err }, 'decision failed');
      exchange.fail(edgeFailures.internal());
      if (!res.headersSent) refuse(exchange.failure as GuardError);
    } finally {
      // The line is written once the answer is (a check has no body to wait for; no close listener
      // a request). A front that went away while the pipeline ran was answered to no one.
      if (req.socket.destroyed && !res.writableFinished) exchange.fail(edgeFailures.clientAborted('the front closed the connection before the answer'));
      exchange.finish(decided ?? res.statusCode);
    }
  }
  return (req, res) => void handle(req, res).catch((err: unknown) => logger.error({ err }, 'decision failed'));
}

/**
 * A decision API listener (TCP or Unix socket): plain HTTP, with the proxy listener's `limits`, the
 * front's own header lines and bytes allowed for above them. Node answers nothing itself that
 * nginx's auth_request would turn into a 500: the client's header count and bytes are judged by
 * the pipeline (431, a decision with its access line), and a check request without Host (the
 * client's HTTP/1.0 request had none) reaches the pipeline, which refuses it as the proxy
 * listener refuses an HTTP/1.0 request without Host (400 host_malformed). What the parser itself
 * refuses (malformed HTTP from the front, a stalled front, headers past the front's allowance)
 * keeps its status (nginx makes it a 500) and gets its access line.
 */
export function createDecisionApi(deps: DecisionApiDependencies, limits: Limits, transport: DecisionTransport = 'tcp'): Server {
  const options = {
    ...listenerOptions(limits),
    maxHeaderSize: limits.headerBytes + FRONT_HEADER_BYTES_ALLOWANCE,
    // A check request has no body (the front keeps the client's): Node then skips the request stream's events.
    optimizeEmptyRequests: true,
  };
  const server = createServer(options, createDecisionHandler(deps, transport));
  // What Node's parser refuses (malformed HTTP, a header timeout, headers past the front's allowance)
  // is answered through the renderer with a request id and an access line, as on the proxy listener.
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) =>
    answerParserError(err, socket, { maxHeadersCount: server.maxHeadersCount ?? Infinity, accessLog: deps.accessLog, realm: deps.runtime().realm, edge: 'decision-api', answered: asTheFrontRelays }),
  );
  const { maxConnections, maxHeadersCount } = listenerProperties(limits);
  server.maxConnections = maxConnections;
  server.maxHeadersCount = maxHeadersCount + FRONT_HEADER_ALLOWANCE;
  return server;
}
