/**
 * Step: the verified identity, as headers for the upstream. Inbound copies of every header any
 * route manages are removed on every route (also `binding: off`), so an upstream can believe them.
 */
import { escapeBytes } from '../escape-bytes.ts';
import type { Decision, Identity } from './decide.ts';
import type { ClaimHeader, IdentityHeaderNames, RoutePolicy } from './route.ts';

export type { IdentityHeaderNames } from './route.ts';

/** Printable ASCII but `%`, spaces only inside: the values that travel unchanged. */
const PLAIN = /^(?:[\x21-\x24\x26-\x7e](?:[\x20-\x24\x26-\x7e]*[\x21-\x24\x26-\x7e])?)?$/;

/**
 * A claim or identity as a header value, injective and reversible (decodeURIComponent undoes it):
 * printable ASCII other than `%` is kept, so a plain value (the common case) arrives unchanged;
 * `%`, every control character, every non-ASCII character (its UTF-8 bytes) and a space at either
 * end (header parsers strip it) are percent-encoded. Lone surrogates: see utf8Bytes in src/escape-bytes.ts.
 */
export function headerSafe(value: string): string {
  if (PLAIN.test(value)) return value;
  return escapeBytes(value, '%', (cp, first, last) => (cp > 0x20 && cp < 0x7f && cp !== 0x25) || (cp === 0x20 && !first && !last));
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
