/**
 * What every edge writes back, in one place: refusals through the one renderer (to a response, as
 * gRPC trailers-only, or straight to a socket), the headers an answer carries besides (request id,
 * DPoP nonce), and the public documents the pipeline serves. Edges name no header themselves.
 */
import { STATUS_CODES, type ServerResponse } from 'node:http';
import type { Http2ServerResponse } from 'node:http2';
import { renderError, type GuardError, type RenderedError } from './render.ts';
import type { PublicDocument, Verdict } from '../pipeline/pipeline.ts';
import { writeHead } from '../proxy/response-head.ts';

/**
 * A refusal as the route renders it: its challenges (Bearer, and DPoP when it accepts DPoP), the
 * error on the scheme the request used, `resource_metadata` when the route has a resource.
 * Without a verdict (a failure before the pipeline ran): one Bearer challenge.
 */
export function renderFor(err: GuardError, realm: string, verdict: Pick<Verdict, 'route' | 'scheme'> | undefined): RenderedError {
  const route = verdict?.route;
  const metadata = route?.resourceMetadataUrl;
  return renderError(err, {
    realm,
    ...(metadata !== undefined && { challengeParams: { resource_metadata: metadata } }),
    ...(route !== undefined && { methods: route.methods, advertiseMethods: route.advertiseMethods, dpopAlgorithms: route.dpopAlgorithms, httpsigComponents: route.httpsigComponents, scheme: verdict?.scheme }),
  });
}

export const REQUEST_ID_HEADER = 'x-request-id';

/** What an allowed upgrade gets while cnfguard drains: it would be cut off at once. */
export const DRAINING_ANSWER: RenderedError = { status: 503, headers: { 'content-type': 'text/plain' }, body: 'shutting down\n' };
const DPOP_NONCE_HEADER = 'dpop-nonce';

/** The headers every answer to a judged request carries: its id, and a fresh DPoP nonce when the verdict has one. */
export function answerHeaders(verdict: Pick<Verdict, 'dpopNonce'> | undefined, requestId: string): Record<string, string> {
  const headers: Record<string, string> = { [REQUEST_ID_HEADER]: requestId };
  if (verdict?.dpopNonce !== undefined) headers[DPOP_NONCE_HEADER] = verdict.dpopNonce;
  return headers;
}

export function sendRendered(res: ServerResponse | Http2ServerResponse, rendered: RenderedError, requestId: string): void {
  writeHead(res, rendered.status, { ...rendered.headers, 'content-length': Buffer.byteLength(rendered.body), [REQUEST_ID_HEADER]: requestId });
  res.end(rendered.body);
}

/** A public document the pipeline serves before any token check (RFC 9728 metadata, the assertion JWKS), as the pipeline describes it. */
export function sendDocument(res: ServerResponse | Http2ServerResponse, method: string | undefined, document: PublicDocument): void {
  writeHead(res, document.status, { 'content-type': document.contentType, 'content-length': Buffer.byteLength(document.body), 'cache-control': document.cacheControl, 'x-content-type-options': 'nosniff' });
  if (method === 'HEAD') res.end();
  else res.end(document.body);
}

/** A complete HTTP/1.1 response written to a socket that is then closed (parser errors, refused upgrades). */
export function rawResponse(rendered: RenderedError, extra: Record<string, string> = {}): string {
  const headers = { ...rendered.headers, ...extra, 'content-length': String(Buffer.byteLength(rendered.body)), connection: 'close' };
  const lines = Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`);
  return `HTTP/1.1 ${rendered.status} ${STATUS_CODES[rendered.status] ?? ''}\r\n${lines.join('')}\r\n${rendered.body}`;
}

/** gRPC status for the HTTP status cnfguard would answer (the contract's mapping). */
const GRPC_STATUS: Readonly<Record<number, number>> = { 400: 3, 401: 16, 403: 7, 503: 14 };

/** gRPC's percent-encoding of grpc-message (PROTOCOL-HTTP2.md): `%` and what is outside %x20-%x7E, as UTF-8. */
function grpcMessage(text: string): string {
  return text.replace(/[^\x20-\x24\x26-\x7e]/gu, (c) => Buffer.from(c, 'utf8').toString('hex').replace(/../g, (byte) => `%${byte.toUpperCase()}`));
}

/**
 * A gRPC refusal: trailers-only (one HEADERS frame with END_STREAM), HTTP 200, the gRPC status
 * the HTTP status maps to, and the same WWW-Authenticate, so a gRPC client sees UNAUTHENTICATED
 * or PERMISSION_DENIED rather than a transport error.
 */
export function sendGrpcRefusal(res: Http2ServerResponse, err: GuardError, rendered: RenderedError, requestId: string): void {
  const headers: Record<string, string> = {
    ':status': '200',
    'content-type': 'application/grpc',
    'grpc-status': String(GRPC_STATUS[rendered.status] ?? 13),
    'grpc-message': grpcMessage(err.description),
    [REQUEST_ID_HEADER]: requestId,
  };
  const challenge = rendered.headers['www-authenticate'];
  if (challenge !== undefined) headers['www-authenticate'] = challenge;
  const retryAfter = rendered.headers['retry-after'];
  if (retryAfter !== undefined) headers['retry-after'] = retryAfter;
  const nonce = rendered.headers[DPOP_NONCE_HEADER];
  if (nonce !== undefined) headers[DPOP_NONCE_HEADER] = nonce;
  // httpsig: what a signature must cover (RFC 9421 §5.1), as gRPC metadata beside the challenge.
  const acceptSignature = rendered.headers['accept-signature'];
  if (acceptSignature !== undefined) headers['accept-signature'] = acceptSignature;
  res.stream.respond(headers, { endStream: true });
}
