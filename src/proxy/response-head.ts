/**
 * An answer's status line and headers, for either protocol. Over HTTP/2, an answer that no trailers
 * can follow is begun without waiting for them.
 *
 * Why: Node's compatibility response (`Http2ServerResponse.writeHead`) always asks for trailers
 * (`waitForTrailers`), so its END_STREAM comes after the body, in an empty DATA frame of its own.
 * A client whose body is complete by its content-length may reset the stream before that frame
 * arrives (curl does), and nghttp2's rapid-reset limit (`streamResetBurst`) counts those resets:
 * after a few hundred requests on one connection, GOAWAY(INTERNAL_ERROR) and a failed request.
 * Begun without waiting, the last DATA frame carries END_STREAM.
 */
import type { OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { Http2ServerResponse } from 'node:http2';
import type { ProxyResponse } from './messages.ts';

export function isHttp2Response(res: ProxyResponse): res is Http2ServerResponse {
  return !('shouldKeepAlive' in res);
}

export function isGrpc(contentType: string | undefined): boolean {
  return contentType !== undefined && /^application\/grpc(?:[+;]|$)/i.test(contentType);
}

/**
 * Whether an upstream's answer may end with trailers the client can use. An HTTP/1.1 upstream's
 * only when chunked (or announced in Trailer). An HTTP/2 upstream's when it is gRPC (its status
 * comes last), announced, or the client said it takes them (`TE: trailers`, as gRPC clients do);
 * any other HTTP/2 answer's trailers are dropped on the way, as they are for an HTTP/1.1 client.
 */
export function trailersMayFollow(clientTe: string | string[] | undefined, upstreamHeaders: Readonly<Record<string, string | string[] | undefined>>, upstreamHttp2: boolean): boolean {
  if (upstreamHeaders.trailer !== undefined) return true;
  if (!upstreamHttp2) return upstreamHeaders['transfer-encoding'] !== undefined;
  const contentType = upstreamHeaders['content-type'];
  return isGrpc(Array.isArray(contentType) ? contentType[0] : contentType) || /(?:^|,)\s*trailers\s*(?:[;,]|$)/i.test(String(clientTe ?? ''));
}

/**
 * Writes the head of `res`. `trailersMayFollow`: an HTTP/2 answer that may still get trailers (an
 * upstream's, gRPC status) keeps Node's way; it does not matter over HTTP/1.1. `endsAtHead`: an
 * HTTP/2 upstream's answer that ended with its headers (a gRPC trailers-only answer: its status in
 * them) goes on the same way, one HEADERS frame with END_STREAM; a gRPC client takes headers
 * without END_STREAM for the start of a call and reports it ended without a status (INTERNAL).
 * The caller still calls `res.end()`, which then has nothing left to send.
 */
export function writeHead(res: ProxyResponse, status: number, headers: OutgoingHttpHeaders, trailersMayFollow = false, endsAtHead = false): void {
  if (!isHttp2Response(res)) {
    (res as ServerResponse).writeHead(status, headers);
    return;
  }
  if (trailersMayFollow && !endsAtHead) {
    res.writeHead(status, headers);
    return;
  }
  // Through the compatibility response's own checks (it drops connection-specific fields), so that
  // getHeader() still says what was sent; then begun on the stream, without waiting for trailers.
  for (const name in headers) {
    const value = headers[name];
    if (value !== undefined) res.setHeader(name, value);
  }
  res.statusCode = status;
  res.stream.respond({ ...res.getHeaders(), ':status': status }, endsAtHead ? { endStream: true } : { waitForTrailers: false });
}
