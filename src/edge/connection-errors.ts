/**
 * What goes wrong below the request: TLS handshakes that fail or never finish, and HTTP that
 * Node's parser refuses (smuggling attempts, oversized headers, slow clients). A socket whose TLS
 * handshake did not complete gets no bytes and is destroyed at once, so it gives back its
 * `maxConnections` slot; a parser refusal gets its status through the one renderer.
 */
import type { Server } from 'node:https';
import type { Duplex } from 'node:stream';
import type { Socket } from 'node:net';
import type { Logger } from '../log.ts';
import type { AccessLog } from '../observe/access-log.ts';
import { renderError } from './render.ts';
import { GuardError, type ReasonId } from '../oauth/reasons.ts';
import { rawResponse } from './answer.ts';

export interface ConnectionTracker {
  /** Open TCP connections, handshaking or not. */
  readonly size: number;
  /** Ends every connection now (the end of a shutdown's grace period). */
  destroyAll(): void;
  /** Ends the connections whose TLS handshake has not completed (they hold no request). */
  destroyHandshaking(): void;
}

function parserReason(code: string | undefined): ReasonId {
  if (code === 'HPE_HEADER_OVERFLOW') return 'headers_too_large';
  if (code === 'ERR_HTTP_REQUEST_TIMEOUT' || code === 'ERR_HTTP_HEADERS_TIMEOUT') return 'request_timeout';
  return 'http_malformed';
}

export function guardConnections(server: Server, deps: { logger: Logger; accessLog: AccessLog; realm: () => string }): ConnectionTracker {
  const sockets = new Set<Socket>();
  const established = new WeakSet<Duplex>();
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  server.on('secureConnection', (socket: Duplex) => {
    established.add(socket);
    // 'connection' saw the TCP socket under this TLS socket.
    const tcp = (socket as { _parent?: Duplex })._parent;
    if (tcp !== undefined) established.add(tcp);
  });
  // https.Server re-emits every tlsClientError as clientError: one handler for both.
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    if (!established.has(socket)) {
      deps.logger.debug({ code: err.code }, 'TLS handshake failed');
      socket.destroy();
      return;
    }
    if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    const reason = parserReason(err.code);
    const refusal = new GuardError(reason, { detail: `HTTP parser: ${err.code ?? 'error'}` });
    deps.accessLog.record({ requestId: '', method: undefined, path: undefined, status: refusal.status, verdict: undefined, failure: refusal, upstreamStatus: undefined, thumbprint: undefined, latencyMs: 0 });
    socket.end(rawResponse(renderError(refusal, { realm: deps.realm() })));
  });
  return {
    get size() {
      return sockets.size;
    },
    destroyAll() {
      for (const socket of sockets) socket.destroy();
    },
    destroyHandshaking() {
      for (const socket of sockets) if (!established.has(socket)) socket.destroy();
    },
  };
}
