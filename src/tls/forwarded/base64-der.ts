/**
 * Traefik `X-Forwarded-Tls-Client-Cert`: base64 DER per certificate without armour or newlines,
 * joined with `,`, leaf first. Traefik v1/v2 `url.QueryEscape` the whole value; base64 never
 * contains `%`, so a `%` means the escaped form. PEM armour and whitespace are stripped if present.
 */
import { PEM_CERTIFICATE_BEGIN, PEM_CERTIFICATE_END, PEM_WHITESPACE } from '../certificates.ts';
import { BASE64, certificateFromDer, decodeBase64, ForwardedCertificateError, percentDecode, singleLine, type ForwardedCertificate, type HeaderValue } from './fields.ts';

export function parseBase64Der(value: HeaderValue): ForwardedCertificate | undefined {
  const text = singleLine(value);
  if (text === undefined) return undefined;
  let unescaped = text.includes('%') ? percentDecode(text, 'base64 DER list') : text;
  unescaped = unescaped.split(PEM_CERTIFICATE_BEGIN).join('').split(PEM_CERTIFICATE_END).join('').replace(PEM_WHITESPACE, '');
  const elements = unescaped.split(',');
  for (const element of elements) {
    if (element.length === 0) throw new ForwardedCertificateError('malformed_header', 'empty element in base64 DER list');
    if (!BASE64.test(element)) throw new ForwardedCertificateError('malformed_header', 'base64 DER list element is not base64');
  }
  return certificateFromDer(decodeBase64(elements[0]!, 'base64 DER'));
}
