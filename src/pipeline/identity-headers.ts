/**
 * Step: the verified identity, as headers for the upstream. Inbound copies of every identity
 * header are removed on every route (also `binding: off`), so an upstream can believe them.
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { ClientCertificate } from './client-cert.ts';
import type { Identity } from './decide.ts';

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

function xfccValue(value: string): string {
  const safe = headerSafe(value);
  return /[,;="\\]/.test(safe) ? `"${safe.replace(/["\\]/g, (c) => `\\${c}`)}"` : safe;
}

/** One Envoy XFCC element for the connection's certificate: `Hash=…;Subject="…";URI=…;DNS=…`. */
export function xfccElement(certificate: ClientCertificate): string {
  const parts = [`Hash=${certificate.sha256Hex}`, `Subject="${headerSafe(certificate.subject).replace(/["\\]/g, (c) => `\\${c}`)}"`];
  for (const uri of certificate.uris) parts.push(`URI=${xfccValue(uri)}`);
  for (const dns of certificate.dns) parts.push(`DNS=${xfccValue(dns)}`);
  return parts.join(';');
}

/** Removes every identity header the client sent, in place. */
export function stripIdentityHeaders(headers: IncomingHttpHeaders, names: IdentityHeaderNames): void {
  delete headers[names.subject];
  delete headers[names.clientId];
  delete headers[names.scope];
  delete headers[names.certThumbprint];
  delete headers[names.clientCert];
}

/** Sets the verified identity, in place (after {@link stripIdentityHeaders}). */
export function setIdentityHeaders(headers: IncomingHttpHeaders, identity: Identity, names: IdentityHeaderNames): void {
  if (identity.subject !== undefined) headers[names.subject] = headerSafe(identity.subject);
  if (identity.clientId !== undefined) headers[names.clientId] = headerSafe(identity.clientId);
  if (identity.scope !== undefined) headers[names.scope] = headerSafe(identity.scope);
  if (identity.certificate !== undefined) {
    headers[names.certThumbprint] = identity.certificate.thumbprint;
    headers[names.clientCert] = xfccElement(identity.certificate);
  }
}
