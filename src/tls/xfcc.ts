/**
 * The Envoy `x-forwarded-client-cert` element cnfguard writes for the upstream, from a
 * certificate's facts (certificates.ts); forwarded/xfcc.ts reads the same format.
 */
import { escapeBytes } from '../escape-bytes.ts';

/** The certificate facts an XFCC element carries. */
export interface XfccCertificateFacts {
  /** Hex SHA-256 of the leaf DER. */
  readonly sha256Hex: string;
  /** RFC 4514 subject (certificates.ts `subjectRfc4514`); empty when only a thumbprint is known. */
  readonly subject: string;
  readonly uris: readonly string[];
  readonly dns: readonly string[];
}

/**
 * The (always quoted) XFCC Subject as Envoy writes it (OpenSSL's RFC 2253 form): bytes outside
 * printable ASCII as RFC 4514 `\XX` hex pairs, the rest as it is; then `"` and `\` escaped for the
 * quotes. Node's subject text already escapes `\` in values, so a `\XX` here always means a byte.
 */
function quotedXfcc(value: string): string {
  const ascii = escapeBytes(value, '\\', (cp) => cp >= 0x20 && cp < 0x7f);
  return `"${ascii.replace(/["\\]/g, (c) => `\\${c}`)}"`;
}

/** URI and DNS values percent-encoded so no character can end the element or the field (`%`, `,;="\`, space, and bytes outside printable ASCII). */
function xfccValue(value: string): string {
  return escapeBytes(value, '%', (cp) => cp > 0x20 && cp < 0x7f && !'%,;="\\'.includes(String.fromCharCode(cp)));
}

/** One Envoy XFCC element for the connection's certificate: `Hash=…;Subject="…";URI=…;DNS=…`. */
export function xfccElement(certificate: XfccCertificateFacts): string {
  const parts = [`Hash=${certificate.sha256Hex}`, `Subject=${quotedXfcc(certificate.subject)}`];
  for (const uri of certificate.uris) parts.push(`URI=${xfccValue(uri)}`);
  for (const dns of certificate.dns) parts.push(`DNS=${xfccValue(dns)}`);
  return parts.join(';');
}
