/**
 * The per-request counters are counted ahead of prom-client (CounterTally) and added to it when
 * read: a scrape, `get()` or the workers' aggregation must read exactly what was counted.
 */
import { AggregatorRegistry } from 'prom-client';
import { expect, it } from 'vitest';
import { createMetrics } from '../../src/admin/metrics.ts';

function series(text: string, name: string): string[] {
  return text.split('\n').filter((line) => line.startsWith(`${name}{`));
}

it('a scrape reads every increment counted through the tallies, once, and the next scrape what came since', async () => {
  const metrics = createMetrics({ defaultMetrics: false });
  metrics.requests.inc({ decision: 'allow', reason: 'bound', route: 'api' }, 0);
  for (let i = 0; i < 3; i++) metrics.requestTally.inc('allow', 'bound', 'api');
  metrics.requestTally.inc('deny', 'cnf_mismatch', 'api');
  metrics.responseTally.inc('api', 200);
  metrics.responseTally.inc('api', 401);
  metrics.responseTally.inc('api', 200);
  metrics.verifiedTally.inc('api', 'dpop+mtls');
  const first = await metrics.registry.metrics();
  expect(series(first, 'cnfguard_requests_total')).toEqual(['cnfguard_requests_total{decision="allow",reason="bound",route="api"} 3', 'cnfguard_requests_total{decision="deny",reason="cnf_mismatch",route="api"} 1']);
  expect(series(first, 'cnfguard_responses_total')).toEqual(['cnfguard_responses_total{route="api",status="200"} 2', 'cnfguard_responses_total{route="api",status="401"} 1']);
  expect(series(first, 'cnfguard_verified_requests_total')).toEqual(['cnfguard_verified_requests_total{route="api",method="dpop+mtls"} 1']);
  metrics.cacheHitTally.inc('local');
  metrics.cacheHitTally.inc('local');
  metrics.validationTally.inc('introspection', 'ok');
  const hits = await metrics.registry.metrics();
  expect(series(hits, 'cnfguard_token_cache_hits_total')).toEqual(['cnfguard_token_cache_hits_total{tier="local"} 2']);
  expect(series(hits, 'cnfguard_token_validations_total')).toEqual(['cnfguard_token_validations_total{source="introspection",result="ok"} 1']);
  metrics.requestTally.inc('allow', 'bound', 'api');
  expect((await metrics.requests.get()).values.find((v) => v.labels.decision === 'allow')?.value).toBe(4);
  expect(series(await metrics.registry.metrics(), 'cnfguard_requests_total')[0]).toBe('cnfguard_requests_total{decision="allow",reason="bound",route="api"} 4');
});

it('the workers aggregation sums what each worker counted through its tallies', async () => {
  const workers = [createMetrics({ defaultMetrics: false }), createMetrics({ defaultMetrics: false })];
  workers[0]?.responseTally.inc('api', 200);
  workers[1]?.responseTally.inc('api', 200);
  workers[1]?.responseTally.inc('api', 200);
  const merged = AggregatorRegistry.aggregate(await Promise.all(workers.map((w) => w.registry.getMetricsAsJSON())));
  expect(series(await merged.metrics(), 'cnfguard_responses_total')).toEqual(['cnfguard_responses_total{route="api",status="200"} 3']);
});
