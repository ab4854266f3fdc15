/**
 * The soak (bench/soak.ts) in short: 14 s of mixed traffic through a real cnfguard with one
 * authorization-server kill/restart and one upstream flap inside the window. The long run is
 * `npm run soak`; this keeps it from rotting and proves the same properties on a small scale.
 */
import { describe, expect, it } from 'vitest';
import { CATEGORIES, runSoak, type SoakSummary } from '../../bench/soak.ts';
import { findRedisServer } from '../fixtures/redis.ts';

describe('soak (short)', () => {
  it('lets nothing through wrongly, loses nothing valid outside the outages, and leaks no handles', async () => {
    const log: string[] = [];
    const summary: SoakSummary = await runSoak({
      seconds: 14,
      rate: 200,
      concurrency: 4,
      // The upstream goes down after the AS's recovery margin (introspection timeout + breaker +
      // 1 s), so that the recovery from the first outage can be seen on a loaded machine too.
      asOutages: { firstMs: 2_000, everyMs: 60_000, downMs: 2_000 },
      upstreamOutages: { firstMs: 9_000, everyMs: 60_000, downMs: 1_500 },
      log: (line) => log.push(line),
    });
    const context = JSON.stringify({ failures: summary.failures, samples: summary.samples, upstream: summary.upstream, outages: summary.outages, log }, null, 2);

    // The outages happened, once each, and ended inside the run.
    expect(summary.outages.map((w) => w.kind), context).toEqual(['authorization-server', 'upstream']);
    for (const w of summary.outages) expect(w.endAtS, context).toBeLessThan(14);
    expect(summary.authorizationServer.restarts).toBe(1);
    expect(summary.upstream.restarts).toBe(1);
    // ...and the traffic went on through them: every category was exercised, valid requests passed.
    for (const category of CATEGORIES) expect(summary.categories[category].count, category).toBeGreaterThan(20);
    expect(summary.totals.validOk).toBeGreaterThan(200);
    for (const w of summary.outages) expect(w.firstOkAfterEndMs, context).toBeDefined();

    expect(summary.totals.wronglyAllowed, context).toBe(0);
    expect(summary.upstream.violations, context).toBe(0);
    expect(summary.totals.lostValid, context).toBe(0);
    expect(summary.totals.unexpected, context).toBe(0);
    expect(summary.handles.leaked, context).toEqual({});
    expect(summary.passed, context).toBe(true);
  }, 45_000);
});

describe.skipIf(findRedisServer() === undefined)('soak (short) with shared state on a real redis-server', () => {
  it('the store killed and restarted under two replicas: valid requests keep passing through the outage, nothing is let through', async () => {
    const summary = await runSoak({
      seconds: 8,
      rate: 200,
      concurrency: 4,
      sharedState: true,
      storeOutages: { firstMs: 2_000, everyMs: 60_000, downMs: 2_000 },
      asOutages: { firstMs: 60_000, everyMs: 60_000, downMs: 1_000 },
      upstreamOutages: { firstMs: 60_000, everyMs: 60_000, downMs: 1_000 },
    });
    const context = JSON.stringify({ failures: summary.failures, samples: summary.samples, sharedState: summary.sharedState }, null, 2);
    expect(summary.sharedState?.restarts, context).toBe(1);
    expect(summary.sharedState?.validDuringStoreOutages, context).toBeGreaterThanOrEqual(5);
    expect(summary.sharedState?.validOkDuringStoreOutages, context).toBe(summary.sharedState?.validDuringStoreOutages);
    // Both replicas served, and the store was in use before and after its outage.
    expect(summary.sharedState?.replicaMetrics['cnfguard_requests_total{decision="allow",reason="bound",route="default"}'], context).toBeGreaterThanOrEqual(5);
    expect(summary.guard.metrics['cnfguard_shared_state_up'], context).toBe(1);
    expect(summary.totals.wronglyAllowed, context).toBe(0);
    expect(summary.totals.lostValid, context).toBe(0);
    expect(summary.passed, context).toBe(true);
  }, 45_000);
});

describe('soak (short): its checks catch a hole', () => {
  it('with binding report-only, the upstream itself reports the stolen and unbound tokens it received', async () => {
    const summary = await runSoak({
      seconds: 3,
      rate: 200,
      concurrency: 4,
      asOutages: { firstMs: 60_000, everyMs: 60_000, downMs: 1_000 },
      upstreamOutages: { firstMs: 60_000, everyMs: 60_000, downMs: 1_000 },
      guardOverrides: { binding: 'report-only' },
    });
    expect(summary.outages).toEqual([]);
    expect(summary.passed).toBe(false);
    expect(summary.checks.noWronglyAllowed).toBe(false);
    expect(summary.checks.noUpstreamViolations).toBe(false);
    for (const category of ['stolen_token', 'stolen_token_forged_headers', 'missing_certificate', 'unbound_token', 'untrusted_certificate'] as const) {
      expect(summary.categories[category].wronglyAllowed, category).toBeGreaterThan(0);
    }
    expect(summary.upstream.violationSamplesByCategory.join('\n')).toMatch(/x-auth-cert-thumbprint .* is not the client[12] certificate/);
    // Garbage and malformed tokens are refused whatever the binding mode.
    expect(summary.categories.garbage_token.wronglyAllowed).toBe(0);
    expect(summary.categories.malformed_authorization.wronglyAllowed).toBe(0);
    expect(summary.handles.leaked).toEqual({});
  }, 30_000);
});
