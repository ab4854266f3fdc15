/**
 * What both ways of forwarding share (undici for HTTP/1.1 upstreams, node:http2 for
 * `upstreamHttp2`): the options, the hop-by-hop rules of the upstream's answer, how it is written
 * to the client, and when a client that went away cancels the upstream call.
 */
import type { OutgoingHttpHeaders } from 'node:http';
import type { Readable } from 'node:stream';
import { GuardError } from '../oauth/reasons.ts';
import { connectionOptions, HOP_BY_HOP } from '../pipeline/upstream-headers.ts';
import type { ProxyRequest, ProxyResponse } from './messages.ts';
import { trailersMayFollow, writeHead } from './response-head.ts';

/**
 * A response's headers without its hop-by-hop fields, including any its Connection header names
 * (the upstream's Connection and Keep-Alive describe its hop, not the client's), and without an
 * HTTP/2 upstream's pseudo-headers (`:status` is passed on its own). A new object rather
 * than deletes: a delete turns V8's header object into a slower dictionary, which every later
 * read (Node's header validation, the HTTP/2 header block) pays for.
 */
export function withoutHopByHop(headers: Record<string, string | string[] | undefined>): Record<string, string | string[]> {
  const connection = headers.connection;
  const named = connectionOptions(Array.isArray(connection) ? connection.join(',') : connection);
  const out: Record<string, string | string[]> = {};
  for (const name in headers) {
    const value = headers[name];
    if (value === undefined || HOP_BY_HOP.has(name) || named?.has(name) === true || name.startsWith(':')) continue;
    out[name] = value;
  }
  return out;
}

export interface WebForwardOptions {
  /** The header block for the upstream (upstream-headers.ts). */
  headers: Record<string, string | string[]>;
  /** The path and query to request from the upstream, below the route's upstream path. */
  target: string;
  /** The request body to send instead of `req` (a buffered form, or a size-limited stream). */
  body?: Readable;
  /** The request trailers to relay, asked once the body has been sent (HTTP/2 upstreams only). */
  requestTrailers?: () => Record<string, string | string[]>;
  /** Speak HTTP/2 to the upstream (`upstreamHttp2`): h2c for http://, h2 for https://. */
  upstreamHttp2?: boolean;
  /** No response headers, or no body byte, for this long: 504 (or a cut connection once the answer started). */
  timeoutMs: number;
  /**
   * Aborted when the client's request is over on cnfguard's side (its response closed, its stream
   * reset, its deadline passed): the upstream request is cut at once, or never sent.
   */
  signal?: AbortSignal;
  /**
   * cnfguard's own answer headers (request id, DPoP nonce), joined to the upstream's where it did
   * not send the same name. Given here rather than set on the response beforehand: a response with
   * headers set ahead makes Node merge the upstream's one by one (`setHeader` each), ~3 µs a request.
   */
  answerHeaders?: Readonly<Record<string, string>>;
  /** At the response headers, before they are written (the caller may still decide about the connection). */
  onResponse?: (status: number) => void;
  onError: (err: GuardError) => void;
}

const TIMEOUT_CODES = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT', 'ETIMEDOUT']);

export function failureOf(err: unknown): GuardError {
  const code = (err as { code?: string }).code ?? (err as { cause?: { code?: string } }).cause?.code;
  if (code !== undefined && TIMEOUT_CODES.has(code)) return new GuardError('upstream_timeout', { detail: 'no response in time' });
  return new GuardError('upstream_unreachable', { detail: `upstream: ${code ?? (err as Error).message}` });
}

/** Whether the client request carries a body to stream (GET and friends usually do not). */
export function hasBody(req: ProxyRequest): boolean {
  const length = req.headers['content-length'];
  return length !== undefined && length !== '0';
}

/**
 * Status and headers of the upstream's answer, written for the client's protocol. Returns whether
 * the answer's end is its last body chunk: an HTTP/2 answer begun without waiting for trailers
 * (response-head.ts), whose END_STREAM rides with that chunk when `end(chunk)` writes it.
 * `endsAtHead`: the (HTTP/2) upstream's answer ended with its headers; so does the client's.
 */
export function writeResponseHead(res: ProxyResponse, status: number, statusMessage: string, upstreamHeaders: Record<string, string | string[] | undefined>, answerHeaders: Readonly<Record<string, string>> | undefined, upstreamHttp2: boolean, endsAtHead = false): boolean {
  // The upstream's Connection and Keep-Alive describe its hop, not the client's: drop them.
  const headers = withoutHopByHop(upstreamHeaders);
  if (answerHeaders !== undefined) for (const name in answerHeaders) headers[name] ??= answerHeaders[name] as string;
  if ('shouldKeepAlive' in res) {
    // Say what Node will really do with the client connection (it honours `close`).
    headers.connection = res.shouldKeepAlive ? 'keep-alive' : 'close';
    res.writeHead(status, statusMessage, headers);
    return false;
  }
  const trailers = trailersMayFollow(res.req.headers.te, upstreamHeaders, upstreamHttp2);
  writeHead(res, status, headers as OutgoingHttpHeaders, trailers, endsAtHead);
  return !trailers;
}

/**
 * Writes an upstream answer's body to the client, pausing the upstream while the client takes no
 * more. When the answer ends with its last chunk (writeResponseHead) and declared its length, the
 * chunk that completes the length ends it, so its END_STREAM rides with it rather than in a DATA
 * frame of its own when the upstream's end comes (a tick later for an HTTP/2 upstream).
 */
export class BodyRelay {
  readonly #res: ProxyResponse;
  readonly #pause: () => void;
  readonly #resume: () => void;
  readonly #stall: { ms: number; onStall: (err: GuardError) => void } | undefined;
  /** Bytes of the declared length still to come, when the answer ends with its last chunk. */
  #unwritten: number | undefined;
  /** The stall timer of the pause in progress; one 'close' listener per answer clears it. */
  #stallTimer: NodeJS.Timeout | undefined;
  #watchingClose = false;

  /**
   * `pause` and `resume` the upstream's body (its reads resume on the client's 'drain'). `stall`:
   * a client that takes nothing for `ms` (HTTP/2 flow control at zero, a full TCP window) while
   * the upstream waits on it would hold the upstream connection for as long as it keeps its own
   * connection alive; then `onStall` is told, with the failure to end the exchange on.
   */
  constructor(res: ProxyResponse, pause: () => void, resume: () => void, stall?: { ms: number; onStall: (err: GuardError) => void }) {
    this.#res = res;
    this.#pause = pause;
    this.#resume = resume;
    this.#stall = stall;
  }

  head(endsWithBody: boolean, contentLength: string | string[] | undefined): void {
    const length = Number(contentLength);
    if (endsWithBody && Number.isSafeInteger(length) && length > 0) this.#unwritten = length;
  }

  /** Writes one chunk; true when it completed the answer, which it then ended. */
  write(chunk: Buffer): boolean {
    if (this.#unwritten !== undefined && (this.#unwritten -= chunk.length) === 0) {
      this.#res.end(chunk);
      return true;
    }
    if (!(this.#res as { write(chunk: Buffer): boolean }).write(chunk)) {
      this.#pause();
      const stall = this.#stall;
      if (stall === undefined) {
        this.#res.once('drain', this.#resume);
        return false;
      }
      const timer = setTimeout(() => stall.onStall(new GuardError('client_aborted', { detail: `the client took none of the answer for ${stall.ms} ms` })), stall.ms);
      timer.unref();
      this.#stallTimer = timer;
      this.#res.once('drain', () => {
        clearTimeout(timer);
        this.#resume();
      });
      // Not a listener per pause: a large answer to a slow client pauses many times.
      if (!this.#watchingClose) {
        this.#watchingClose = true;
        this.#res.once('close', () => clearTimeout(this.#stallTimer));
      }
    }
    return false;
  }
}

/** Trailers reach an HTTP/2 client (gRPC status); an HTTP/1.1 answer ends without them. */
export function endResponse(res: ProxyResponse, trailers: Record<string, string | string[] | undefined> | null | undefined): void {
  if (trailers != null && !('shouldKeepAlive' in res) && Object.keys(trailers).length > 0) res.addTrailers(trailers as OutgoingHttpHeaders);
  res.end();
}

/**
 * Calls `cancel` once, when the client's side ends before the upstream's answer did: `signal`
 * aborts, or the response closes (HTTP/2 ends a reset stream's writable side itself, so
 * `writableFinished` cannot tell a reset from a finished answer; the forwarder's own `ended` can).
 * Returns false when the client's side is over already: the upstream request must not start.
 */
export function onClientGone(res: ProxyResponse, signal: AbortSignal | undefined, ended: () => boolean, cancel: () => void): boolean {
  if (signal?.aborted === true) return false;
  let done = false;
  const gone = (): void => {
    if (done || ended()) return;
    done = true;
    cancel();
  };
  signal?.addEventListener('abort', gone, { once: true });
  res.on('close', gone); // closes once; `gone` guards itself, and `once` would allocate a wrapper per request
  return true;
}
