/**
 * Every limit at the edge, in one place: what Node enforces on the listener (handshake, header
 * bytes, timeouts, connections) and what the pipeline and the body reader enforce per request.
 * Defaults fit the shipped 256 Mi memory limit: an idle TLS connection costs about 62 KiB, so
 * 1024 connections take ~62 MiB, and buffered form bodies at most `bufferedBodyBytes` more.
 */
import type { SecureServerOptions } from 'node:http2';
import type { ServerOptions } from 'node:https';
import type { Settings } from '../config/schema.ts';
import type { PipelineLimits } from '../pipeline/pipeline.ts';

export type Limits = Settings['limits'];

/** Node-level options for the TLS listener. */
export function listenerOptions(limits: Limits): ServerOptions {
  return {
    // A TCP connection that has not finished its TLS handshake by then is dropped (Node: 120 s).
    handshakeTimeout: limits.handshakeTimeoutMs,
    // Node answers 431 itself past this many header bytes.
    maxHeaderSize: limits.headerBytes,
    // Slowloris: the headers, then the whole request, must arrive in time (408).
    headersTimeout: limits.headersTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    // How often those timeouts are checked (Node's default, 30 s, would let a slow client linger).
    connectionsCheckingInterval: Math.min(1000, limits.headersTimeoutMs),
    // Lenient parsing (obs-fold, bare LF, conflicting lengths) stays off: smuggling starts there.
    insecureHTTPParser: false,
  };
}

/** Limits the listener enforces as properties after creation. */
export function listenerProperties(limits: Limits): { maxConnections: number; maxHeadersCount: number } {
  // One header line over the limit is kept, so the pipeline can see the limit was passed (431).
  return { maxConnections: limits.maxConnections, maxHeadersCount: limits.headerCount + 1 };
}

/** Limits the pipeline checks per request. */
export function pipelineLimits(limits: Limits): PipelineLimits {
  return { urlBytes: limits.urlBytes, headerCount: limits.headerCount, headerBytes: limits.headerBytes, formBodyBytes: limits.formBodyBytes };
}

/**
 * HTTP/2 session limits, set explicitly and lower than Node's defaults where a sidecar needs less:
 * - concurrent streams and header list size (SETTINGS; nghttp2 applies the latter only once the
 *   client acknowledged it, so the pipeline measures each header list too);
 * - rapid reset (CVE-2023-44487): a burst of 200 RST_STREAMs, then 33 a second (Node: 1000/33),
 *   past which the session gets GOAWAY; refused streams;
 * - empty-frame floods: zero-length DATA frames count as invalid frames (Node: 1000);
 * - PING and SETTINGS floods: nghttp2 ends a session that makes it queue over 1000 ACKs (built
 *   in, no option); `maxSettings` bounds the entries of one SETTINGS frame, `maxOutstandingPings`
 *   only cnfguard's own pings.
 * Stream-level slowloris is the edge's per-stream deadline and the session idle timeout (tls/server.ts).
 */
export function http2Options(limits: Limits): SecureServerOptions {
  return {
    settings: { maxConcurrentStreams: limits.http2MaxConcurrentStreams, maxHeaderListSize: limits.headerBytes, enablePush: false },
    // Pseudo-headers count as pairs too.
    maxHeaderListPairs: limits.headerCount + 8,
    maxSessionMemory: 16,
    maxSessionInvalidFrames: 100,
    maxSessionRejectedStreams: 100,
    streamResetBurst: 200,
    streamResetRate: 33,
    maxOutstandingPings: 10,
    maxSettings: 32,
    peerMaxConcurrentStreams: limits.http2MaxConcurrentStreams,
  };
}
