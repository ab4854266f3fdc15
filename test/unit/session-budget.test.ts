/**
 * The per-session HTTP/2 budgets (src/proxy/limits.ts): counts in fixed windows on an injected
 * clock, and their sizes from the limits.
 */
import { describe, expect, it } from 'vitest';
import { CONTROL_FRAME_BUDGET, SESSION_BUDGET_WINDOW_MS, sessionBudgets, windowCounter } from '../../src/proxy/limits.ts';

describe('windowCounter', () => {
  it('is over its budget at the first spend past it within one window, and starts again in the next', () => {
    let t = 0;
    const counter = windowCounter(3, 1000, () => t);
    expect([counter.spend(), counter.spend(), counter.spend()]).toEqual([false, false, false]);
    expect(counter.spend()).toBe(true);
    t = 999;
    expect(counter.spend()).toBe(true);
    t = 1000;
    expect([counter.spend(), counter.spend(), counter.spend(), counter.spend()]).toEqual([false, false, false, true]);
  });
});

describe('sessionBudgets', () => {
  it('allows twice the concurrent streams in cancelled streams, and a fixed count of control frames, per window', () => {
    const limits = { http2MaxConcurrentStreams: 100 } as Parameters<typeof sessionBudgets>[0];
    expect(sessionBudgets(limits)).toEqual({ cancelledStreams: 200, controlFrames: CONTROL_FRAME_BUDGET, windowMs: SESSION_BUDGET_WINDOW_MS });
  });
});
