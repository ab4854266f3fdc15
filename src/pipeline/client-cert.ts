/**
 * Step: the client certificate of the connection, as facts computed once per TLS socket.
 * cnfguard asks for a certificate in every handshake but never requires one there
 * (`rejectUnauthorized: false`), so that a missing or untrusted certificate gets a proper
 * OAuth error instead of a failed handshake.
 */
import type { TLSSocket } from 'node:tls';
import { sha256, subjectAltNames, subjectRfc4514 } from '../tls/certificates.ts';

export interface ClientCertificate {
  /** RFC 8705 `x5t#S256` of the leaf DER. */
  readonly thumbprint: string;
  /** Hex SHA-256 of the leaf DER (Envoy XFCC `Hash`). */
  readonly sha256Hex: string;
  readonly subject: string;
  readonly uris: readonly string[];
  readonly dns: readonly string[];
  /**
   * False only when `tls.clientCa` is configured and the certificate does not chain to it.
   * Without `tls.clientCa` any certificate is accepted (RFC 8705 §2.2 self-signed method).
   */
  readonly trusted: boolean;
}

const bySocket = new WeakMap<TLSSocket, ClientCertificate | null>();

/**
 * The connection's certificate facts, or undefined when the client sent none. A resumed TLS
 * session carries the certificate of its original handshake, so it stays bound.
 */
export function clientCertificateOf(socket: TLSSocket, verifyChain: boolean): ClientCertificate | undefined {
  const known = bySocket.get(socket);
  if (known !== undefined) return known ?? undefined;
  const x509 = socket.getPeerX509Certificate();
  let facts: ClientCertificate | null = null;
  if (x509 !== undefined) {
    const { uri, dns } = subjectAltNames(x509);
    const digest = sha256(x509.raw);
    facts = Object.freeze({
      thumbprint: digest.toString('base64url'),
      sha256Hex: digest.toString('hex'),
      subject: subjectRfc4514(x509),
      uris: uri,
      dns,
      // OpenSSL verified the chain against tls.clientCa during the handshake (and keeps the
      // result in the session, so resumption preserves it).
      trusted: !verifyChain || socket.authorized,
    });
  }
  bySocket.set(socket, facts);
  return facts ?? undefined;
}
