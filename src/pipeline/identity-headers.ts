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
 * Header values come from the AS and from certificates: control characters are dropped and
 * anything outside printable ASCII is percent-encoded, so no value can break the header block.
 */
export function headerSafe(value: string): string {
  return value.replace(/[^\x20-\x7e]/gu, (c) => {
    const code = c.codePointAt(0) ?? 0;
    if (code < 0x20 || code === 0x7f) return '';
    try {
      return encodeURIComponent(c);
    } catch {
      return ''; // a lone surrogate has no UTF-8 form
    }
  });
}

function quotedXfcc(value: string): string {
  return `"${value.replace(/["\\]/g, (c) => `\\${c}`)}"`;
}

/** URI and DNS values percent-encoded (as Envoy does) so no character can end the element or the field. */
function xfccValue(value: string): string {
  return headerSafe(value.replace(/[%,;="\\ ]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`));
}

/** One Envoy XFCC element for the connection's certificate: `Hash=…;Subject="…";URI=…;DNS=…`. */
export function xfccElement(certificate: Pick<ClientCertificate, 'sha256Hex' | 'subject' | 'uris' | 'dns'>): string {
  const parts = [`Hash=${certificate.sha256Hex}`, `Subject=${quotedXfcc(headerSafe(certificate.subject))}`];
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
