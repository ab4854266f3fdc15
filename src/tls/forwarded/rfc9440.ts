/**
 * RFC 9440 `Client-Cert`: an RFC 8941 §3.3.5 Byte Sequence, `:` standard base64 `:`. Padding may
 * be missing (RFC 8941 §4.2.7 asks parsers not to fail on that). The field is `sf-binary` alone,
 * so parameters or a list (two lines joined by Node) are refused.
 */
import { certificateFromDer, decodeBase64, ForwardedCertificateError, singleLine, type ForwardedCertificate, type HeaderValue } from './fields.ts';

export function parseRfc9440(value: HeaderValue): ForwardedCertificate | undefined {
  const text = singleLine(value);
  if (text === undefined) return undefined;
  if (text.includes(',')) throw new ForwardedCertificateError('ambiguous', 'Client-Cert holds more than one value');
  if (text.length < 2 || !text.startsWith(':') || !text.endsWith(':')) {
    throw new ForwardedCertificateError('malformed_header', 'Client-Cert is not a structured-field byte sequence');
  }
  return certificateFromDer(decodeBase64(text.slice(1, -1), 'Client-Cert'));
}
