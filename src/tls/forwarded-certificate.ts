/**
 * Client certificates forwarded in a header by a trusted TLS terminator (STANDARDS §8): one pure
 * parser per wire format (src/tls/forwarded/, one file each), each ending in the same RFC 8705
 * §3.1 `x5t#S256` as a certificate from cnfguard's own TLS layer. Which TCP peers such headers are
 * believed from is src/tls/peers.ts.
 *
 * The parsers take a header value as Node gives it (`req.headers[name]` or
 * `req.headersDistinct[name]`) and either return the certificate facts, return `undefined` when
 * the header is absent (no certificate), or throw a {@link ForwardedCertificateError} — never any
 * other error, whatever the input. Input is bounded first, so hostile values stay cheap.
 *
 * Whether a value may be believed at all (it came from a configured hop) is the caller's business;
 * nothing here looks at the request.
 */
import { parseBase64Der } from './forwarded/base64-der.ts';
import type { ForwardedCertificate, HeaderValue } from './forwarded/fields.ts';
import { parsePemUrlencoded } from './forwarded/pem-urlencoded.ts';
import { parseRfc9440 } from './forwarded/rfc9440.ts';
import { parseSha256Hex } from './forwarded/sha256-hex.ts';
import { parseXfcc } from './forwarded/xfcc.ts';

export {
  ForwardedCertificateError,
  MAX_FORWARDED_HEADER_LENGTH,
  type ForwardedCertificate,
  type ForwardedCertificateReason,
} from './forwarded/fields.ts';

export interface ParseForwardedCertificateOptions {
  /**
   * Which XFCC element to read: `last` (default) is the one the nearest proxy (the trusted hop)
   * appended; `first` for a proxy configured to prepend or for a single sanitising edge.
   */
  xfccElement?: 'last' | 'first';
}

/** Every format, by its config name (`trustedProxies[].format`): a new format is one file and one line here. */
const PARSERS = {
  xfcc: parseXfcc,
  rfc9440: parseRfc9440,
  'pem-urlencoded': parsePemUrlencoded,
  'base64-der': parseBase64Der,
  'sha256-hex': parseSha256Hex,
} as const satisfies Record<string, (value: HeaderValue, element: 'last' | 'first') => ForwardedCertificate | undefined>;

export type ForwardedCertificateFormat = keyof typeof PARSERS;

export const FORWARDED_CERTIFICATE_FORMATS: readonly ForwardedCertificateFormat[] = Object.freeze(Object.keys(PARSERS) as ForwardedCertificateFormat[]);

/**
 * Parses one forwarded certificate header.
 *
 * @returns the certificate facts; `undefined` when the header is absent, has no field lines, or
 *   is empty/whitespace only (front proxies send no value, or an empty one, when the client sent
 *   no certificate).
 * @throws ForwardedCertificateError when the value is present but unusable.
 * @throws TypeError only for an unknown `format` or option (a programming error, not input).
 */
export function parseForwardedCertificate(
  format: ForwardedCertificateFormat,
  value: HeaderValue,
  options: ParseForwardedCertificateOptions = {},
): ForwardedCertificate | undefined {
  const element = options.xfccElement ?? 'last';
  if (element !== 'last' && element !== 'first') throw new TypeError(`unknown xfccElement: ${String(element)}`);
  if (!Object.hasOwn(PARSERS, format)) throw new TypeError(`unknown forwarded certificate format: ${String(format as unknown)}`);
  return PARSERS[format](value, element);
}
