/**
 * Every limit at the edge, in one place: what Node enforces on the listener (handshake, header
 * bytes, timeouts, connections) and what the pipeline and the body reader enforce per request.
 * Defaults fit the shipped 256 Mi memory limit: an idle TLS connection costs about 62 KiB, so
 * 1024 connections take ~62 MiB, and buffered form bodies at most `bufferedBodyBytes` more.
 */
import { constants as h2constants, type SecureServerOptions, type ServerHttp2Session } from 'node:http2';
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
    // An HTTP/1.1 request without Host reaches the pipeline, which refuses it (400 host_malformed)
    // with its request id and access line; Node's own 400 had neither.
    requireHostHeader: false,
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
 * How far past `limits.headerBytes` / `headerCount` an HTTP/2 header list may go and still be
 * read, so that the pipeline answers it 431 (with its access line), as over HTTP/1.1; past it,
 * nghttp2 resets the stream (ENHANCE_YOUR_CALM). The hard bound on what a stream's headers cost.
 */
export const HTTP2_HEADER_HEADROOM = 2;

/**
 * HTTP/2 session limits, set explicitly and lower than Node's defaults where a sidecar needs less:
 * - concurrent streams and header list size (SETTINGS, HTTP2_HEADER_HEADROOM times the limits;
 *   nghttp2 applies the size only once the client acknowledged it): the pipeline measures each
 *   header list against the limits themselves and answers 431;
 * - rapid reset (CVE-2023-44487): {@link budgetSession} closes a session whose client cancels too
 *   many streams; nghttp2's own RST_STREAM bucket stays behind it as a backstop (a burst of 4x
 *   the concurrent streams, then 33 a second; Node: 1000/33), past which it sends GOAWAY;
 * - empty-frame floods: zero-length DATA frames count as invalid frames (Node: 1000);
 * - PING and SETTINGS floods: {@link budgetSession} counts them; nghttp2 also ends a session that
 *   makes it queue over 1000 ACKs at once (built in, no option). `maxSettings` bounds the entries
 *   of one SETTINGS frame, `maxOutstandingPings` only cnfguard's own pings;
 * - CONTINUATION floods: nghttp2 (1.61 and later) accepts at most 8 CONTINUATION frames per
 *   header block, and the header list is bounded by `maxHeaderListSize`.
 * Stream-level slowloris is the edge's per-stream deadline and the session idle timeout (serve/tls-server.ts).
 */
export function http2Options(limits: Limits): SecureServerOptions {
  return {
    settings: { maxConcurrentStreams: limits.http2MaxConcurrentStreams, maxHeaderListSize: HTTP2_HEADER_HEADROOM * limits.headerBytes, enablePush: false },
    // Pseudo-headers count as pairs too.
    maxHeaderListPairs: HTTP2_HEADER_HEADROOM * limits.headerCount + 8,
    maxSessionMemory: 16,
    maxSessionInvalidFrames: 100,
    maxSessionRejectedStreams: 100,
    streamResetBurst: Math.max(200, 4 * limits.http2MaxConcurrentStreams),
    streamResetRate: 33,
    maxOutstandingPings: 10,
    maxSettings: 32,
    peerMaxConcurrentStreams: limits.http2MaxConcurrentStreams,
  };
}

/** The window in which a session's cancelled streams and control frames are counted. */
export const SESSION_BUDGET_WINDOW_MS = 10_000;
/** PING and SETTINGS frames a client may send per window (a keep-alive needs a few per minute). */
export const CONTROL_FRAME_BUDGET = 100;

/** The budgets of one HTTP/2 session: how many of each a client may spend per window. */
export function sessionBudgets(limits: Limits): { cancelledStreams: number; controlFrames: number; windowMs: number } {
  return { cancelledStreams: 2 * limits.http2MaxConcurrentStreams, controlFrames: CONTROL_FRAME_BUDGET, windowMs: SESSION_BUDGET_WINDOW_MS };
}

/** A count in fixed windows: `spend()` says whether this one went past `budget` in the current window. */
export function windowCounter(budget: number, windowMs: number, now: () => number): { spend(): boolean } {
  let start = now();
  let count = 0;
  return {
    spend() {
      const t = now();
      if (t - start >= windowMs) {
        start = t;
        count = 0;
      }
      count++;
      return count > budget;
    },
  };
}

/**
 * Per-session budgets (as nginx and Envoy close a connection that resets too much): past
 * `2 x http2MaxConcurrentStreams` streams the client cancelled (RST_STREAM, or any close before
 * cnfguard's response ended) or past {@link CONTROL_FRAME_BUDGET} PING and SETTINGS frames
 * within {@link SESSION_BUDGET_WINDOW_MS}, the session gets GOAWAY(ENHANCE_YOUR_CALM) and is
 * closed at once: its streams end, and their upstream requests with them.
 */
export function budgetSession(session: ServerHttp2Session, limits: Limits, now: () => number = () => performance.now()): void {
  const budgets = sessionBudgets(limits);
  const cancelled = windowCounter(budgets.cancelledStreams, budgets.windowMs, now);
  const control = windowCounter(budgets.controlFrames, budgets.windowMs, now);
  const calm = (): void => {
    // GOAWAY with the code, then the socket ends; the error goes to the server's 'sessionError'.
    if (!session.destroyed) session.destroy(new Error('HTTP/2 session over its budget'), h2constants.NGHTTP2_ENHANCE_YOUR_CALM);
  };
  session.on('stream', (stream) => {
    // `on`: a stream closes once, and `once` would allocate a wrapper per stream.
    stream.on('close', () => {
      // A session that ends takes its streams with it: those are not the client's resets.
      if (session.destroyed || session.closed || !stream.aborted) return;
      if (cancelled.spend()) calm();
    });
  });
  session.on('ping', () => control.spend() && calm());
  session.on('remoteSettings', () => control.spend() && calm());
}

/**
 * A client that vanished without a FIN or an RST the session could read (its reset arrived while
 * nothing was being written: a response held by flow control, a dead path) leaves its streams
 * open, and their upstream calls with them. While a session has open streams it is pinged every
 * {@link livenessPingEveryMs}; a ping unanswered for `limits.http2PingTimeoutMs` destroys the
 * session, which cancels every stream's upstream call. The deadline is the ping's own timer, not a
 * later tick of the interval, so a vanished client is found within the interval plus the timeout.
 * An idle session costs nothing (the idle timeout covers it).
 */
export function watchLiveness(session: ServerHttp2Session, limits: Limits): void {
  let open = 0;
  let deadline: NodeJS.Timeout | undefined;
  session.on('stream', (stream) => {
    open++;
    stream.on('close', () => open--); // a stream closes once
  });
  const timer = setInterval(() => {
    if (session.destroyed || deadline !== undefined || open === 0) return;
    const unanswered = setTimeout(() => session.destroy(), limits.http2PingTimeoutMs);
    unanswered.unref();
    deadline = unanswered;
    try {
      session.ping((err) => {
        if (err !== null || deadline !== unanswered) return;
        clearTimeout(unanswered);
        deadline = undefined;
      });
    } catch {
      // A session that is closing takes no more pings; its own end comes with it, or the deadline's.
    }
  }, livenessPingEveryMs(limits));
  timer.unref();
  session.once('close', () => {
    clearInterval(timer);
    clearTimeout(deadline);
  });
}

/** How often a session with open streams is pinged: each second, or twice within a shorter timeout. */
export const livenessPingEveryMs = (limits: Pick<Limits, 'http2PingTimeoutMs'>): number => Math.min(1000, limits.http2PingTimeoutMs / 2);
