/** Refusals written by the HTTP/1.1 edge: through the one renderer, to a response or straight to a socket. */
import { STATUS_CODES, type ServerResponse } from 'node:http';
import type { GuardError} from '../oauth/errors.ts';
import { renderError, type RenderedError } from '../oauth/errors.ts';
import type { RoutePolicy } from '../pipeline/route.ts';

export function renderFor(err: GuardError, realm: string, route: RoutePolicy | undefined): RenderedError {
  const metadata = route?.resourceMetadataUrl;
  return renderError(err, { realm, ...(metadata !== undefined && { challengeParams: { resource_metadata: metadata } }) });
}

export function sendRendered(res: ServerResponse, rendered: RenderedError, requestId: string): void {
  res.writeHead(rendered.status, { ...rendered.headers, 'content-length': Buffer.byteLength(rendered.body), 'x-request-id': requestId });
  res.end(rendered.body);
}

/** A complete HTTP/1.1 response written to a socket that is then closed (parser errors, refused upgrades). */
export function rawResponse(rendered: RenderedError, extra: Record<string, string> = {}): string {
  const headers = { ...rendered.headers, ...extra, 'content-length': String(Buffer.byteLength(rendered.body)), connection: 'close' };
  const lines = Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`);
  return `HTTP/1.1 ${rendered.status} ${STATUS_CODES[rendered.status] ?? ''}\r\n${lines.join('')}\r\n${rendered.body}`;
}
