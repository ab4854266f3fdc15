/**
 * The proxy edge's first step: a request, HTTP/1.1 or HTTP/2, as plain {@link RequestFacts}.
 * Reads, never changes, the request: what is removed before forwarding is decided by
 * upstream-headers.ts.
 */
import type { IncomingMessage } from 'node:http';
import type { Http2ServerRequest } from 'node:http2';
import type { TLSSocket } from 'node:tls';
import { GuardError } from '../oauth/errors.ts';
import type { CertificateSource } from '../pipeline/client-cert.ts';
import type { RequestFacts } from '../pipeline/pipeline.ts';
import { isFormContentType } from '../pipeline/token.ts';

export type ProxyRequest = IncomingMessage | Http2ServerRequest;

export function isHttp2(req: ProxyRequest): req is Http2ServerRequest {
  return req.httpVersionMajor === 2;
}

/** Every value of one header, as received (HTTP/2 has no headersDistinct). */
function linesOf(rawHeaders: readonly string[], name: string): string[] | undefined {
  let lines: string[] | undefined;
  for (let i = 0; i < rawHeaders.length; i += 2) if (rawHeaders[i]?.toLowerCase() === name) (lines ??= []).push(rawHeaders[i + 1] ?? '');
  return lines;
}

/** What HTTP/1.1's `headersDistinct` holds: every header's values, lower-case names. */
function distinctOf(rawHeaders: readonly string[]): NodeJS.Dict<string[]> {
  const distinct: NodeJS.Dict<string[]> = {};
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = (rawHeaders[i] ?? '').toLowerCase();
    if (!name.startsWith(':')) (distinct[name] ??= []).push(rawHeaders[i + 1] ?? '');
  }
  return distinct;
}

/** HTTP/2: header fields other than pseudo-headers, and the header list's size (RFC 9113 §6.5.2). */
function http2HeaderList(rawHeaders: readonly string[]): { count: number; bytes: number } {
  let count = 0;
  let bytes = 0;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i] ?? '';
    if (!name.startsWith(':')) count++;
    bytes += name.length + (rawHeaders[i + 1]?.length ?? 0) + 32;
  }
  return { count, bytes };
}

/** HTTP/2: the `:authority` and any Host line must agree (RFC 9113 §8.3.1), so both count as Host lines. */
function http2HostLines(req: Http2ServerRequest): string[] | undefined {
  const authority = req.headers[':authority'];
  const hosts = linesOf(req.rawHeaders, 'host');
  if (authority === undefined) return hosts;
  return hosts === undefined || hosts.every((host) => host === authority) ? [authority] : [authority, ...hosts];
}

/**
 * The connection under a request, or undefined when it is gone. HTTP/2's is a proxy that throws
 * (ERR_HTTP2_SOCKET_UNBOUND) once its session is destroyed: read it only when the request starts.
 */
function connectionOf(req: ProxyRequest): Partial<TLSSocket> | undefined {
  if (!isHttp2(req)) return req.socket as Partial<TLSSocket>;
  const session = req.stream.session;
  return session === undefined || session.destroyed ? undefined : (session.socket as Partial<TLSSocket>);
}

/** The peer's address, read when the request starts (see {@link connectionOf}). */
export function peerAddress(req: ProxyRequest): string | undefined {
  return connectionOf(req)?.remoteAddress;
}

export function requestFacts(req: ProxyRequest, certificates: CertificateSource): RequestFacts {
  const h2 = isHttp2(req);
  const socket = connectionOf(req);
  const peer = socket?.remoteAddress;
  let certificate;
  let certificateError;
  try {
    certificate = certificates.certificateOf({
      socket: socket?.encrypted === true ? (socket as TLSSocket) : undefined,
      peerAddress: peer,
      headers: req.headers,
      headersDistinct: h2 ? distinctOf(req.rawHeaders) : req.headersDistinct,
    });
  } catch (err) {
    if (!(err instanceof GuardError)) throw err;
    certificateError = err;
  }
  const length = req.headers['content-length'];
  const list = h2 ? http2HeaderList(req.rawHeaders) : undefined;
  return {
    method: req.method ?? 'GET',
    target: req.url ?? '/',
    hostLines: h2 ? http2HostLines(req) : req.headersDistinct.host,
    headerCount: list?.count ?? req.rawHeaders.length / 2,
    ...(list !== undefined && { headerBytes: list.bytes }),
    authorization: h2 ? linesOf(req.rawHeaders, 'authorization') : req.headersDistinct.authorization,
    dpop: h2 ? linesOf(req.rawHeaders, 'dpop') : req.headersDistinct.dpop,
    peer,
    certificate,
    certificateError,
    body: {
      declaredLength: length === undefined ? undefined : Number(length),
      chunked: length === undefined && (h2 ? !req.stream.endAfterHeaders : req.headers['transfer-encoding'] !== undefined),
      form: isFormContentType(req.headers['content-type']),
    },
  };
}
