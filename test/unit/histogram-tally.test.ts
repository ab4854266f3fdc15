/**
 * The per-request histograms are observed ahead of prom-client (HistogramTally) and added to it
 * when read: a scrape, `get()` or the workers' aggregation must read exactly what a plain
 * prom-client histogram fed the same observations reads.
 */
import { AggregatorRegistry, Histogram, Registry } from 'prom-client';
import { expect, it } from 'vitest';
import { HistogramTally } from '../../src/admin/histogram-tally.ts';
import { createMetrics } from '../../src/admin/metrics.ts';

const BUCKETS = [0.001, 0.005, 0.01, 0.5, 30];

function pair() {
  const tallied = new Registry();
  const plain = new Registry();
  const config = { name: 'h_seconds', help: 'h', buckets: BUCKETS };
  const tally = new HistogramTally({ ...config, registers: [tallied] });
  const histogram = new Histogram({ ...config, labelNames: ['route'] as const, registers: [plain] });
  const observe = (route: string, seconds: number) => {
    tally.observe(route, seconds);
    histogram.observe({ route }, seconds);
  };
  return { tallied, plain, observe };
}

it('a scrape reads what a prom-client histogram fed the same observations reads: buckets, bounds, +Inf, sum, count, per route', async () => {
  const { tallied, plain, observe } = pair();
  // On a bound, between bounds, below the first, above the last (only +Inf), two routes.
  for (const seconds of [0.001, 0.0007, 0.003, 0.005, 0.2, 0.5, 31, 120]) observe('api', seconds);
  observe('admin', 0.004);
  const first = await tallied.metrics();
  expect(first).toBe(await plain.metrics());
  expect(first).toContain('h_seconds_bucket{le="+Inf",route="api"} 8');
  expect(first).toContain('h_seconds_bucket{le="0.005",route="api"} 4');
  // What came since the last read is added once, not twice.
  observe('api', 0.002);
  observe('other', 40);
  expect(await tallied.metrics()).toBe(await plain.metrics());
  expect(await tallied.metrics()).toBe(await plain.metrics());
  expect((await tallied.getMetricsAsJSON())[0]).toEqual((await plain.getMetricsAsJSON())[0]);
});

it('after a reset the histogram counts from zero again', async () => {
  const { tallied, plain, observe } = pair();
  observe('api', 0.002);
  await tallied.metrics();
  tallied.resetMetrics();
  plain.resetMetrics();
  observe('api', 0.3);
  expect(await tallied.metrics()).toBe(await plain.metrics());
  expect(await tallied.metrics()).toContain('h_seconds_count{route="api"} 1');
});

it("the workers aggregation sums what each worker's request and upstream durations observed", async () => {
  const workers = [createMetrics({ defaultMetrics: false }), createMetrics({ defaultMetrics: false })];
  workers[0]?.requestDuration.observe('api', 0.002);
  workers[1]?.requestDuration.observe('api', 0.002);
  workers[1]?.requestDuration.observe('api', 3);
  workers[1]?.upstreamDuration.observe('api', 0.02);
  const merged = await AggregatorRegistry.aggregate(await Promise.all(workers.map((w) => w.registry.getMetricsAsJSON()))).metrics();
  expect(merged).toContain('cnfguard_request_duration_seconds_bucket{le="0.0025",route="api"} 2');
  expect(merged).toContain('cnfguard_request_duration_seconds_count{route="api"} 3');
  expect(merged).toContain('cnfguard_upstream_duration_seconds_bucket{le="0.025",route="api"} 1');
});
