/**
 * Envoy `x-forwarded-client-cert` (XFCC): a list-valued header, one element per hop.
 */
import {
  certificateFromDer,
  digestFromHex,
  ForwardedCertificateError,
  fromDigest,
  joinListLines,
  pemCertificates,
  percentDecode,
  trimOws,
  type ForwardedCertificate,
  type HeaderValue,
} from './fields.ts';

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
export function parseXfcc(value: HeaderValue, which: 'last' | 'first'): ForwardedCertificate | undefined {
  const text = joinListLines(value);
  if (text === undefined) return undefined;
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
