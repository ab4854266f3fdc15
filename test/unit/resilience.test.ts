import { describe, expect, it } from 'vitest';
import { withCircuitBreaker, type CircuitState } from '../../src/introspection/breaker.ts';
import { createIntrospectionBudget } from '../../src/introspection/budget.ts';
import { retryAfterSeconds } from '../../src/introspection/client.ts';
import { INACTIVE, type TokenInfo } from '../../src/introspection/token-info.ts';
import { GuardError } from '../../src/edge/render.ts';
import { createCachedIntrospector } from '../../src/introspection/cache.ts';

const ACTIVE: TokenInfo = { ...INACTIVE, active: true, clientId: 'app' };
const down = (retryAfterSeconds?: number) => new GuardError('introspection_unavailable', { detail: 'down', ...(retryAfterSeconds !== undefined && { retryAfterSeconds }) });

function scripted() {
  let t = 1_000_000;
  let failing = true;
  let calls = 0;
  let retryAfter: number | undefined;
  const states: CircuitState[] = [];
  const introspect = withCircuitBreaker(
    async () => {
      calls++;
      if (failing) throw down(retryAfter);
      return ACTIVE;
    },
    { failureThreshold: 3, openMs: 5000, now: () => t, onStateChange: (s) => states.push(s) },
  );
  return {
    introspect,
    states,
    calls: () => calls,
    advance: (ms: number) => (t += ms),
    heal: () => (failing = false),
    retryAfter: (s: number) => (retryAfter = s),
  };
}

describe('circuit breaker', () => {
  it('opens after the threshold, short-circuits with Retry-After, probes once, closes on success', async () => {
    const s = scripted();
    for (let i = 0; i < 3; i++) await expect(s.introspect('t')).rejects.toMatchObject({ reason: 'introspection_unavailable' });
    expect(s.states).toEqual(['open']);
    await expect(s.introspect('t')).rejects.toMatchObject({ retryAfterSeconds: 5, detail: 'circuit open: not calling the AS' });
    expect(s.calls()).toBe(3);
    s.advance(5000);
    s.heal();
    await expect(s.introspect('t')).resolves.toBe(ACTIVE);
    expect(s.states).toEqual(['open', 'half-open', 'closed']);
    expect(s.calls()).toBe(4);
  });

  it('a failed probe opens it again at once; only one probe runs at a time', async () => {
    const s = scripted();
    for (let i = 0; i < 3; i++) await s.introspect('t').catch(() => {});
    s.advance(5000);
    const [probe, second] = await Promise.allSettled([s.introspect('t'), s.introspect('t')]);
    expect(probe.status).toBe('rejected');
    expect((second as PromiseRejectedResult).reason).toMatchObject({ detail: 'circuit open: not calling the AS' });
    expect(s.calls()).toBe(4);
    expect(s.states).toEqual(['open', 'half-open', 'open']);
  });

  it("honours the AS's Retry-After when longer, capped at a minute", async () => {
    const s = scripted();
    s.retryAfter(3600);
    for (let i = 0; i < 3; i++) await s.introspect('t').catch(() => {});
    await expect(s.introspect('t')).rejects.toMatchObject({ retryAfterSeconds: 60 });
  });

  it('inactive tokens are answers, not failures', async () => {
    let calls = 0;
    const introspect = withCircuitBreaker(async () => (calls++, INACTIVE), { failureThreshold: 1, openMs: 5000 });
    for (let i = 0; i < 5; i++) await expect(introspect('t')).resolves.toBe(INACTIVE);
    expect(calls).toBe(5);
  });

  it.each([
    ['7', 7],
    [' 12 ', 12],
    ['Wed, 21 Oct 2015 07:28:10 GMT', 10],
    ['soon', undefined],
    [undefined, undefined],
  ])('Retry-After %j -> %j seconds', (value, expected) => {
    expect(retryAfterSeconds(value, Date.parse('Wed, 21 Oct 2015 07:28:00 GMT'))).toBe(expected);
  });
});

describe('stale-if-error', () => {
  function cache(staleIfErrorSeconds: number) {
    let t = 1_000_000;
    let failing = false;
    const tokens = createCachedIntrospector(
      async () => {
        if (failing) throw down();
        return ACTIVE;
      },
      { maxEntries: 10, maxTtlSeconds: 10, negativeTtlSeconds: 1, staleIfErrorSeconds, now: () => t },
    );
    return { tokens, advance: (ms: number) => (t += ms), fail: () => (failing = true) };
  }

  it('serves an expired active answer within the window while the AS fails, not after', async () => {
    const c = cache(30);
    await c.tokens.lookup('t');
    c.fail();
    c.advance(10_000 + 29_000);
    await expect(c.tokens.lookup('t')).resolves.toBe(ACTIVE);
    c.advance(2_000);
    await expect(c.tokens.lookup('t')).rejects.toMatchObject({ reason: 'introspection_unavailable' });
  });

  it('is off at 0', async () => {
    const c = cache(0);
    await c.tokens.lookup('t');
    c.fail();
    c.advance(10_001);
    await expect(c.tokens.lookup('t')).rejects.toMatchObject({ reason: 'introspection_unavailable' });
  });
});

describe('what the breaker counts', () => {
  it('the AS refusing cnfguard itself (introspection_misconfigured) never opens it', async () => {
    let calls = 0;
    const introspect = withCircuitBreaker(
      async () => {
        calls++;
        throw new GuardError('introspection_misconfigured', { detail: 'HTTP 401' });
      },
      { failureThreshold: 1, openMs: 5000 },
    );
    for (let i = 0; i < 5; i++) await expect(introspect('t')).rejects.toMatchObject({ reason: 'introspection_misconfigured' });
    expect(calls).toBe(5);
  });

  it('budget refusals never reach it: an over-budget lookup calls nothing', async () => {
    let calls = 0;
    const states: CircuitState[] = [];
    const introspect = withCircuitBreaker(async () => (calls++, INACTIVE), { failureThreshold: 1, openMs: 5000, onStateChange: (s) => states.push(s) });
    const tokens = createCachedIntrospector(introspect, {
      maxEntries: 10,
      maxTtlSeconds: 10,
      negativeTtlSeconds: 0,
      budget: createIntrospectionBudget({ perPeerPerSecond: 1, perPeerBurst: 1, totalPerSecond: 0, totalBurst: 1, now: () => 0 }),
    });
    await tokens.lookup('a', { peer: '192.0.2.1' });
    for (let i = 0; i < 5; i++) await expect(tokens.lookup(`b${i}`, { peer: '192.0.2.1' })).rejects.toMatchObject({ reason: 'introspection_rate_limited' });
    expect(calls).toBe(1);
    expect(states).toEqual([]);
  });
});
