/**
 * The proxy edge, HTTP/1.1 and HTTP/2 alike: request -> facts -> pipeline -> verdict, then the
 * answer: the refusal (gRPC calls get theirs as trailers-only), or the request forwarded with the
 * upstream headers the verdict implies. One access line and one count per request, when its
 * response is over (so 413, 502, 504 and client aborts after forwarding are counted as what they
 * were).
 */
import type { ServerResponse } from 'node:http';
import { constants as h2constants, type Http2ServerRequest, type Http2ServerResponse } from 'node:http2';
import { Readable } from 'node:stream';
import type { Metrics } from '../admin/metrics.ts';
import type { Logger } from '../log.ts';
import type { AccessLog } from '../observe/access-log.ts';
import { traceHeadersOf, type TracingSlot } from '../observe/tracing.ts';
import { connectionTraffic, declaredTraffic } from '../observe/traffic.ts';
import type { GuardError } from '../oauth/reasons.ts';
import type { CertificateSource } from '../pipeline/client-cert.ts';
import { upstreamTrailers } from '../pipeline/upstream-headers.ts';
import type { Runtime } from '../runtime.ts';
import { formReader, limitBody, type BodyBudget } from '../proxy/body.ts';
import type { Forwarder } from '../proxy/forward.ts';
import { answerHeaders, renderFor, sendDocument, sendGrpcRefusal, sendRendered } from './answer.ts';
import { isGrpc } from '../proxy/response-head.ts';
import { bodyFailures } from './connection-errors.ts';
import { edgeFailures, Exchange } from './exchange.ts';
import type { ProxyRequest, ProxyResponse } from '../proxy/messages.ts';
import { authorityOf, connectionOf, isHttp2, originOf, requestFacts, upstreamHeadersOf } from './http-facts.ts';


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
  /** With `tracing`: a span per request; trace headers followed only from `trustedProxies` peers. */
  tracing?: TracingSlot | undefined;
}

/** The abort reason when the client went away: made once (a DOMException per request costs a stack trace). */
const CLIENT_GONE = Object.freeze(new Error('the client went away'));

export function createProxyEdge(deps: EdgeDependencies): (req: ProxyRequest, res: ProxyResponse) => void {
  const { forwarder, metrics, logger, accessLog } = deps;

  async function handle(req: ProxyRequest, res: ProxyResponse): Promise<void> {
    const runtime = deps.runtime();
    const h2 = isHttp2(req);
    // HTTP/2 sessions are told by GOAWAY (app stop); an HTTP/1.1 response closes its connection.
    if (deps.draining() && !h2) (res as ServerResponse).shouldKeepAlive = false;
    const document = runtime.pipeline.publicDocument(req.method, req.url ?? '/', authorityOf(req));
    if (document !== undefined) return sendDocument(res, req.method, document);
    // Everything about the connection is read now: an HTTP/2 session may be gone by the response's end.
    const connection = connectionOf(req);
    const tracer = deps.tracing?.current;
    const span = tracer?.request(h2 ? (isGrpc(req.headers['content-type']) ? 'grpc' : 'http2') : 'http1', req.method, deps.certificates.isTrustedProxy(connection.peer) ? traceHeadersOf(req.headers) : undefined);
    const exchange = new Exchange(accessLog, originOf(req, connection, deps.certificates), span);
    const form = formReader(req, deps.bodyBudget);
    // Aborts the upstream call: the client went away, its stream was reset, or the body broke a limit.
    // The upstream call's cancel, made only where a stream deadline or a body limit may need it:
    // the forwarder itself cancels on the response's close, and a client gone before forwarding
    // is seen on `clientGone`.
    let upstreamCall: AbortController | undefined;
    let clientGone = false;
    // `on`, not `once`: a response closes once, and `once` allocates a wrapper per request.
    res.on('close', () => {
      form.release();
      // HTTP/2 ends a reset stream's writable side itself: `aborted` says the client cut it.
      const cut = h2 ? (res as Http2ServerResponse).stream.aborted : !res.writableFinished;
      if (cut) {
        exchange.fail(edgeFailures.clientAborted('the client closed the connection before the response ended'));
        // Nothing is forwarded after this, and a forwarded request still running is cut with it.
        clientGone = true;
        upstreamCall?.abort(CLIENT_GONE);
      }
      exchange.finish(grpcRefusal ?? res.statusCode, h2 ? declaredTraffic(req.headers['content-length'], res.getHeader('content-length')) : connectionTraffic(connection.counting));
    });
    // A gRPC refusal answers HTTP 200 (trailers-only): the access line and the counts say the refusal's status.
    let grpcRefusal: number | undefined;
    /** Once forwarded: the answer headers the upstream's head was to carry, which a refusal then carries instead. */
    let forwarded: Readonly<Record<string, string>> | undefined;
    const refuse = (err: GuardError): void => {
      // A client that reset its stream (or dropped its connection) meanwhile is answered no more.
      if (res.writableEnded || (res as { destroyed?: boolean }).destroyed || (h2 && (res as Http2ServerResponse).stream.destroyed)) return;
      const rendered = renderFor(err, runtime.realm, exchange.verdict);
      if (forwarded !== undefined) for (const name in forwarded) res.setHeader(name, forwarded[name] as string);
      if (h2 && isGrpc(req.headers['content-type'])) {
        grpcRefusal = rendered.status;
        sendGrpcRefusal(res as Http2ServerResponse, err, rendered, exchange.requestId);
      } else sendRendered(res, rendered, exchange.requestId);
    };
    const keepAlive = (keep: boolean): void => {
      if (!h2 && !keep) (res as ServerResponse).shouldKeepAlive = false;
    };
    const fail = (err: GuardError): void => {
      if (!exchange.fail(err)) return;
      if (res.headersSent) res.destroy();
      else if (!(res as { destroyed?: boolean }).destroyed) refuse(err);
    };
    // Stream-level slowloris: an HTTP/2 request whose body trickles or never ends is reset.
    if (h2 && !req.stream.endAfterHeaders) streamDeadline(req, res as Http2ServerResponse, deps.requestTimeoutMs(), (err) => fail(err), (upstreamCall = new AbortController()));
    try {
      const facts = requestFacts(req, deps.certificates, connection);
      // HTTP/1.1 with a body: what Node's parser or request timer says of that body fails this request (connection-errors.ts).
      if (!h2 && (facts.body.chunked || (facts.body.declaredLength ?? 0) > 0)) {
        bodyFailures.set(req, (err) => {
          keepAlive(false); // the rest of the body is not read
          fail(err);
          upstreamCall?.abort();
        });
      }
      const verdict = await exchange.evaluate(runtime.pipeline, facts, form.read);
      if (clientGone || upstreamCall?.signal.aborted === true) return;
      const { decision, route } = verdict;
      if (!decision.allow) {
        if (verdict.closeConnection) keepAlive(false);
        if (decision.error.reason === 'client_aborted') exchange.fail(decision.error);
        else refuse(decision.error);
        return;
      }
      const headers = upstreamHeadersOf(req, verdict, { requestId: exchange.requestId, peer: facts.peer, certificates: deps.certificates, stripped: runtime.stripped, upgrade: false });
      // With tracing the upstream gets this trace's context, never the client's own as it came.
      const upstreamSpan = exchange.upstreamSpan(route.upstream, headers);
      // The answer headers join the upstream's head in one writeHead (see WebForwardOptions.answerHeaders);
      // a refusal from here on (502, 504, 413) carries them too.
      const answer = (forwarded = answerHeaders(verdict, exchange.requestId));
      if (verdict.body.kind === 'limited') upstreamCall ??= new AbortController();
      const body =
        verdict.body.kind === 'buffered'
          ? Readable.from([verdict.body.bytes])
          : verdict.body.kind === 'limited'
            ? limitBody(req, verdict.body.limitBytes, () => {
                // Said first: the upstream call's abort reports itself as a failure too (502).
                keepAlive(false); // the rest of the body is not read
                fail(edgeFailures.bodyTooLarge('chunked body over maxBodyBytes'));
                upstreamCall?.abort();
              })
            : undefined;
      const forwardedAt = performance.now();
      forwarder.web(req, res, route.upstream, {
        headers,
        upstreamHttp2: route.upstreamHttp2,
        requestTrailers: () => upstreamTrailers(req.trailers, runtime.stripped),
        target: verdict.target,
        timeoutMs: route.upstreamTimeoutMs,
        answerHeaders: answer,
        ...(upstreamCall !== undefined && { signal: upstreamCall.signal }),
        ...(body !== undefined && { body }),
        onResponse: (status) => {
          upstreamSpan?.end(status);
          exchange.upstreamStatus = status;
          if (deps.draining()) keepAlive(false);
          metrics.upstreamDuration.observe(route.id, (performance.now() - forwardedAt) / 1000);
        },
        onError: (err) => {
          const failure = exchange.failure ?? ((req as { destroyed?: boolean }).destroyed === true && !req.complete ? edgeFailures.clientAborted('the client went away during the upload') : err);
          // A call cut because the client left (or a limit broke) says so, not that the upstream was unreachable.
          upstreamSpan?.end(undefined, failure.reason);
          if (exchange.failure === undefined) fail(failure);
        },
      });
    } catch (err) {
      logger.error({ reqId: exchange.requestId, err }, 'request handling failed');
      fail(edgeFailures.internal());
    }
  }

  // Nothing a client does may end the process: a failure past the handler's own catch is logged.
  return (req, res) => void handle(req, res).catch((err: unknown) => logger.error({ err }, 'request handling failed'));
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
    const err = edgeFailures.requestTimeout(`HTTP/2 request not received whole in ${timeoutMs} ms`);
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
