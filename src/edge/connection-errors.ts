/**
 * What goes wrong below the request: TLS handshakes that fail or never finish, and HTTP that
 * Node's parser refuses (smuggling attempts, oversized headers, slow clients). A socket whose TLS
 * handshake did not complete gets no bytes and is destroyed at once, so it gives back its
 * `maxConnections` slot; a parser refusal gets its status through the one renderer.
 */
import { randomUUID } from 'node:crypto';
import type { Server } from 'node:https';
import type { Duplex } from 'node:stream';
import type { Socket } from 'node:net';
import type { Logger } from '../log.ts';
import type { AccessLog } from '../observe/access-log.ts';
import { renderError, type RenderedError } from './render.ts';
import { GuardError, type ReasonId } from '../oauth/reasons.ts';
import { rawResponse, REQUEST_ID_HEADER } from './answer.ts';

/**
 * How an HTTP/1.1 request still receiving its body is failed by what the parser or Node's request
 * timer says of that body (a malformed chunk, the request timeout, the client's EOF mid-body): set
 * by the proxy edge per request, so that the request's own exchange answers and logs it (one line,
 * the status the client gets), not a second line for an answer that would wait behind it forever.
 */
export const bodyFailures = new WeakMap<object, (err: GuardError) => void>();

export interface ConnectionTracker {
  /** Open TCP connections, handshaking or not. */
  readonly size: number;
  /** Ends every connection now (the end of a shutdown's grace period). */
  destroyAll(): void;
  /** Ends the connections whose TLS handshake has not completed (they hold no request). */
  destroyHandshaking(): void;
}

/**
 * Node answers HPE_HEADER_OVERFLOW both past `maxHeaderSize` bytes and past `maxHeadersCount`
 * lines: the packet it choked on says which, when it holds more lines than the count allows.
 */
function parserReason(code: string | undefined, rawPacket: Buffer | undefined, maxHeadersCount: number): ReasonId {
  if (code === 'HPE_HEADER_OVERFLOW') return rawPacket !== undefined && linesIn(rawPacket) > maxHeadersCount ? 'headers_too_many' : 'headers_too_large';
  if (code === 'ERR_HTTP_REQUEST_TIMEOUT' || code === 'ERR_HTTP_HEADERS_TIMEOUT') return 'request_timeout';
  return 'http_malformed';
}

function linesIn(packet: Buffer): number {
  let lines = 0;
  for (let at = packet.indexOf(10); at !== -1; at = packet.indexOf(10, at + 1)) lines++;
  return lines;
}

export function guardConnections(server: Server, deps: { logger: Logger; accessLog: AccessLog; realm: () => string; now?: () => number; onHandshakeFailure?: () => void }): ConnectionTracker {
  const now = deps.now ?? Date.now;
  /** When each connection last began waiting for a request: its handshake, then each answer's end. */
  const waitingSince = new WeakMap<Duplex, number>();
  const sockets = new Set<Socket>();
  const established = new WeakSet<Duplex>();
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  server.on('secureConnection', (socket: Duplex) => {
    established.add(socket);
    waitingSince.set(socket, now());
    // 'connection' saw the TCP socket under this TLS socket.
    const tcp = (socket as { _parent?: Duplex })._parent;
    if (tcp !== undefined) established.add(tcp);
  });
  // https.Server re-emits every tlsClientError as clientError: one handler for both.
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    if (!established.has(socket)) {
      // Counted (cnfguard_tls_handshake_failures_total): clients that fail at TLS (plain HTTP, an
      // untrusted server certificate, an old protocol) never reach a request or an access line.
      deps.onHandshakeFailure?.();
      deps.logger.debug({ code: err.code }, 'TLS handshake failed');
      socket.destroy();
      return;
    }
    const since = waitingSince.get(socket);
    answerParserError(err, socket, { maxHeadersCount: server.maxHeadersCount ?? Infinity, accessLog: deps.accessLog, realm: deps.realm(), waitedMs: since === undefined ? undefined : now() - since });
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

export interface ParserErrorOptions {
  maxHeadersCount: number;
  accessLog: AccessLog;
  realm: string;
  /** How long the connection waited for this request (the line's latency; 0 when not known). */
  waitedMs?: number | undefined;
  /** The access line's `edge`, when not the proxy listener. */
  edge?: string;
  /** The answer as sent, when it differs from the refusal the line reports (a front's status rule); `rawPacket`: what the parser choked on, when it says. */
  answered?: (rendered: RenderedError, rawPacket: Buffer | undefined) => RenderedError;
}

/**
 * A request Node's parser (or its request timer) refused, on an established connection: one
 * access line and the refusal through the one renderer, in request order after any answer in
 * flight; an error about the body of the request being answered fails that request instead.
 */
export function answerParserError(err: NodeJS.ErrnoException, socket: Duplex, options: ParserErrorOptions): void {
  if (err.code === 'ECONNRESET' || !socket.writable) {
    socket.destroy();
    return;
  }
  const { rawPacket } = err as { rawPacket?: Buffer };
  const reason = parserReason(err.code, rawPacket, options.maxHeadersCount);
  const refusal = new GuardError(reason, { detail: `HTTP parser: ${err.code ?? 'error'}` });
  const inFlight = (socket as { _httpMessage?: (NodeJS.EventEmitter & { req?: { complete: boolean } }) | null })._httpMessage;
  // The request being answered has not been received whole: the error is about its body.
  const unfinished = inFlight?.req !== undefined && !inFlight.req.complete ? inFlight.req : undefined;
  if (unfinished !== undefined) {
    const failBody = bodyFailures.get(unfinished);
    // The client ending its side mid-body left (499); anything else is answered as what it is.
    failBody?.(err.code === 'HPE_INVALID_EOF_STATE' ? new GuardError('client_aborted', { detail: 'the client ended the connection during the upload' }) : refusal);
    if (failBody === undefined || err.code === 'HPE_INVALID_EOF_STATE') socket.destroy();
    return;
  }
  // Who it was and how long they took (a slowloris is seen by its peer and its wait; since the
  // handshake: exact for a connection's first request, an upper bound after): the request never parsed.
  const requestId = randomUUID();
  const client = (socket as { remoteAddress?: string }).remoteAddress;
  options.accessLog.record({ requestId, method: undefined, path: undefined, status: refusal.status, verdict: undefined, failure: refusal, upstreamStatus: undefined, thumbprint: undefined, latencyMs: options.waitedMs ?? 0, client, ...(options.edge !== undefined && { edge: options.edge }) });
  const rendered = renderError(refusal, { realm: options.realm });
  const answer = rawResponse(options.answered?.(rendered, rawPacket) ?? rendered, { [REQUEST_ID_HEADER]: requestId });
  // A pipelined request that fails to parse while an earlier one is still being answered: its
  // answer would land before that one's, or inside its body (RFC 9112 §9.3: answers go in
  // request order). It waits for that answer to end; if that one is cut, so is the connection.
  if (inFlight != null) {
    let finished = false;
    inFlight.once('finish', () => {
      finished = true;
      socket.end(answer);
    });
    inFlight.once('close', () => {
      if (!finished) socket.destroy();
    });
    return;
  }
  socket.end(answer);
}
