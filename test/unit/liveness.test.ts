/**
 * The HTTP/2 liveness ping (limits.ts watchLiveness) on fake timers: a session whose client stopped
 * answering is destroyed the ping timeout after its ping went out, and never otherwise. The
 * chaos test (connection-chaos.test.ts) shows the same with real sockets; this pins the timing.
 */
import { EventEmitter } from 'node:events';
import type { ServerHttp2Session } from 'node:http2';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { livenessPingEveryMs, watchLiveness, type Limits } from '../../src/proxy/limits.ts';

/** A session with what watchLiveness uses: streams, ping, destroy, close. */
class FakeSession extends EventEmitter {
  destroyed = false;
  destroyedAt: number | undefined;
  pings: ((err: Error | null) => void)[] = [];
  ping(callback: (err: Error | null) => void): boolean {
    this.pings.push(callback);
    return true;
  }
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.destroyedAt = Date.now();
    this.emit('close');
  }
  /** A stream opens; the returned function closes it. */
  openStream(): () => void {
    const stream = new EventEmitter();
    this.emit('stream', stream);
    return () => stream.emit('close');
  }
}

function watched(timeoutMs: number): FakeSession {
  const session = new FakeSession();
  watchLiveness(session as unknown as ServerHttp2Session, { http2PingTimeoutMs: timeoutMs } as Limits);
  return session;
}

beforeEach(() => {
  vi.useFakeTimers({ now: 0 });
});
afterEach(() => {
  vi.useRealTimers();
});

describe('watchLiveness', () => {
  it.each([1500, 2500, 5000])('an unanswered ping (timeout %i ms) destroys the session exactly its timeout after it was sent', async (timeoutMs) => {
    const session = watched(timeoutMs);
    session.openStream();
    const every = livenessPingEveryMs({ http2PingTimeoutMs: timeoutMs });
    await vi.advanceTimersByTimeAsync(every);
    expect(session.pings).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(timeoutMs - 1);
    expect(session.destroyed).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    // Not at a later tick of the interval: with 2500 ms and pings each second, that would be 4000.
    expect(session.destroyedAt).toBe(every + timeoutMs);
  });

  it('answered pings keep a session with open streams alive, one ping in flight at a time', async () => {
    const session = watched(1500);
    session.openStream();
    for (let i = 0; i < 20; i++) {
      await vi.advanceTimersByTimeAsync(750);
      for (const answer of session.pings.splice(0)) answer(null);
    }
    expect(session.destroyed).toBe(false);
  });

  it('pings nobody while no stream is open; a session that closed is not destroyed later', async () => {
    const idle = watched(1500);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(idle.pings).toHaveLength(0);

    const closing = watched(1500);
    const close = closing.openStream();
    await vi.advanceTimersByTimeAsync(750);
    expect(closing.pings).toHaveLength(1);
    close();
    closing.emit('close');
    await vi.advanceTimersByTimeAsync(10_000);
    expect(closing.destroyedAt).toBeUndefined();
  });

  it('a ping that fails (the session is ending) still ends it by the deadline', async () => {
    const session = watched(1500);
    session.openStream();
    await vi.advanceTimersByTimeAsync(750);
    session.pings[0]?.(new Error('ERR_HTTP2_PING_CANCEL'));
    await vi.advanceTimersByTimeAsync(1500);
    expect(session.destroyedAt).toBe(2250);
  });
});
