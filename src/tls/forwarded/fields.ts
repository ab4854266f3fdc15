/**
 * What every forwarded-certificate format shares: the result and error types, the bounds, the
 * field-line rules (a singleton header, a list-valued one), strict base64, percent-decoding, and
 * the DER/PEM steps that end in the RFC 8705 §3.1 thumbprint. Pure; nothing here throws anything
 * but a {@link ForwardedCertificateError}.
 */
import { X509Certificate } from 'node:crypto';
import { PemSyntaxError, pemCertificateBlocks, PEM_WHITESPACE, sha256 } from '../certificates.ts';

export interface ForwardedCertificate {
  /** RFC 8705 `x5t#S256`: base64url, unpadded SHA-256 of the leaf DER. */
  thumbprint: string;
  /** The same digest as lowercase hex (Envoy XFCC `Hash`). */
  sha256Hex: string;
  /** The leaf certificate's DER; undefined for thumbprint-only values (`sha256-hex`, XFCC `Hash` alone). */
  der: Buffer | undefined;
}

/** A header value as Node gives it: `req.headers[name]` or `req.headersDistinct[name]`. */
export type HeaderValue = string | string[] | undefined;

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

// ---------------------------------------------------------------------------------------------
// Field lines

/** RFC 9110 optional whitespace. */
const OWS = /^[ \t]+|[ \t]+$/g;

export function trimOws(text: string): string {
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
export function singleLine(value: HeaderValue): string | undefined {
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
export function joinListLines(value: HeaderValue): string | undefined {
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
export const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

export function decodeBase64(text: string, what: string): Buffer {
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
export function certificateFromDer(der: Buffer): ForwardedCertificate {
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

export function fromDigest(digest: Buffer, der: Buffer | undefined): ForwardedCertificate {
  return { thumbprint: digest.toString('base64url'), sha256Hex: digest.toString('hex'), der };
}

const HEX_SHA256 = /^[0-9a-fA-F]{64}$/;

export function digestFromHex(text: string, what: string): Buffer {
  if (!HEX_SHA256.test(text)) throw new ForwardedCertificateError('malformed_header', `${what} is not 64 hex digits`);
  return Buffer.from(text, 'hex');
}

/**
 * The DER of each `CERTIFICATE` block in PEM text, in order, read by the one PEM reader in its
 * strict mode (only whitespace around the blocks); anything else is malformed.
 */
export function pemCertificates(text: string, what: string): Buffer[] {
  let blocks;
  try {
    blocks = pemCertificateBlocks(text, 'strict');
  } catch (err) {
    if (err instanceof PemSyntaxError) throw new ForwardedCertificateError('malformed_header', `${what} ${err.message}`);
    throw err;
  }
  const ders = blocks.map((block) => decodeBase64(block.body.replace(PEM_WHITESPACE, ''), what));
  if (ders.length === 0) throw new ForwardedCertificateError('malformed_header', `${what} has no PEM certificate`);
  return ders;
}

/** RFC 3986 percent-decoding (`decodeURIComponent`): `+` stays a plus, never form decoding. */
export function percentDecode(text: string, what: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    throw new ForwardedCertificateError('malformed_header', `${what} has an invalid percent-encoding`);
  }
}
