/**
 * The proxy edge, HTTP/1.1 and HTTP/2 alike: request -> facts -> pipeline -> verdict, then the
 * answer: the refusal (gRPC calls get theirs as trailers-only), or the request forwarded with the
 * upstream headers the verdict implies. One access line and one count per request, when its
 * response is over (so 413, 502, 504 and client aborts after forwarding are counted as what they
 * were).
 */
import { randomUUID } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import { constants as h2constants, type Http2ServerRequest, type Http2ServerResponse } from 'node:http2';
import { Readable } from 'node:stream';
import type { Metrics } from '../admin/metrics.ts';
import { WELL_KNOWN_PREFIX } from '../discovery/resource-metadata.ts';
import type { Logger } from '../log.ts';
import type { AccessLog } from '../observe/access-log.ts';
import { connectionTraffic, declaredTraffic, forwardedClient } from '../observe/traffic.ts';
import { GuardError } from '../oauth/errors.ts';
import type { CertificateSource } from '../pipeline/client-cert.ts';
import type { Verdict } from '../pipeline/pipeline.ts';
import { hostName } from '../pipeline/route.ts';
import { upstreamHeaders, upstreamTrailers } from '../pipeline/upstream-headers.ts';
import type { Runtime } from '../runtime.ts';
import { formReader, limitBody, type BodyBudget } from './body.ts';
import { isHttp2, peerAddress, requestFacts, type ProxyRequest } from './facts.ts';
import type { Forwarder } from './forward.ts';
import { isGrpc, renderFor, sendGrpcRefusal, sendRendered } from './respond.ts';

export type ProxyResponse = ServerResponse | Http2ServerResponse;

export interface EdgeDependencies {
  runtime: () => Runtime;
  forwarder: Forwarder;
  metrics: Metrics;
  logger: Logger;
  accessLog: AccessLog;
  certificates: CertificateSource;
  bodyBudget: BodyBudget;
  /** While draining, every response closes its connection. */
  draining: () => boolean;
  /** `limits.requestTimeoutMs` in force: an HTTP/2 request must be received whole within it (Node times HTTP/1.1 itself). */
  requestTimeoutMs: () => number;
}

export function pathOf(target: string): string {
  const end = target.search(/[?#]/);
  return end === -1 ? target : target.slice(0, end);
}

/** RFC 9728 metadata is public: answered before any token check. */
function serveMetadata(runtime: Runtime, req: ProxyRequest, res: ProxyResponse): boolean {
  if ((req.method !== 'GET' && req.method !== 'HEAD') || !req.url?.startsWith(WELL_KNOWN_PREFIX)) return false;
  const body = runtime.metadata.lookup(hostName((req.headers[':authority'] as string | undefined) ?? req.headers.host), pathOf(req.url));
  if (body === undefined) return false;
  (res as ServerResponse).writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'cache-control': 'max-age=300' });
  (res as ServerResponse).end(req.method === 'HEAD' ? undefined : body);
  return true;
}

export function createProxyEdge(deps: EdgeDependencies): (req: ProxyRequest, res: ProxyResponse) => void {
  const { forwarder, metrics, logger, accessLog } = deps;

  async function handle(req: ProxyRequest, res: ProxyResponse): Promise<void> {
    const started = performance.now();
    const runtime = deps.runtime();
    const h2 = isHttp2(req);
    // HTTP/2 sessions are told by GOAWAY (app stop); an HTTP/1.1 response closes its connection.
    if (deps.draining() && !h2) (res as ServerResponse).shouldKeepAlive = false;
    if (serveMetadata(runtime, req, res)) return;
    const requestId = randomUUID();
    const form = formReader(req, deps.bodyBudget);
    let verdict: Verdict | undefined;
    let failure: GuardError | undefined;
    let upstreamStatus: number | undefined;
    // Connection facts are read now: an HTTP/2 session's socket throws once the session is gone.
    const socket = h2 ? undefined : req.socket;
    const client = peerAddress(req);
    // Aborted when the response closes (the client went away, or reset its stream) or, HTTP/2, at
    // the stream deadline: nothing is forwarded after that, and a forwarded request is cut with it.
    const cancel = new AbortController();
    res.once('close', () => {
      form.release();
      // HTTP/2 ends a reset stream's writable side itself: `aborted` says the client cut it.
      const cut = h2 ? (res as Http2ServerResponse).stream.aborted : !res.writableFinished;
      if (cut && failure === undefined) failure = new GuardError('client_aborted', { detail: 'the client closed the connection before the response ended' });
      cancel.abort();
      const status = failure?.reason === 'client_aborted' ? 499 : res.statusCode;
      const path = verdict === undefined ? pathOf(req.url ?? '/') : pathOf(verdict.target);
      const xff = req.headers['x-forwarded-for'];
      const latencyMs = Math.round((performance.now() - started) * 100) / 100;
      const traffic = h2 ? declaredTraffic(req.headers['content-length'], res.getHeader('content-length')) : connectionTraffic(socket);
      accessLog.record({
        requestId,
        method: req.method,
        path,
        status,
        verdict,
        failure,
        upstreamStatus,
        thumbprint: verdict?.decision.allow ? verdict.decision.identity.certificate?.thumbprint : undefined,
        latencyMs,
        client,
        forwardedFor: xff !== undefined && deps.certificates.isTrustedProxy(client) ? forwardedClient(xff) : undefined,
        bytesIn: traffic.bytesIn,
        bytesOut: traffic.bytesOut,
      });
    });
    const refuse = (err: GuardError): void => {
      const rendered = renderFor(err, runtime.realm, verdict);
      if (h2 && isGrpc(req.headers['content-type'])) sendGrpcRefusal(res as Http2ServerResponse, err, rendered, requestId);
      else sendRendered(res, rendered, requestId);
    };
    const keepAlive = (keep: boolean): void => {
      if (!h2 && !keep) (res as ServerResponse).shouldKeepAlive = false;
    };
    const fail = (err: GuardError): void => {
      failure = err;
      if (res.headersSent) res.destroy();
      else if (!(res as { destroyed?: boolean }).destroyed) refuse(err);
    };
    // Stream-level slowloris: an HTTP/2 request whose body trickles or never ends is reset.
    if (h2 && !req.stream.endAfterHeaders) streamDeadline(req, res as Http2ServerResponse, deps.requestTimeoutMs(), (err) => fail(err), cancel);
    try {
      const facts = requestFacts(req, deps.certificates);
      verdict = await runtime.pipeline.evaluate(facts, form.read);
      if (cancel.signal.aborted) return;
      const { decision, route } = verdict;
      if (!decision.allow) {
        if (verdict.closeConnection) keepAlive(false);
        if (decision.error.reason === 'client_aborted') failure = decision.error;
        else refuse(decision.error);
        return;
      }
      const headers = upstreamHeaders(req.headers, { route, decision, host: verdict.host, requestId, peer: facts.peer, peerIsTrustedProxy: deps.certificates.isTrustedProxy(facts.peer), upgrade: false, stripped: runtime.stripped });
      res.setHeader('x-request-id', requestId);
      if (verdict.dpopNonce !== undefined) res.setHeader('dpop-nonce', verdict.dpopNonce);
      const body =
        verdict.body.kind === 'buffered'
          ? Readable.from([verdict.body.bytes])
          : verdict.body.kind === 'limited'
            ? limitBody(req, verdict.body.limitBytes, () => {
                cancel.abort();
                keepAlive(false); // the rest of the body is not read
                fail(new GuardError('body_too_large', { detail: 'chunked body over maxBodyBytes' }));
              })
            : undefined;
      const forwardedAt = performance.now();
      forwarder.web(req, res, route.upstream, {
        headers,
        upstreamHttp2: route.upstreamHttp2,
        requestTrailers: () => upstreamTrailers(req.trailers, runtime.stripped),
        target: verdict.target,
        timeoutMs: route.upstreamTimeoutMs,
        signal: cancel.signal,
        ...(body !== undefined && { body }),
        onResponse: (status) => {
          upstreamStatus = status;
          if (deps.draining()) keepAlive(false);
          metrics.upstreamDuration.observe({ route: route.id }, (performance.now() - forwardedAt) / 1000);
        },
        onError: (err) => {
          if (failure === undefined) fail((req as { destroyed?: boolean }).destroyed === true && !req.complete ? new GuardError('client_aborted', { detail: 'the client went away during the upload' }) : err);
        },
      });
    } catch (err) {
      logger.error({ reqId: requestId, err }, 'request handling failed');
      fail(new GuardError('internal_error'));
    }
  }

  return (req, res) => void handle(req, res);
}

/**
 * A per-stream deadline for receiving the request: if the client has not ended its stream after
 * `timeoutMs`, the upstream call is aborted and the stream reset, whatever the session does
 * (its other streams stay open). Before any response byte the client gets 408 and then
 * RST_STREAM(NO_ERROR) (RFC 9113 §8.1: stop sending); after, RST_STREAM(CANCEL). Long-lived
 * client-streaming gRPC calls therefore need `limits.requestTimeoutMs` above their lifetime.
 */
function streamDeadline(req: Http2ServerRequest, res: Http2ServerResponse, timeoutMs: number, fail: (err: GuardError) => void, controller: AbortController): void {
  const timer = setTimeout(() => {
    if (req.stream.closed || req.readableEnded) return;
    // Answered already (a refusal that left the body unread): only stop the client sending.
    if (res.writableFinished) {
      req.stream.close(h2constants.NGHTTP2_NO_ERROR);
      return;
    }
    // The refusal first, so that the upstream call's abort is not reported as a 502.
    const err = new GuardError('request_timeout', { detail: `HTTP/2 request not received whole in ${timeoutMs} ms` });
    if (res.headersSent) {
      req.stream.close(h2constants.NGHTTP2_CANCEL);
      fail(err);
    } else {
      fail(err);
      if (!req.stream.destroyed) req.stream.close(h2constants.NGHTTP2_NO_ERROR);
    }
    controller.abort();
  }, timeoutMs);
  const clear = (): void => clearTimeout(timer);
  req.once('end', clear);
  res.once('close', clear);
}
