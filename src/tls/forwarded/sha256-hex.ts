/** A thumbprint-only header: hex SHA-256 of the leaf DER, either case. */
import { digestFromHex, fromDigest, singleLine, type ForwardedCertificate, type HeaderValue } from './fields.ts';

export function parseSha256Hex(value: HeaderValue): ForwardedCertificate | undefined {
  const text = singleLine(value);
  return text === undefined ? undefined : fromDigest(digestFromHex(text, 'SHA-256 header'), undefined);
}
