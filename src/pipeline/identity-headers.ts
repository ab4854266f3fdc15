/**
 * Step: the verified identity, as headers for the upstream. Inbound copies of every header any
 * route manages are removed on every route (also `binding: off`), so an upstream can believe them.
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { ClientCertificate } from './client-cert.ts';
import type { Identity } from './decide.ts';
import type { ClaimHeader } from './route.ts';

export interface IdentityHeaderNames {
  readonly subject: string;
  readonly clientId: string;
  readonly scope: string;
  readonly certThumbprint: string;
  readonly clientCert: string;
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

function xfccValue(value: string): string {
  const safe = headerSafe(value);
  return /[,;="\\]/.test(safe) ? quotedXfcc(safe) : safe;
}

/** One Envoy XFCC element for the connection's certificate: `Hash=…;Subject="…";URI=…;DNS=…`. */
export function xfccElement(certificate: Pick<ClientCertificate, 'sha256Hex' | 'subject' | 'uris' | 'dns'>): string {
  const parts = [`Hash=${certificate.sha256Hex}`, `Subject=${quotedXfcc(headerSafe(certificate.subject))}`];
  for (const uri of certificate.uris) parts.push(`URI=${xfccValue(uri)}`);
  for (const dns of certificate.dns) parts.push(`DNS=${xfccValue(dns)}`);
  return parts.join(';');
}

/** Removes, in place, every header cnfguard sets for the upstream: they are the client's to forge. */
export function stripManagedHeaders(headers: IncomingHttpHeaders, names: readonly string[]): void {
  // Only when present: a delete turns V8's header object into a slower dictionary.
  for (const name of names) if (headers[name] !== undefined) delete headers[name];
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

/** Sets the verified identity and mapped claims, in place (after {@link stripManagedHeaders}). */
export function setIdentityHeaders(headers: IncomingHttpHeaders, identity: Identity, names: IdentityHeaderNames, claimHeaders: readonly ClaimHeader[] = []): void {
  if (identity.subject !== undefined) headers[names.subject] = headerSafe(identity.subject);
  if (identity.clientId !== undefined) headers[names.clientId] = headerSafe(identity.clientId);
  if (identity.scope !== undefined) headers[names.scope] = headerSafe(identity.scope);
  if (identity.certificate !== undefined) {
    headers[names.certThumbprint] = identity.certificate.thumbprint;
    headers[names.clientCert] = identity.certificate.xfcc;
  }
  for (const claim of claimHeaders) {
    const value = claimValue(identity.claims, claim.path);
    if (value !== undefined) headers[claim.header] = value;
  }
}
