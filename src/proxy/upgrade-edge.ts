/**
 * Websocket upgrades through the same pipeline as any request. The pipeline's answer is written
 * straight to the socket (there is no ServerResponse); one access line when the upgrade is over.
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from '../log.ts';
import type { AccessLog } from '../observe/access-log.ts';
import { GuardError } from '../oauth/errors.ts';
import type { CertificateSource } from '../pipeline/client-cert.ts';
import type { Verdict } from '../pipeline/pipeline.ts';
import { upstreamHeaders } from '../pipeline/upstream-headers.ts';
import type { Runtime } from '../runtime.ts';
import { requestFacts } from './facts.ts';
import type { Forwarder } from './forward.ts';
import { pathOf } from './proxy-edge.ts';
import { rawResponse, renderFor } from './respond.ts';

export interface UpgradeDependencies {
  runtime: () => Runtime;
  forwarder: Forwarder;
  logger: Logger;
  accessLog: AccessLog;
  certificates: CertificateSource;
  draining: () => boolean;
  /** Upgraded sockets, so shutdown can end them after the grace period. */
  onUpgraded: (socket: Duplex) => void;
}

/** An upgrade never reads a body: a form is not inspected, and any body belongs to the upgraded protocol. */
const NO_FORM = () => Promise.resolve({ kind: 'read' as const, bytes: Buffer.alloc(0) });

export function createUpgradeEdge(deps: UpgradeDependencies): (req: IncomingMessage, socket: Duplex, head: Buffer) => void {
  async function handle(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const started = performance.now();
    const runtime = deps.runtime();
    const requestId = randomUUID();
    let verdict: Verdict | undefined;
    let status = 101;
    let failure: GuardError | undefined;
    socket.on('error', () => socket.destroy());
    socket.once('close', () =>
      deps.accessLog.record({ requestId, method: req.method, path: pathOf(verdict?.target ?? req.url ?? '/'), status, verdict, failure, upstreamStatus: undefined, thumbprint: undefined, latencyMs: Math.round((performance.now() - started) * 100) / 100, client: req.socket.remoteAddress }),
    );
    try {
      const facts = requestFacts(req, deps.certificates);
      verdict = await runtime.pipeline.evaluate({ ...facts, body: { ...facts.body, form: false } }, NO_FORM);
      const { decision, route } = verdict;
      if (!decision.allow || deps.draining()) {
        const rendered = decision.allow ? { status: 503, headers: { 'content-type': 'text/plain' }, body: 'shutting down\n' } : renderFor(decision.error, runtime.realm, verdict);
        if (decision.allow) failure = new GuardError('server_busy', { detail: 'draining' });
        status = rendered.status;
        socket.end(rawResponse(rendered, { 'x-request-id': requestId }));
        return;
      }
      req.headers = upstreamHeaders(req.headers, { route, decision, host: verdict.host, requestId, peer: facts.peer, peerIsTrustedProxy: deps.certificates.isTrustedProxy(facts.peer), upgrade: true, stripped: runtime.stripped }) as IncomingMessage['headers'];
      req.url = verdict.target;
      deps.onUpgraded(socket);
      deps.forwarder.ws(req, socket, head, route.upstream, (err) => {
        failure = err;
        status = err.status;
        socket.destroy();
      });
    } catch (err) {
      deps.logger.error({ reqId: requestId, err }, 'upgrade handling failed');
      failure = new GuardError('internal_error');
      status = 500;
      socket.destroy();
    }
  }
  return (req, socket, head) => void handle(req, socket, head);
}
