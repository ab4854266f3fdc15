/**
 * Step: the verified identity, as headers for the upstream. Inbound copies of every header any
 * route manages are removed on every route (also `binding: off`), so an upstream can believe them.
 */
import type { ClientCertificate } from './client-cert.ts';
import type { Decision, Identity } from './decide.ts';
import type { ClaimHeader, RoutePolicy } from './route.ts';

export interface IdentityHeaderNames {
  readonly subject: string;
  readonly clientId: string;
  readonly scope: string;
  readonly certThumbprint: string;
  readonly clientCert: string;
  readonly binding: string;
  /** The DPoP proof key's RFC 7638 thumbprint (x-auth-dpop-jkt). */
  readonly dpopThumbprint: string;
}

/**
 * The bytes of one code point, UTF-8; a lone surrogate (a JSON `\uD800` escape can carry one, no
 * valid UTF-8 text can) gets its WTF-8 bytes (`ED A0 80`…`ED BF BF`), which no other code point has.
 */
function utf8Bytes(cp: number): number[] {
  if (cp < 0x80) return [cp];
  if (cp < 0x800) return [0xc0 | (cp >> 6), 0x80 | (cp & 0x3f)];
  if (cp < 0x10000) return [0xe0 | (cp >> 12), 0x80 | ((cp >> 6) & 0x3f), 0x80 | (cp & 0x3f)];
  return [0xf0 | (cp >> 18), 0x80 | ((cp >> 12) & 0x3f), 0x80 | ((cp >> 6) & 0x3f), 0x80 | (cp & 0x3f)];
}

const hex2 = (byte: number): string => byte.toString(16).toUpperCase().padStart(2, '0');

/**
 * `value` with every code point that `keep` refuses written as its (WTF-8) bytes, each as
 * `escape` + two upper-case hex digits. Nothing is dropped; `keep` must refuse `escape` itself.
 */
function escapeBytes(value: string, escape: '%' | '\\', keep: (cp: number, first: boolean, last: boolean) => boolean): string {
  let out = '';
  let at = 0;
  for (const ch of value) {
    const cp = ch.codePointAt(0) ?? 0;
    if (keep(cp, at === 0, at + ch.length === value.length)) out += ch;
    else for (const byte of utf8Bytes(cp)) out += escape + hex2(byte);
    at += ch.length;
  }
  return out;
}

/** Printable ASCII but `%`, spaces only inside: the values that travel unchanged. */
const PLAIN = /^(?:[\x21-\x24\x26-\x7e](?:[\x20-\x24\x26-\x7e]*[\x21-\x24\x26-\x7e])?)?$/;

/**
 * A claim or identity as a header value, injective and reversible (decodeURIComponent undoes it):
 * printable ASCII other than `%` is kept, so a plain value (the common case) arrives unchanged;
 * `%`, every control character, every non-ASCII character (its UTF-8 bytes) and a space at either
 * end (header parsers strip it) are percent-encoded. Lone surrogates: see {@link utf8Bytes}.
 */
export function headerSafe(value: string): string {
  if (PLAIN.test(value)) return value;
  return escapeBytes(value, '%', (cp, first, last) => (cp > 0x20 && cp < 0x7f && cp !== 0x25) || (cp === 0x20 && !first && !last));
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
export function xfccElement(certificate: Pick<ClientCertificate, 'sha256Hex' | 'subject' | 'uris' | 'dns'>): string {
  const parts = [`Hash=${certificate.sha256Hex}`, `Subject=${quotedXfcc(certificate.subject)}`];
  for (const uri of certificate.uris) parts.push(`URI=${xfccValue(uri)}`);
  for (const dns of certificate.dns) parts.push(`DNS=${xfccValue(dns)}`);
  return parts.join(';');
}

/** A claim as a header value: strings as they are, numbers and booleans as text, anything else as JSON. */
export function claimValue(claims: Readonly<Record<string, unknown>>, path: readonly string[]): string | undefined {
  let value: unknown = claims;
  for (const member of path) {
    if (value === null || typeof value !== 'object' || !Object.hasOwn(value, member)) return undefined;
    value = (value as Record<string, unknown>)[member];
  }
  if (value === undefined || value === null) return undefined;
  const text = typeof value === 'string' ? value : typeof value === 'number' || typeof value === 'boolean' ? String(value) : JSON.stringify(value);
  return headerSafe(text);
}

/**
 * Sets the verified identity and mapped claims, in place, on headers from which every client copy
 * is already gone (upstream-headers.ts). A certificate that does not chain to `tls.clientCa` is
 * not an identity: it is never forwarded, on any route.
 */
export function setIdentityHeaders(headers: Record<string, string | string[] | undefined>, identity: Identity, names: IdentityHeaderNames, claimHeaders: readonly ClaimHeader[] = []): void {
  if (identity.subject !== undefined) headers[names.subject] = headerSafe(identity.subject);
  if (identity.clientId !== undefined) headers[names.clientId] = headerSafe(identity.clientId);
  if (identity.scope !== undefined) headers[names.scope] = headerSafe(identity.scope);
  if (identity.certificate?.trusted === true) {
    headers[names.certThumbprint] = identity.certificate.thumbprint;
    headers[names.clientCert] = identity.certificate.xfcc;
  }
  if (identity.dpopThumbprint !== undefined) headers[names.dpopThumbprint] = identity.dpopThumbprint;
  for (const claim of claimHeaders) {
    const value = claimValue(identity.claims, claim.path);
    if (value !== undefined) headers[claim.header] = value;
  }
}

/**
 * Every header the upstream (or a front, from the decision API's allow answer) receives as the
 * verified identity of an allowed request: computed once per request, in the pipeline's verdict.
 */
export function identityHeadersOf(decision: Extract<Decision, { allow: true }>, route: Pick<RoutePolicy, 'headerNames' | 'claimHeaders'>): Readonly<Record<string, string>> {
  const headers: Record<string, string> = {};
  setIdentityHeaders(headers, decision.identity, route.headerNames, route.claimHeaders);
  headers[route.headerNames.binding] = decision.reason;
  return headers;
}
