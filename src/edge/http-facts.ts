/**
 * The proxy edge's first step: a request, HTTP/1.1 or HTTP/2, as plain {@link RequestFacts}.
 * Reads, never changes, the request: what is removed before forwarding is decided by
 * upstream-headers.ts. Everything about the connection is read here, when the request starts:
 * an HTTP/2 stream's session socket is a proxy that throws on every read once the session is
 * gone (ERR_HTTP2_SOCKET_UNBOUND), which may be before the response's 'close'.
 */
import type { IncomingMessage } from 'node:http';
import type { Http2ServerRequest } from 'node:http2';
import type { TLSSocket } from 'node:tls';
import { GuardError } from '../oauth/reasons.ts';
import type { CertificateSource, RequestConnection } from '../pipeline/client-cert.ts';
import type { RequestFacts } from '../pipeline/pipeline.ts';
import type { ProxyRequest } from '../proxy/messages.ts';
import { forwardedClient } from '../observe/traffic.ts';
import type { ExchangeOrigin } from './exchange.ts';
import type { Verdict } from '../pipeline/pipeline.ts';
import { upstreamHeaders } from '../pipeline/upstream-headers.ts';
import { isFormContentType } from '../pipeline/token.ts';


/**
 * By what the request object is, not by its version: Node's HTTP/1.1 parser accepts a request line
 * that says `HTTP/2.0`, and taking that for an HTTP/2 stream ended the process (a stream that was
 * not there, read in a close handler).
 */
export function isHttp2(req: ProxyRequest): req is Http2ServerRequest {
  return 'stream' in req;
}

/** Every value of one header, as received (HTTP/2 has no headersDistinct). */
function linesOf(rawHeaders: readonly string[], name: string): string[] | undefined {
  let lines: string[] | undefined;
  for (let i = 0; i < rawHeaders.length; i += 2) if (rawHeaders[i]?.toLowerCase() === name) (lines ??= []).push(rawHeaders[i + 1] ?? '');
  return lines;
}

/** Every line of one header (lower-case name), as received. */
export type HeaderLines = (name: string) => string[] | undefined;

/**
 * An HTTP/1.1 request's lines by header name. Node's server builds `req.headers` for every request
 * (it reads Host, Expect and TE there); `headersDistinct` would be a second map of every line. When
 * no name repeats, `headers` holds each line as received, one key a line; a repeated name (a
 * client's second Authorization, say) is joined or dropped there, so then `headersDistinct` answers.
 */
export function headerLinesOf(req: IncomingMessage): HeaderLines {
  const headers = req.headers;
  if (Object.keys(headers).length !== req.rawHeaders.length / 2) {
    const distinct = req.headersDistinct;
    return (name) => distinct[name];
  }
  return (name) => {
    // Own keys only: `headers` has Object's prototype, and a signature may name any field ("constructor").
    if (!Object.hasOwn(headers, name)) return undefined;
    const value = headers[name];
    return value === undefined ? undefined : typeof value === 'string' ? [value] : value;
  };
}

/** The lines the pipeline reads of every request, gathered in one pass over the raw headers. */
interface CheckedLines {
  host: string[] | undefined;
  authorization: string[] | undefined;
  dpop: string[] | undefined;
}

/**
 * Every Host, Authorization and DPoP line, as received (what `headersDistinct` would hold for them).
 * One pass that lower-cases only names of those lengths: Node's `headersDistinct` builds an array
 * for every header of every request (~1 µs), and most requests need no other.
 */
function checkedLines(rawHeaders: readonly string[]): CheckedLines {
  const lines: CheckedLines = { host: undefined, authorization: undefined, dpop: undefined };
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const raw = rawHeaders[i] ?? '';
    if (raw.length !== 4 && raw.length !== 13) continue;
    const name = raw.toLowerCase();
    if (name === 'host' || name === 'authorization' || name === 'dpop') (lines[name] ??= []).push(rawHeaders[i + 1] ?? '');
  }
  return lines;
}

/** What the pipeline reads of an HTTP/2 header list, gathered in one pass over `rawHeaders`. */
interface Http2HeaderFacts extends CheckedLines {
  /** Header fields other than pseudo-headers, and the header list's size (RFC 9113 §6.5.2). */
  count: number;
  bytes: number;
}

// One pass instead of one per field read: HTTP/2 field names arrive lower-case (RFC 9113 §8.2.1; nghttp2 refuses others).
function http2HeaderFacts(rawHeaders: readonly string[]): Http2HeaderFacts {
  const facts: Http2HeaderFacts = { count: 0, bytes: 0, host: undefined, authorization: undefined, dpop: undefined };
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i] ?? '';
    const value = rawHeaders[i + 1] ?? '';
    facts.bytes += name.length + value.length + 32;
    if (name.startsWith(':')) continue;
    facts.count++;
    if (name === 'authorization') (facts.authorization ??= []).push(value);
    else if (name === 'dpop') (facts.dpop ??= []).push(value);
    else if (name === 'host') (facts.host ??= []).push(value);
  }
  return facts;
}

/** HTTP/2: the `:authority` and any Host line must agree (RFC 9113 §8.3.1), so both count as Host lines. */
function http2HostLines(req: Http2ServerRequest, hosts: string[] | undefined): string[] | undefined {
  const authority = req.headers[':authority'];
  if (authority === undefined) return hosts;
  return hosts === undefined || hosts.every((host) => host === authority) ? [authority] : [authority, ...hosts];
}

/**
 * What the certificate source reads of a request. A header's lines are looked up only when read,
 * for a trusted proxy's certificate header: a class, so that the method is on its prototype, not
 * made with every request.
 */
class ConnectionOfRequest implements RequestConnection {
  readonly #req: ProxyRequest;
  readonly socket: TLSSocket | undefined;
  readonly peerAddress: string | undefined;

  constructor(req: ProxyRequest, connection: ConnectionFacts) {
    this.#req = req;
    this.socket = connection.tls;
    this.peerAddress = connection.peer;
  }

  headerLines(name: string): string[] | undefined {
    const req = this.#req;
    return isHttp2(req) ? linesOf(req.rawHeaders, name) : headerLinesOf(req)(name);
  }
}

/** The connection a request came on, as read when it started. */
export interface ConnectionFacts {
  readonly peer: string | undefined;
  /** The TLS socket (HTTP/1.1 and HTTP/2 alike), for the certificate; read only while the request starts. */
  readonly tls: TLSSocket | undefined;
  /** HTTP/1.1: the socket whose byte counters the access line reads; HTTP/2 streams have none of their own. */
  readonly counting: IncomingMessage['socket'] | undefined;
}

export function connectionOf(req: ProxyRequest): ConnectionFacts {
  if (isHttp2(req)) {
    try {
      const socket = req.stream.session?.socket as Partial<TLSSocket> | undefined;
      return { peer: socket?.remoteAddress, tls: socket?.encrypted === true ? (socket as TLSSocket) : undefined, counting: undefined };
    } catch {
      // The session went before its stream was handled: no connection left to read (the stream is closed too).
      return { peer: undefined, tls: undefined, counting: undefined };
    }
  }
  const socket = req.socket as Partial<TLSSocket>;
  return { peer: socket.remoteAddress, tls: socket.encrypted === true ? (socket as TLSSocket) : undefined, counting: req.socket };
}

export function requestFacts(req: ProxyRequest, certificates: CertificateSource, connection: ConnectionFacts = connectionOf(req)): RequestFacts {
  const h2 = isHttp2(req);
  const peer = connection.peer;
  let certificate;
  let certificateError;
  try {
    certificate = certificates.certificateOf(new ConnectionOfRequest(req, connection));
  } catch (err) {
    if (!(err instanceof GuardError)) throw err;
    certificateError = err;
  }
  const length = req.headers['content-length'];
  /** HTTP/1.1's Transfer-Encoding (HTTP/2 has none). */
  const coding = h2 ? undefined : req.headers['transfer-encoding'];
  const list = h2 ? http2HeaderFacts(req.rawHeaders) : undefined;
  const lines = list ?? checkedLines(req.rawHeaders);
  /** HTTP/1.1: every header's lines, looked up only if a signature check asks. */
  let everyLine: HeaderLines | undefined;
  return {
    method: req.method ?? 'GET',
    target: req.url ?? '/',
    hostLines: h2 ? http2HostLines(req, lines.host) : lines.host,
    headerCount: list?.count ?? req.rawHeaders.length / 2,
    ...(list !== undefined && { headerBytes: list.bytes }),
    authorization: lines.authorization,
    dpop: lines.dpop,
    // Read only by an HTTP message signature check (gRPC metadata is header fields too).
    fieldLines: h2 ? (name) => linesOf(req.rawHeaders, name) : (name) => (everyLine ??= headerLinesOf(req))(name),
    peer,
    certificate,
    certificateError,
    body: {
      declaredLength: length === undefined ? undefined : Number(length),
      chunked: length === undefined && (h2 ? !req.stream.endAfterHeaders : coding !== undefined),
      ...(coding !== undefined && { otherTransferCoding: coding.trim().toLowerCase() !== 'chunked' }),
      form: isFormContentType(req.headers['content-type']),
    },
  };
}

/** Who the access line says the request came from: the peer, and the client a trusted proxy names. */
export function originOf(req: ProxyRequest, connection: ConnectionFacts, certificates: CertificateSource): ExchangeOrigin {
  const xff = req.headers['x-forwarded-for'];
  return {
    method: req.method,
    target: req.url,
    client: connection.peer,
    forwardedFor: xff !== undefined && certificates.isTrustedProxy(connection.peer) ? forwardedClient(xff) : undefined,
  };
}

/** The Host the request names (HTTP/2: `:authority`), for public documents looked up before any check. */
export function authorityOf(req: ProxyRequest): string | undefined {
  return (req.headers[':authority'] as string | undefined) ?? req.headers.host;
}

/** The header block the upstream receives for an allowed request (upgrades keep their Upgrade). */
export function upstreamHeadersOf(req: ProxyRequest, verdict: Verdict, context: { requestId: string; peer: string | undefined; certificates: CertificateSource; stripped: ReadonlySet<string>; upgrade: boolean }): Record<string, string | string[]> {
  return upstreamHeaders(req.headers, {
    route: verdict.route,
    identityHeaders: verdict.identityHeaders ?? {},
    host: verdict.host,
    requestId: context.requestId,
    peer: context.peer,
    peerIsTrustedProxy: context.certificates.isTrustedProxy(context.peer),
    upgrade: context.upgrade,
    stripped: context.stripped,
  });
}
