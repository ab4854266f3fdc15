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

/**
 * Writes the head of `res`. `trailersMayFollow`: an HTTP/2 answer that may still get trailers (an
 * upstream's, gRPC status) keeps Node's way; it does not matter over HTTP/1.1.
 */
export function writeHead(res: ProxyResponse, status: number, headers: OutgoingHttpHeaders, trailersMayFollow = false): void {
  if (!isHttp2Response(res)) {
    (res as ServerResponse).writeHead(status, headers);
    return;
  }
  if (trailersMayFollow) {
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
  res.stream.respond({ ...res.getHeaders(), ':status': status }, { waitForTrailers: false });
}
