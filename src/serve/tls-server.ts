/**
 * The TLS listener. A client certificate is requested in every handshake (RFC 8705 §3: the server
 * must know in advance; there is no renegotiation) and never required there: a missing or
 * untrusted certificate is judged per request, so it gets an OAuth error.
 *
 * With `listen.http2`, ALPN offers h2 beside http/1.1 on the one port: a connection that chose
 * h2 is handed to a node:http2 server that never listens itself; every other connection stays on
 * the HTTP/1.1 server exactly as before (its path does not change).
 */
import http2 from 'node:http2';
import https from 'node:https';
import type { RequestListener } from 'node:http';
import type { SecureContextOptions, TLSSocket } from 'node:tls';
import type { TlsMaterial } from '../config/load.ts';
import { budgetSession, watchLiveness, http2Options, listenerOptions, listenerProperties, type Limits } from '../proxy/limits.ts';

/** The parts of the TLS set-up that a certificate reload replaces. */
export function secureContextOptions(tls: TlsMaterial): SecureContextOptions {
  return {
    cert: tls.cert,
    key: tls.key,
    // With a client CA, OpenSSL verifies the presented chain and records the result in
    // socket.authorized; without one, the system store would be consulted but never enforced.
    ...(tls.clientCa !== undefined && { ca: tls.clientCa }),
    minVersion: tls.minVersion ?? 'TLSv1.2',
    // OpenSSL's list for TLS 1.2; TLS 1.3 suites are configured apart and stay Node's.
    ...(tls.ciphers !== undefined && tls.ciphers !== '' && { ciphers: tls.ciphers }),
  };
}

export interface Http2Attachment {
  onRequest: (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void;
}

export interface TlsListener {
  server: https.Server;
  /** Sends GOAWAY on every HTTP/2 session: in-flight streams finish, no new ones start. */
  closeHttp2Sessions(): void;
}

export function createTlsServer(tls: TlsMaterial, limits: Limits, onRequest: RequestListener, h2?: Http2Attachment): TlsListener {
  const server = https.createServer(
    { ...secureContextOptions(tls), requestCert: true, rejectUnauthorized: false, ...listenerOptions(limits), ...(h2 !== undefined && { ALPNProtocols: ['h2', 'http/1.1'] }) },
    onRequest,
  );
  Object.assign(server, listenerProperties(limits));
  const sessions = new Set<http2.ServerHttp2Session>();
  if (h2 !== undefined) {
    const h2server = http2.createSecureServer(http2Options(limits), h2.onRequest);
    // An HTTP/2 CONNECT (no :path) is a request like any other to the edge, whose pipeline refuses it
    // (method_unsupported) with an access line; unheard, Node answered it 405 by itself, unlogged.
    h2server.on('connect', h2.onRequest);
    h2server.on('session', (session: http2.ServerHttp2Session) => {
      sessions.add(session);
      session.once('close', () => sessions.delete(session));
      budgetSession(session, limits);
      watchLiveness(session, limits);
      // An idle session (no frame either way for requestTimeoutMs, read live) is sent GOAWAY, as an
      // idle HTTP/1.1 connection is closed; whatever it still holds gets as long again, then the
      // session is destroyed. That also ends a header block left open (HEADERS without
      // END_HEADERS, no CONTINUATION): the peer may send no other frame meanwhile (RFC 9113
      // §6.10), and a graceful close alone would wait for that stream forever.
      session.setTimeout(server.requestTimeout, () => {
        session.close();
        const end = setTimeout(() => session.destroy(), server.requestTimeout);
        end.unref();
        session.once('close', () => clearTimeout(end));
      });
    });
    h2server.on('sessionError', () => {});
    const http1 = server.listeners('secureConnection') as ((socket: TLSSocket) => void)[];
    server.removeAllListeners('secureConnection');
    server.on('secureConnection', (socket: TLSSocket) => {
      if (socket.alpnProtocol === 'h2') h2server.emit('secureConnection', socket);
      else for (const listener of http1) listener.call(server, socket);
    });
  }
  return {
    server,
    closeHttp2Sessions() {
      for (const session of sessions) session.close();
    },
  };
}

/**
 * The limits a running server reads afresh (config reload): the timeouts at its next check or
 * response, maxConnections at the next accept. The check interval stays as started.
 */
export function applyLiveLimits(server: https.Server, limits: Limits): void {
  server.headersTimeout = limits.headersTimeoutMs;
  server.requestTimeout = limits.requestTimeoutMs;
  server.keepAliveTimeout = limits.keepAliveTimeoutMs;
  server.maxConnections = limits.maxConnections;
}
