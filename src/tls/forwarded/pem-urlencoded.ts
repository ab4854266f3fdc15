/**
 * URL-encoded PEM: nginx `$ssl_client_escaped_cert`, AWS ALB `X-Amzn-Mtls-Clientcert-Leaf` (which
 * leaves `+`, `=` and `/` raw) and the ALB passthrough chain header (leaf first). The first
 * certificate is the leaf.
 */
import { certificateFromDer, pemCertificates, percentDecode, singleLine, type ForwardedCertificate, type HeaderValue } from './fields.ts';

export function parsePemUrlencoded(value: HeaderValue): ForwardedCertificate | undefined {
  const text = singleLine(value);
  if (text === undefined) return undefined;
  const [leaf] = pemCertificates(percentDecode(text, 'URL-encoded PEM'), 'URL-encoded PEM');
  return certificateFromDer(leaf!);
}
