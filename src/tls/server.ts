/**
 * The TLS listener. A client certificate is requested in every handshake (RFC 8705 §3: the server
 * must know in advance; there is no renegotiation) and never required there: a missing or
 * untrusted certificate is judged per request, so it gets an OAuth error.
 */
import https from 'node:https';
import type { RequestListener } from 'node:http';
import type { SecureContextOptions } from 'node:tls';
import type { TlsMaterial } from '../config/load.ts';
import type { Settings } from '../config/schema.ts';

/** The parts of the TLS set-up that a certificate reload replaces. */
export function secureContextOptions(tls: TlsMaterial): SecureContextOptions {
  return {
    cert: tls.cert,
    key: tls.key,
    // With a client CA, OpenSSL verifies the presented chain and records the result in
    // socket.authorized; without one, the system store would be consulted but never enforced.
    ...(tls.clientCa !== undefined && { ca: tls.clientCa }),
    minVersion: 'TLSv1.2',
  };
}

export function createTlsServer(tls: TlsMaterial, limits: Settings['limits'], onRequest: RequestListener): https.Server {
  const server = https.createServer(
    {
      ...secureContextOptions(tls),
      requestCert: true,
      rejectUnauthorized: false,
      // Node answers 431 itself past this many header bytes.
      maxHeaderSize: limits.headerBytes,
      // Slowloris: the headers, then the whole request, must arrive in time (408).
      headersTimeout: limits.headersTimeoutMs,
      requestTimeout: limits.requestTimeoutMs,
      keepAliveTimeout: limits.keepAliveTimeoutMs,
      // How often those timeouts are checked (Node's default, 30 s, would let a slow client linger).
      connectionsCheckingInterval: Math.min(1000, limits.headersTimeoutMs),
      // Lenient parsing (obs-fold, bare LF, conflicting lengths) stays off: smuggling starts there.
      insecureHTTPParser: false,
    },
    onRequest,
  );
  applyLiveLimits(server, limits);
  // One line over the limit is kept, so the guard can see the limit was passed (431).
  server.maxHeadersCount = limits.headerCount + 1;
  return server;
}

/**
 * The limits a running server reads afresh (config reload): the timeouts at its next check or
 * response, maxConnections at the next accept. The check interval stays as started.
 */
export function applyLiveLimits(server: https.Server, limits: Settings['limits']): void {
  server.headersTimeout = limits.headersTimeoutMs;
  server.requestTimeout = limits.requestTimeoutMs;
  server.keepAliveTimeout = limits.keepAliveTimeoutMs;
  server.maxConnections = limits.maxConnections;
}
