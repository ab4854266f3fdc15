/**
 * Websocket upgrades through the same pipeline as any request. The pipeline's answer is written
 * straight to the socket (there is no ServerResponse); the upstream's 101 carries the same answer
 * headers as any allowed response; one access line when the upgrade is over.
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from '../log.ts';
import type { AccessLog } from '../observe/access-log.ts';
import { traceHeadersOf, type TracingSlot } from '../observe/tracing.ts';
import type { CertificateSource } from '../pipeline/client-cert.ts';
import type { Forwarder } from '../proxy/forward.ts';
import type { Runtime } from '../runtime.ts';
import { answerHeaders, DRAINING_ANSWER, rawResponse, renderFor, REQUEST_ID_HEADER } from './answer.ts';
import { edgeFailures, Exchange } from './exchange.ts';
import type { RenderedError } from './render.ts';
import { connectionOf, originOf, requestFacts, upstreamHeadersOf } from './http-facts.ts';

export interface UpgradeDependencies {
  runtime: () => Runtime;
  forwarder: Forwarder;
  logger: Logger;
  accessLog: AccessLog;
  certificates: CertificateSource;
  draining: () => boolean;
  /** Upgraded sockets, so shutdown can end them after the grace period. */
  onUpgraded: (socket: Duplex) => void;
  /** With `tracing`: a span per upgrade, as on the proxy edge (proxy.ts). */
  tracing?: TracingSlot | undefined;
}

/** A websocket opening handshake (RFC 6455 §4.1): the one upgrade cnfguard tunnels. */
export function isWebsocketUpgrade(req: IncomingMessage): boolean {
  return String(req.headers.upgrade ?? '')
    .split(',')
    .some((protocol) => protocol.trim().toLowerCase() === 'websocket');
}

/** An upgrade never reads a body: a form is not inspected, and any body belongs to the upgraded protocol. */
const NO_FORM = () => Promise.resolve({ kind: 'read' as const, bytes: Buffer.alloc(0) });

export function createUpgradeEdge(deps: UpgradeDependencies): (req: IncomingMessage, socket: Duplex, head: Buffer) => void {
  async function handle(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const runtime = deps.runtime();
    const connection = connectionOf(req);
    const span = deps.tracing?.current?.request(req.method === 'CONNECT' ? 'connect' : 'websocket', req.method, deps.certificates.isTrustedProxy(connection.peer) ? traceHeadersOf(req.headers) : undefined);
    const exchange = new Exchange(deps.accessLog, originOf(req, connection, deps.certificates), span);
    /** What the client was sent: undefined until an answer (a refusal, the upstream's 101 or its own answer) went out. */
    let status: number | undefined;
    const left = () => edgeFailures.clientAborted('the client closed the connection before the upgrade was answered');
    const answer = (rendered: RenderedError): void => {
      status = rendered.status;
      socket.end(rawResponse(rendered, { [REQUEST_ID_HEADER]: exchange.requestId }));
    };
    socket.on('error', () => socket.destroy());
    socket.once('close', () => {
      if (status === undefined) exchange.fail(left());
      exchange.finish(status ?? 499);
    });
    try {
      const facts = requestFacts(req, deps.certificates, connection);
      const judged = { ...facts, body: { ...facts.body, form: false } };
      const verdict = await exchange.evaluate(runtime.pipeline, judged, NO_FORM);
      const { decision, route } = verdict;
      if (socket.destroyed) return; // gone while the pipeline ran: nothing to answer or forward
      if (!decision.allow || deps.draining()) {
        if (decision.allow) exchange.fail(edgeFailures.draining());
        const rendered = decision.allow ? DRAINING_ANSWER : renderFor(decision.error, runtime.realm, verdict);
        answer(rendered);
        return;
      }
      const headers = upstreamHeadersOf(req, verdict, { requestId: exchange.requestId, peer: facts.peer, certificates: deps.certificates, stripped: runtime.stripped, upgrade: true });
      // With tracing the upstream gets this trace's context (the span lasts as long as the upgraded connection).
      const upstreamSpan = exchange.upstreamSpan(route.upstream, headers);
      if (upstreamSpan !== undefined) socket.once('close', () => upstreamSpan.end(undefined));
      req.headers = headers as IncomingMessage['headers'];
      req.url = verdict.target;
      deps.onUpgraded(socket);
      deps.forwarder.ws(
        req,
        socket,
        head,
        route.upstream,
        answerHeaders(verdict, exchange.requestId),
        (err) => {
          const failure = status === undefined && socket.destroyed ? left() : err;
          upstreamSpan?.end(undefined, failure.reason);
          exchange.fail(failure);
          // Nothing sent yet (the upstream unreachable, or failing before it answered): the client gets the refusal.
          if (status === undefined && socket.writable) answer(renderFor(err, runtime.realm, verdict));
          else socket.destroy();
        },
        // The upstream's answer: on the access line as upstreamStatus, and as its status when the upstream did not upgrade (what the client got).
        (answered) => {
          exchange.upstreamStatus = answered;
          status = answered;
        },
      );
    } catch (err) {
      deps.logger.error({ reqId: exchange.requestId, err }, 'upgrade handling failed');
      exchange.fail(edgeFailures.internal());
      status = 500;
      socket.destroy();
    }
  }
  return (req, socket, head) => void handle(req, socket, head).catch((err: unknown) => deps.logger.error({ err }, 'upgrade handling failed'));
}
