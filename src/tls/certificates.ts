/**
 * Certificate facts computed once per certificate: RFC 8705 §3.1 thumbprint (and its
 * constant-time comparison) and the parts of an Envoy XFCC element (written by xfcc.ts); the one
 * PEM reader. Certificates are parsed with Node's own X509Certificate.
 */
import { hash, timingSafeEqual, type X509Certificate } from 'node:crypto';

export const PEM_CERTIFICATE_BEGIN = '-----BEGIN CERTIFICATE-----';
export const PEM_CERTIFICATE_END = '-----END CERTIFICATE-----';
/** Whitespace a PEM body may carry (line breaks, or spaces where a proxy folded them). */
export const PEM_WHITESPACE = /[ \t\r\n]+/g;

/** One `CERTIFICATE` block of PEM text. */
export interface PemBlock {
  /** The block as written, from its BEGIN line to its END line. */
  readonly text: string;
  /** What lies between the two lines: base64 and whitespace, not yet checked. */
  readonly body: string;
}

/** Why PEM text was refused in strict mode: text other than whitespace around the blocks, or a block with no END line. */
export class PemSyntaxError extends Error {
  readonly problem: 'text_outside_blocks' | 'unterminated_block';

  constructor(problem: PemSyntaxError['problem']) {
    super(problem === 'text_outside_blocks' ? 'has text outside PEM certificate blocks' : 'has an unterminated PEM block');
    this.name = 'PemSyntaxError';
    this.problem = problem;
  }
}

/**
 * The `CERTIFICATE` blocks of PEM text, in order: the one PEM reader, for files and for forwarded
 * headers. Lenient (files): other text (comments, keys) around the blocks is skipped, and so is a
 * BEGIN line with no END line. Strict (headers): only whitespace may surround the blocks (RFC 7468
 * strict form, bar line length) and every block must end; otherwise throws {@link PemSyntaxError}.
 */
export function pemCertificateBlocks(text: string, mode: 'lenient' | 'strict' = 'lenient'): PemBlock[] {
  const strict = mode === 'strict';
  const blocks: PemBlock[] = [];
  let at = 0;
  for (;;) {
    const begin = text.indexOf(PEM_CERTIFICATE_BEGIN, at);
    if (strict && text.slice(at, begin === -1 ? text.length : begin).replace(PEM_WHITESPACE, '').length > 0) {
      throw new PemSyntaxError('text_outside_blocks');
    }
    if (begin === -1) return blocks;
    const bodyStart = begin + PEM_CERTIFICATE_BEGIN.length;
    const end = text.indexOf(PEM_CERTIFICATE_END, bodyStart);
    if (end === -1) {
      if (strict) throw new PemSyntaxError('unterminated_block');
      return blocks;
    }
    at = end + PEM_CERTIFICATE_END.length;
    blocks.push({ text: text.slice(begin, at), body: text.slice(bodyStart, end) });
  }
}

/** The PEM certificates in a bundle, in file order (lenient: other text is skipped). */
export function splitPemCertificates(pem: string): string[] {
  return pemCertificateBlocks(pem).map((block) => block.text);
}

export function sha256(der: Uint8Array): Buffer {
  return hash('sha256', der, 'buffer');
}

/** `x5t#S256`: base64url (no padding) SHA-256 of the leaf certificate's DER bytes, never the PEM text. */
export function thumbprintS256(der: Uint8Array): string {
  return sha256(der).toString('base64url');
}

/**
 * Thumbprints decoded and checked for canonical spelling once: the same few (a client's
 * certificate, its tokens' `cnf` member, a token's `ath`) recur on every request, and decoding and
 * re-encoding both per request cost ~1 µs. Only thumbprint-sized values are kept; bounded.
 */
const decodedThumbprints = new Map<string, Buffer | null>();
const MAX_DECODED_THUMBPRINTS = 4096;

/** The 32 bytes a thumbprint spells, when it is their canonical unpadded base64url spelling. */
function thumbprintBytes(value: string): Buffer | undefined {
  if (value.length !== 43) return undefined;
  let bytes = decodedThumbprints.get(value);
  if (bytes === undefined) {
    const decoded = Buffer.from(value, 'base64url');
    // Buffer.from drops characters outside the alphabet: the value must be the canonical spelling.
    bytes = decoded.length === 32 && decoded.toString('base64url') === value ? decoded : null;
    if (decodedThumbprints.size >= MAX_DECODED_THUMBPRINTS) decodedThumbprints.clear();
    decodedThumbprints.set(value, bytes);
  }
  return bytes ?? undefined;
}

/** Compares two base64url thumbprints as bytes, in constant time. */
export function thumbprintsEqual(expected: string, actual: string): boolean {
  const a = thumbprintBytes(expected);
  const b = thumbprintBytes(actual);
  return a !== undefined && b !== undefined && timingSafeEqual(a, b);
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

/** Why a certificate cannot serve now: it has expired, or is not valid yet. */
export interface ValidityProblem {
  reason: 'expired' | 'not_yet_valid';
  /** Its validity period, ISO 8601 UTC to the second. */
  notBefore: string;
  notAfter: string;
  /** In words, naming the date passed or not reached, e.g. "expired on 2021-01-01T00:00:00Z (notAfter)". */
  message: string;
}

const isoSeconds = (ms: number): string => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');

/**
 * The certificate's validity period against `nowMs`: a problem when it has expired or is not valid
 * yet (clients that verify it refuse the handshake), undefined while it is valid.
 */
export function validityProblem(x509: X509Certificate, nowMs: number): ValidityProblem | undefined {
  const notBeforeMs = new Date(x509.validFrom).getTime();
  const notAfterMs = new Date(x509.validTo).getTime();
  const period = { notBefore: isoSeconds(notBeforeMs), notAfter: isoSeconds(notAfterMs) };
  if (nowMs > notAfterMs) return { reason: 'expired', ...period, message: `expired on ${period.notAfter} (notAfter)` };
  if (nowMs < notBeforeMs) return { reason: 'not_yet_valid', ...period, message: `is not valid before ${period.notBefore} (notBefore)` };
  return undefined;
}

/** RFC 4514 string form (most specific RDN first), as Envoy writes it in XFCC `Subject`. */
export function subjectRfc4514(x509: X509Certificate): string {
  return x509.subject
    .split('\n')
    .filter((line) => line.length > 0)
    .reverse()
    .join(',');
}
