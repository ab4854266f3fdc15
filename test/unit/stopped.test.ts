/**
 * How `run` ends after a signal (src/serve/stopped.ts), on fake timers: the stop's deadline, and the
 * exit when stdout does not take the last lines or something keeps the event loop alive. (The
 * whole process with a stdout nobody reads: test/e2e/operations.test.ts.)
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { endOnceStopped, LINGER_MS, LOG_DRAIN_MS, STOP_MARGIN_MS, stopWithin } from '../../src/serve/stopped.ts';

function recordingLogger() {
  const lines: { level: string; message: string; detail: Record<string, unknown> }[] = [];
  const at = (level: string) => (detail: Record<string, unknown>, message: string) => void lines.push({ level, message, detail });
  return { logger: { error: at('error'), warn: at('warn') } as never, lines };
}

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe('stopWithin', () => {
  it('is 0 once the stop settles, and its deadline is cleared', async () => {
    const { logger, lines } = recordingLogger();
    const code = stopWithin(() => Promise.resolve(), 1000, logger);
    await expect(code).resolves.toBe(0);
    expect(vi.getTimerCount()).toBe(0);
    expect(lines).toEqual([]);
  });

  it('is 1 when the stop fails, logged', async () => {
    const { logger, lines } = recordingLogger();
    await expect(stopWithin(() => Promise.reject(new Error('teardown broke')), 1000, logger)).resolves.toBe(1);
    expect(lines.map((l) => l.message)).toEqual(['shutdown failed']);
  });

  it('is 1 when the stop is still running STOP_MARGIN_MS after the grace period, naming what it waited on', async () => {
    const { logger, lines } = recordingLogger();
    let settled: number | undefined;
    void stopWithin(() => new Promise<void>(() => {}), 1000, logger).then((code) => (settled = code));
    await vi.advanceTimersByTimeAsync(1000 + STOP_MARGIN_MS - 1);
    expect(settled).toBeUndefined();
    await vi.advanceTimersByTimeAsync(1);
    expect(settled).toBe(1);
    expect(lines).toEqual([{ level: 'error', message: 'shutdown did not finish; exiting', detail: { graceMs: 1000, waitingOn: expect.any(Array) } }]);
  });
});

describe('endOnceStopped', () => {
  it('exits at once with the code when stdout does not take the last lines in LOG_DRAIN_MS', async () => {
    const { logger } = recordingLogger();
    const exit = vi.fn();
    const drain = vi.fn(() => Promise.resolve(false));
    await expect(endOnceStopped(logger, 0, exit, drain)).resolves.toBe(0);
    expect(drain).toHaveBeenCalledWith(LOG_DRAIN_MS);
    expect(exit).toHaveBeenCalledWith(0);
  });

  it('lets a drained process end by itself, and exits LINGER_MS later if it did not, naming what kept it', async () => {
    const { logger, lines } = recordingLogger();
    const exit = vi.fn();
    await expect(endOnceStopped(logger, 1, exit, () => Promise.resolve(true))).resolves.toBe(1);
    await vi.advanceTimersByTimeAsync(LINGER_MS - 1);
    expect(exit).not.toHaveBeenCalled();
    await vi.advanceTimersByTimeAsync(1);
    expect(exit).toHaveBeenCalledWith(1);
    expect(lines).toEqual([{ level: 'warn', message: 'stopped, but something keeps the process running; exiting', detail: { waitingOn: expect.any(Array) } }]);
  });
});
