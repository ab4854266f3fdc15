/**
 * The TLS listener. A client certificate is requested in every handshake (RFC 8705 §3: the server
 * must know in advance; there is no renegotiation) and never required there: a missing or
 * untrusted certificate is judged per request, so it gets an OAuth error.
 */
import https from 'node:https';
import type { RequestListener } from 'node:http';
import type { SecureContextOptions } from 'node:tls';
import type { TlsMaterial } from '../config/load.ts';
import { listenerOptions, listenerProperties, type Limits } from '../proxy/limits.ts';

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

export function createTlsServer(tls: TlsMaterial, limits: Limits, onRequest: RequestListener): https.Server {
  const server = https.createServer({ ...secureContextOptions(tls), requestCert: true, rejectUnauthorized: false, ...listenerOptions(limits) }, onRequest);
  Object.assign(server, listenerProperties(limits));
  return server;
}
