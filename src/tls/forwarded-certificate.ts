/**
 * Client certificates forwarded in a header by a trusted TLS terminator (STANDARDS §8): one pure
 * parser per wire format, each ending in the same RFC 8705 §3.1 `x5t#S256` as a certificate from
 * cnfguard's own TLS layer. Also the CIDR lists that decide which TCP peers such headers are believed from.
 *
 * The parsers take a header value as Node gives it (`req.headers[name]` or
 * `req.headersDistinct[name]`) and either return the certificate facts, return `undefined` when
 * the header is absent (no certificate), or throw a {@link ForwardedCertificateError} — never any
 * other error, whatever the input. Input is bounded first, so hostile values stay cheap.
 *
 * Whether a value may be believed at all (it came from a configured hop) is the caller's business;
 * nothing here looks at the request.
 */
import { X509Certificate } from 'node:crypto';
import { BlockList, isIP } from 'node:net';
import { sha256 } from './certificates.ts';

export interface ForwardedCertificate {
  /** RFC 8705 `x5t#S256`: base64url, unpadded SHA-256 of the leaf DER. */
  thumbprint: string;
  /** The same digest as lowercase hex (Envoy XFCC `Hash`). */
  sha256Hex: string;
  /** The leaf certificate's DER; undefined for thumbprint-only values (`sha256-hex`, XFCC `Hash` alone). */
  der: Buffer | undefined;
}

export type ForwardedCertificateFormat = 'xfcc' | 'rfc9440' | 'pem-urlencoded' | 'base64-der' | 'sha256-hex';

export const FORWARDED_CERTIFICATE_FORMATS: readonly ForwardedCertificateFormat[] = Object.freeze([
  'xfcc',
  'rfc9440',
  'pem-urlencoded',
  'base64-der',
  'sha256-hex',
]);

/**
 * Why a forwarded certificate header was refused:
 * - `too_large`: over {@link MAX_FORWARDED_HEADER_LENGTH} characters or too many field lines;
 * - `ambiguous`: more than one field line of a singleton header, or a repeated XFCC `Hash`/`Cert`;
 * - `malformed_header`: not the syntax of the configured format;
 * - `not_a_certificate`: well-formed, but the bytes are not exactly one DER X.509 certificate;
 * - `hash_mismatch`: XFCC `Hash` disagrees with the certificate in the same element.
 */
export type ForwardedCertificateReason = 'too_large' | 'ambiguous' | 'malformed_header' | 'not_a_certificate' | 'hash_mismatch';

export class ForwardedCertificateError extends Error {
  /** A short stable id, for the log line, the metric label and tests. */
  readonly reason: ForwardedCertificateReason;

  /** `message` is log-only detail; it never contains the header value. */
  constructor(reason: ForwardedCertificateReason, message: string) {
    super(`${reason}: ${message}`);
    this.name = 'ForwardedCertificateError';
    this.reason = reason;
  }
}

/** Longest header value (all field lines together) looked at; a leaf PEM is 1–3 KiB, a chain rarely over 16 KiB. */
export const MAX_FORWARDED_HEADER_LENGTH = 64 * 1024;
/** Most field lines accepted for a list-valued header (XFCC); singletons allow one. */
const MAX_FIELD_LINES = 64;

export interface ParseForwardedCertificateOptions {
  /**
   * Which XFCC element to read: `last` (default) is the one the nearest proxy (the trusted hop)
   * appended; `first` for a proxy configured to prepend or for a single sanitising edge.
   */
  xfccElement?: 'last' | 'first';
}

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
  value: string | string[] | undefined,
  options: ParseForwardedCertificateOptions = {},
): ForwardedCertificate | undefined {
  const element = options.xfccElement ?? 'last';
  if (element !== 'last' && element !== 'first') throw new TypeError(`unknown xfccElement: ${String(element)}`);
  switch (format) {
    case 'xfcc': {
      const text = joinListLines(value);
      return text === undefined ? undefined : parseXfcc(text, element);
    }
    case 'rfc9440': {
      const text = singleLine(value);
      return text === undefined ? undefined : parseRfc9440(text);
    }
    case 'pem-urlencoded': {
      const text = singleLine(value);
      return text === undefined ? undefined : parsePemUrlencoded(text);
    }
    case 'base64-der': {
      const text = singleLine(value);
      return text === undefined ? undefined : parseBase64Der(text);
    }
    case 'sha256-hex': {
      const text = singleLine(value);
      return text === undefined ? undefined : parseSha256Hex(text);
    }
    default:
      throw new TypeError(`unknown forwarded certificate format: ${String(format as unknown)}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Field lines

/** RFC 9110 optional whitespace. */
const OWS = /^[ \t]+|[ \t]+$/g;

function trimOws(text: string): string {
  return text.replace(OWS, '');
}

function checkLength(length: number): void {
  if (length > MAX_FORWARDED_HEADER_LENGTH) {
    throw new ForwardedCertificateError('too_large', `header value longer than ${MAX_FORWARDED_HEADER_LENGTH} characters`);
  }
}

/**
 * A singleton header's one value, OWS-trimmed; undefined when absent or empty. Several field lines
 * (from `headersDistinct`) are `ambiguous`: RFC 9440 §2.2 makes `Client-Cert` a singleton, and
 * the other single-certificate formats are one value per request too.
 */
function singleLine(value: string | string[] | undefined): string | undefined {
  let text: unknown = value;
  if (Array.isArray(value)) {
    if (value.length > 1) throw new ForwardedCertificateError('ambiguous', `${value.length} field lines for a singleton header`);
    text = value[0];
  }
  if (text === undefined) return undefined;
  if (typeof text !== 'string') throw new ForwardedCertificateError('malformed_header', 'header value is not a string');
  checkLength(text.length);
  const trimmed = trimOws(text);
  return trimmed.length === 0 ? undefined : trimmed;
}

/**
 * A list-valued header's field lines joined with `,` (RFC 9110 §5.3, what Node does for the
 * string form); undefined when absent or empty.
 */
function joinListLines(value: string | string[] | undefined): string | undefined {
  if (value === undefined) return undefined;
  const lines: unknown[] = Array.isArray(value) ? value : [value];
  if (lines.length > MAX_FIELD_LINES) throw new ForwardedCertificateError('too_large', `more than ${MAX_FIELD_LINES} field lines`);
  let length = 0;
  for (const line of lines) {
    if (typeof line !== 'string') throw new ForwardedCertificateError('malformed_header', 'header value is not a string');
    length += line.length + 1;
  }
  checkLength(length - 1);
  const trimmed = trimOws((lines as string[]).join(','));
  return trimmed.length === 0 ? undefined : trimmed;
}

// ---------------------------------------------------------------------------------------------
// Bytes -> certificate

/** Strict RFC 4648 §4 base64: the alphabet, optional `=` padding, no whitespace. */
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

function decodeBase64(text: string, what: string): Buffer {
  if (!BASE64.test(text)) throw new ForwardedCertificateError('malformed_header', `${what} is not base64`);
  const unpadded = text.replace(/=+$/, '');
  // Padding, when present, must make a whole number of quanta; a lone sextet is never valid.
  if (unpadded.length % 4 === 1 || (unpadded.length !== text.length && text.length % 4 !== 0)) {
    throw new ForwardedCertificateError('malformed_header', `${what} has a bad base64 length`);
  }
  return Buffer.from(unpadded, 'base64');
}

/**
 * `new X509Certificate(der)` and the thumbprint of its DER. Node also accepts PEM text and
 * ignores bytes after the certificate, so the certificate's own encoding must be exactly the
 * bytes given: otherwise what is hashed would not be what was sent.
 */
function certificateFromDer(der: Buffer): ForwardedCertificate {
  if (der.length === 0) throw new ForwardedCertificateError('not_a_certificate', 'no certificate bytes');
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(der);
  } catch {
    throw new ForwardedCertificateError('not_a_certificate', 'bytes do not parse as an X.509 certificate');
  }
  const raw = x509.raw;
  if (!raw.equals(der)) throw new ForwardedCertificateError('not_a_certificate', 'bytes are not exactly one DER certificate');
  return fromDigest(sha256(raw), Buffer.from(raw));
}

function fromDigest(digest: Buffer, der: Buffer | undefined): ForwardedCertificate {
  return { thumbprint: digest.toString('base64url'), sha256Hex: digest.toString('hex'), der };
}

const HEX_SHA256 = /^[0-9a-fA-F]{64}$/;

function digestFromHex(text: string, what: string): Buffer {
  if (!HEX_SHA256.test(text)) throw new ForwardedCertificateError('malformed_header', `${what} is not 64 hex digits`);
  return Buffer.from(text, 'hex');
}

const PEM_BEGIN = '-----BEGIN CERTIFICATE-----';
const PEM_END = '-----END CERTIFICATE-----';
/** Whitespace a PEM body may carry once unescaped (line breaks, or spaces where a proxy folded them). */
const PEM_WHITESPACE = /[ \t\r\n]+/g;

/**
 * The DER of each `CERTIFICATE` block in PEM text, in order. Only whitespace may surround the
 * blocks (RFC 7468 strict form, bar line length); anything else is malformed.
 */
function pemCertificates(text: string, what: string): Buffer[] {
  const ders: Buffer[] = [];
  let at = 0;
  for (;;) {
    const begin = text.indexOf(PEM_BEGIN, at);
    const gap = text.slice(at, begin === -1 ? text.length : begin);
    if (gap.replace(PEM_WHITESPACE, '').length > 0) {
      throw new ForwardedCertificateError('malformed_header', `${what} has text outside PEM certificate blocks`);
    }
    if (begin === -1) break;
    const bodyStart = begin + PEM_BEGIN.length;
    const end = text.indexOf(PEM_END, bodyStart);
    if (end === -1) throw new ForwardedCertificateError('malformed_header', `${what} has an unterminated PEM block`);
    ders.push(decodeBase64(text.slice(bodyStart, end).replace(PEM_WHITESPACE, ''), what));
    at = end + PEM_END.length;
  }
  if (ders.length === 0) throw new ForwardedCertificateError('malformed_header', `${what} has no PEM certificate`);
  return ders;
}

/** RFC 3986 percent-decoding (`decodeURIComponent`): `+` stays a plus, never form decoding. */
function percentDecode(text: string, what: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    throw new ForwardedCertificateError('malformed_header', `${what} has an invalid percent-encoding`);
  }
}

// ---------------------------------------------------------------------------------------------
// Formats

/**
 * RFC 9440 `Client-Cert`: an RFC 8941 §3.3.5 Byte Sequence, `:` standard base64 `:`. Padding may
 * be missing (RFC 8941 §4.2.7 asks parsers not to fail on that). The field is `sf-binary` alone,
 * so parameters or a list (two lines joined by Node) are refused.
 */
function parseRfc9440(text: string): ForwardedCertificate {
  if (text.includes(',')) throw new ForwardedCertificateError('ambiguous', 'Client-Cert holds more than one value');
  if (text.length < 2 || !text.startsWith(':') || !text.endsWith(':')) {
    throw new ForwardedCertificateError('malformed_header', 'Client-Cert is not a structured-field byte sequence');
  }
  return certificateFromDer(decodeBase64(text.slice(1, -1), 'Client-Cert'));
}

/**
 * URL-encoded PEM: nginx `$ssl_client_escaped_cert`, AWS ALB `X-Amzn-Mtls-Clientcert-Leaf` (which
 * leaves `+`, `=` and `/` raw) and the ALB passthrough chain header (leaf first). The first
 * certificate is the leaf.
 */
function parsePemUrlencoded(text: string): ForwardedCertificate {
  const [leaf] = pemCertificates(percentDecode(text, 'URL-encoded PEM'), 'URL-encoded PEM');
  return certificateFromDer(leaf!);
}

/**
 * Traefik `X-Forwarded-Tls-Client-Cert`: base64 DER per certificate without armour or newlines,
 * joined with `,`, leaf first. Traefik v1/v2 `url.QueryEscape` the whole value; base64 never
 * contains `%`, so a `%` means the escaped form. PEM armour and whitespace are stripped if present.
 */
function parseBase64Der(text: string): ForwardedCertificate {
  let unescaped = text.includes('%') ? percentDecode(text, 'base64 DER list') : text;
  unescaped = unescaped.split(PEM_BEGIN).join('').split(PEM_END).join('').replace(PEM_WHITESPACE, '');
  const elements = unescaped.split(',');
  for (const element of elements) {
    if (element.length === 0) throw new ForwardedCertificateError('malformed_header', 'empty element in base64 DER list');
    if (!BASE64.test(element)) throw new ForwardedCertificateError('malformed_header', 'base64 DER list element is not base64');
  }
  return certificateFromDer(decodeBase64(elements[0]!, 'base64 DER'));
}

/** A thumbprint-only header: hex SHA-256 of the leaf DER, either case. */
function parseSha256Hex(text: string): ForwardedCertificate {
  return fromDigest(digestFromHex(text, 'SHA-256 header'), undefined);
}

// ---------------------------------------------------------------------------------------------
// Envoy x-forwarded-client-cert

type XfccElement = Map<string, string[]>;

/** RFC 9110 token characters, which XFCC keys are made of, by char code. */
const TOKEN_CHAR = new Uint8Array(128);
for (const c of "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") TOKEN_CHAR[c.charCodeAt(0)] = 1;

/**
 * The elements of an XFCC value: `,`-separated, each `;`-separated `key=value` pairs, keys
 * lower-cased, values either bare (up to the next `;` or `,`) or quoted with `\` escapes (RFC 9110
 * quoted-pair; Envoy escapes `"`), so quoted values may hold `,;=`. OWS is allowed around
 * separators. Empty elements and pairs are malformed: the position of the trusted element must not
 * depend on leniency.
 */
function xfccElements(text: string): XfccElement[] {
  const elements: XfccElement[] = [];
  let element: XfccElement = new Map();
  let i = 0;
  const n = text.length;
  const skipOws = (): void => {
    while (i < n && (text[i] === ' ' || text[i] === '\t')) i++;
  };
  for (;;) {
    skipOws();
    const keyStart = i;
    while (i < n && TOKEN_CHAR[text.charCodeAt(i)] === 1) i++;
    if (i === keyStart || text[i] !== '=') throw new ForwardedCertificateError('malformed_header', 'XFCC pair without key=');
    const key = text.slice(keyStart, i).toLowerCase();
    i++; // '='
    let value: string;
    if (text[i] === '"') {
      i++;
      let closed = false;
      const parts: string[] = [];
      let runStart = i;
      while (i < n) {
        const c = text[i];
        if (c === '"') {
          closed = true;
          break;
        }
        if (c === '\\') {
          if (i + 1 >= n) break;
          parts.push(text.slice(runStart, i), text[i + 1]!);
          i += 2;
          runStart = i;
          continue;
        }
        i++;
      }
      if (!closed) throw new ForwardedCertificateError('malformed_header', 'XFCC quoted value not terminated');
      parts.push(text.slice(runStart, i));
      value = parts.join('');
      i++; // closing '"'
    } else {
      const valueStart = i;
      while (i < n && text[i] !== ';' && text[i] !== ',') {
        if (text[i] === '"' || text[i] === '\\') throw new ForwardedCertificateError('malformed_header', 'XFCC bare value with a quote');
        i++;
      }
      value = trimOws(text.slice(valueStart, i));
    }
    const values = element.get(key);
    if (values) values.push(value);
    else element.set(key, [value]);
    skipOws();
    if (i >= n) {
      elements.push(element);
      return elements;
    }
    if (text[i] === ',') {
      elements.push(element);
      element = new Map();
    } else if (text[i] !== ';') {
      throw new ForwardedCertificateError('malformed_header', 'XFCC value followed by text');
    }
    i++;
  }
}

/** The single value of a key that must not repeat (`Hash`, `Cert`, `Chain`). */
function single(element: XfccElement, key: string): string | undefined {
  const values = element.get(key);
  if (values === undefined) return undefined;
  if (values.length > 1) throw new ForwardedCertificateError('ambiguous', `XFCC element repeats ${key}`);
  return values[0];
}

/**
 * Envoy XFCC: reads the last element (the one the trusted hop appended) unless told otherwise.
 * `Cert` (URL-encoded leaf PEM) gives the DER; without it, the first certificate of `Chain` (which
 * includes the leaf, leaf first) does. `Hash` (hex SHA-256 of the leaf DER) alone is enough for
 * binding. When a certificate and `Hash` are both present they must agree. An element with
 * neither is malformed: Envoy always writes `Hash` for a client certificate and writes no
 * element without one.
 */
function parseXfcc(text: string, which: 'last' | 'first'): ForwardedCertificate {
  const elements = xfccElements(text);
  const element = which === 'first' ? elements[0]! : elements[elements.length - 1]!;
  const hash = single(element, 'hash');
  const cert = single(element, 'cert');
  const chain = single(element, 'chain');
  let fromCert: ForwardedCertificate | undefined;
  if (cert !== undefined) {
    const ders = pemCertificates(percentDecode(cert, 'XFCC Cert'), 'XFCC Cert');
    if (ders.length > 1) throw new ForwardedCertificateError('ambiguous', 'XFCC Cert holds more than one certificate');
    fromCert = certificateFromDer(ders[0]!);
  } else if (chain !== undefined) {
    const [leaf] = pemCertificates(percentDecode(chain, 'XFCC Chain'), 'XFCC Chain');
    fromCert = certificateFromDer(leaf!);
  }
  if (hash !== undefined) {
    const digest = digestFromHex(hash, 'XFCC Hash');
    if (fromCert === undefined) return fromDigest(digest, undefined);
    if (digest.toString('hex') !== fromCert.sha256Hex) {
      throw new ForwardedCertificateError('hash_mismatch', 'XFCC Hash does not match the certificate in the same element');
    }
  }
  if (fromCert === undefined) throw new ForwardedCertificateError('malformed_header', 'XFCC element has no Hash, Cert or Chain');
  return fromCert;
}

// ---------------------------------------------------------------------------------------------
// Trusted peers

const PREFIX = /^(0|[1-9][0-9]{0,2})$/;

/**
 * A BlockList of IPv4 and IPv6 CIDRs and bare addresses (`10.0.0.0/8`, `fd00::/8`, `127.0.0.1`,
 * `::1`). Host bits below the prefix are ignored (`10.1.2.3/8` is `10.0.0.0/8`).
 *
 * @throws Error naming the first bad entry.
 */
export function parseCidrList(cidrs: string[]): BlockList {
  const list = new BlockList();
  for (const entry of cidrs) {
    if (typeof entry !== 'string') throw new Error(`invalid CIDR entry: ${JSON.stringify(entry)}`);
    const slash = entry.indexOf('/');
    const address = slash === -1 ? entry : entry.slice(0, slash);
    const family = isIP(address);
    if (family === 0) throw new Error(`invalid CIDR entry ${JSON.stringify(entry)}: not an IP address`);
    const type = family === 4 ? 'ipv4' : 'ipv6';
    if (slash === -1) {
      list.addAddress(address, type);
      continue;
    }
    const prefixText = entry.slice(slash + 1);
    const prefix = Number(prefixText);
    if (!PREFIX.test(prefixText) || prefix > (family === 4 ? 32 : 128)) {
      throw new Error(`invalid CIDR entry ${JSON.stringify(entry)}: bad prefix length`);
    }
    list.addSubnet(address, prefix, type);
  }
  return list;
}

const IPV4_MAPPED = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i;

/**
 * Whether a TCP peer address (`socket.remoteAddress`) is in `list`. An IPv4-mapped IPv6 peer
 * (`::ffff:127.0.0.1`, what a dual-stack listener reports) also matches IPv4 entries. A zone id
 * (`fe80::1%eth0`) is ignored. Undefined or unparseable addresses are never in the list.
 */
export function peerInList(list: BlockList, address: string | undefined): boolean {
  if (typeof address !== 'string') return false;
  const percent = address.indexOf('%');
  const bare = percent === -1 ? address : address.slice(0, percent);
  const family = isIP(bare);
  if (family === 4) return list.check(bare, 'ipv4');
  if (family !== 6) return false;
  if (list.check(bare, 'ipv6')) return true;
  const mapped = IPV4_MAPPED.exec(bare);
  return mapped !== null && isIP(mapped[1]!) === 4 && list.check(mapped[1]!, 'ipv4');
}
