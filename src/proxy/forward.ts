/**
 * Forwarding to the upstream with http-proxy-3 over a keep-alive agent: bodies stream both ways,
 * hop-by-hop headers are dropped, a refused upstream is 502 and a silent one 504.
 */
import http, { type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Duplex, Readable } from 'node:stream';
import { createProxyServer } from 'http-proxy-3';
import { GuardError } from '../oauth/errors.ts';

/** RFC 9110 §7.6.1 connection-specific fields, plus `expect` (Node already answered it). */
const HOP_BY_HOP = ['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'proxy-authorization', 'expect'];

/**
 * Removes hop-by-hop headers in place, including any the Connection header names. A websocket
 * upgrade keeps `Connection: upgrade` and `Upgrade`, which the upstream needs to switch.
 */
export function removeHopByHop(headers: IncomingHttpHeaders, keepUpgrade: boolean): void {
  const connection = headers.connection;
  if (connection !== undefined) {
    for (const name of connection.split(',')) {
      const token = name.trim().toLowerCase();
      if (token && token !== 'upgrade' && headers[token] !== undefined) delete headers[token];
    }
  }
  for (const name of HOP_BY_HOP) {
    if (keepUpgrade && (name === 'connection' || name === 'upgrade')) continue;
    // Only when present: a delete turns V8's header object into a slower dictionary.
    if (headers[name] !== undefined) delete headers[name];
  }
  if (keepUpgrade) headers.connection = 'upgrade';
}

/** X-Forwarded-For gets the peer appended; Proto and Host are set, not appended, since cnfguard is the TLS edge. */
export function setForwardedHeaders(headers: IncomingHttpHeaders, peerAddress: string | undefined): void {
  const prior = headers['x-forwarded-for'];
  if (peerAddress !== undefined) headers['x-forwarded-for'] = prior ? `${prior}, ${peerAddress}` : peerAddress;
  headers['x-forwarded-proto'] = 'https';
  if (headers.host !== undefined) headers['x-forwarded-host'] = headers.host;
}

export type ForwardFailure = GuardError;

export interface Forwarder {
  /** Streams the request to `target`; calls `onError` with 502/504 errors. `onResponse` fires at the response headers. */
  web(
    req: IncomingMessage,
    res: ServerResponse,
    target: URL,
    options: { body?: Readable; timeoutMs: number; signal?: AbortSignal; onResponse?: (status: number) => void; onError: (err: ForwardFailure) => void },
  ): void;
  ws(req: IncomingMessage, socket: Duplex, head: Buffer, target: URL, onError: (err: ForwardFailure) => void): void;
  close(): void;
}

class UpstreamTimeout extends Error {
  readonly code = 'UPSTREAM_TIMEOUT';
}

function failureOf(err: unknown): GuardError {
  const code = (err as { code?: string }).code;
  if (err instanceof UpstreamTimeout || code === 'ETIMEDOUT') return new GuardError('upstream_timeout', { detail: 'no response in time' });
  return new GuardError('upstream_unreachable', { detail: `upstream: ${code ?? (err as Error).message}` });
}

interface PendingForward {
  timeoutMs: number;
  signal: AbortSignal | undefined;
  onResponse: ((status: number) => void) | undefined;
}

/**
 * Per-request forwarding state lives on the request itself. A WeakMap side table would do too,
 * but V8's young-generation GC keeps WeakMap values alive, so every request's objects got
 * promoted: long scavenges and a p99 three times the bare forwarder's (bench/README.md).
 */
const PENDING = Symbol('cnfguard.forward');
type WithPending = IncomingMessage & { [PENDING]?: PendingForward };

export function createForwarder(): Forwarder {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 256, maxFreeSockets: 64, scheduling: 'lifo' });
  const proxy = createProxyServer({ agent, xfwd: false, ws: true });
  proxy.on('proxyReq', (proxyReq, req) => {
    const forward = (req as WithPending)[PENDING];
    if (forward === undefined) return;
    proxyReq.setTimeout(forward.timeoutMs, () => proxyReq.destroy(new UpstreamTimeout('upstream timeout')));
    forward.signal?.addEventListener('abort', () => proxyReq.destroy(), { once: true });
  });
  proxy.on('proxyRes', (proxyRes, req, res) => {
    // First, so the caller can still decide about the client connection (draining closes it).
    (req as WithPending)[PENDING]?.onResponse?.(proxyRes.statusCode ?? 0);
    // The upstream's Connection and Keep-Alive describe its hop, not the client's: drop them and
    // say what Node will really do with the client connection (it honours the client's `close`).
    if (proxyRes.statusCode !== 101) {
      removeHopByHop(proxyRes.headers, false);
      proxyRes.headers.connection = res.shouldKeepAlive ? 'keep-alive' : 'close';
    }
  });
  // Without a listener http-proxy-3 would throw on a client that went away mid-request.
  proxy.on('econnreset', () => {});

  return {
    web(req, res, target, options) {
      (req as WithPending)[PENDING] = { timeoutMs: options.timeoutMs, signal: options.signal, onResponse: options.onResponse };
      proxy.web(req, res, { target, ...(options.body !== undefined && { buffer: options.body }) }, (err) => options.onError(failureOf(err)));
    },
    ws(req, socket, head, target, onError) {
      proxy.ws(req, socket, head, { target }, (err) => onError(failureOf(err)));
    },
    close() {
      proxy.close();
      agent.destroy();
    },
  };
}
