/**
 * Certificate facts computed once per certificate: RFC 8705 §3.1 thumbprint and the parts of an
 * Envoy XFCC element. Certificates are parsed with Node's own X509Certificate.
 */
import { hash, type X509Certificate } from 'node:crypto';

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** The PEM certificates in a bundle, in file order. */
export function splitPemCertificates(pem: string): string[] {
  return pem.match(PEM_CERTIFICATE) ?? [];
}

export function sha256(der: Uint8Array): Buffer {
  return hash('sha256', der, 'buffer');
}

/** `x5t#S256`: base64url (no padding) SHA-256 of the leaf certificate's DER bytes, never the PEM text. */
export function thumbprintS256(der: Uint8Array): string {
  return sha256(der).toString('base64url');
}

/**
 * Subject alternative names by type, from Node's `subjectAltName` string
 * (`DNS:a, URI:b, IP Address:c`; values with separators arrive JSON-quoted).
 */
export function subjectAltNames(x509: X509Certificate): { dns: string[]; uri: string[] } {
  const result = { dns: [] as string[], uri: [] as string[] };
  const text = x509.subjectAltName;
  if (!text) return result;
  const entry = /(DNS|URI|[A-Za-z ]+):("(?:[^"\\]|\\.)*"|[^,]*)(?:, |$)/g;
  for (const match of text.matchAll(entry)) {
    const [, type, raw = ''] = match;
    let value = raw;
    if (raw.startsWith('"')) {
      try {
        value = JSON.parse(raw) as string;
      } catch {
        continue;
      }
    }
    if (type === 'DNS') result.dns.push(value);
    else if (type === 'URI') result.uri.push(value);
  }
  return result;
}

/** RFC 4514 string form (most specific RDN first), as Envoy writes it in XFCC `Subject`. */
export function subjectRfc4514(x509: X509Certificate): string {
  return x509.subject
    .split('\n')
    .filter((line) => line.length > 0)
    .reverse()
    .join(',');
}
