/**
 * Cache-miss cost: requests one after another on one keep-alive mTLS connection, each with a token
 * cnfguard has never seen, against the same sequence with one cached token (the hit path) and the
 * authorization server's own introspection round trip measured directly. AS calls are counted at
 * the AS (every POST to its introspection endpoint) and cross-checked in cnfguard's metrics.
 */
import { Client, request } from 'undici';
import { percentile } from './load.ts';

export interface LatencySummary {
  requests: number;
  p50Ms: number;
  p99Ms: number;
  meanMs: number;
}

export interface CacheMissResult {
  miss: LatencySummary & { failures: number };
  hit: LatencySummary;
  /** POST /introspection from the orchestrator straight to the AS, same credentials as cnfguard. */
  asRoundTrip: LatencySummary;
  asCalls: number;
  asCallsPerRequest: number;
  /** From cnfguard's /metrics: misses and introspection calls during the miss run. */
  guardCacheMisses: number | undefined;
  guardIntrospections: number | undefined;
  /** Mean of cnfguard's own cnfguard_introspection_duration_seconds during the miss run, in ms. */
  guardIntrospectionMeanMs: number | undefined;
}

export interface CacheMissOptions {
  guardUrl: string;
  adminUrl: string;
  tokens: readonly string[];
  hitToken: string;
  cert: string;
  key: string;
  asIntrospectionUrl: string;
  asCa: string;
  asCredentials: { clientId: string; clientSecret: string };
  asCalls: () => number;
}

function summarize(ms: number[]): LatencySummary {
  const sorted = [...ms].sort((a, b) => a - b);
  const mean = sorted.reduce((a, b) => a + b, 0) / Math.max(1, sorted.length);
  return { requests: sorted.length, p50Ms: round(percentile(sorted, 50)), p99Ms: round(percentile(sorted, 99)), meanMs: round(mean) };
}

function round(n: number): number {
  return Math.round(n * 1000) / 1000;
}

/** Sum of every sample of a metric family in Prometheus text format. */
export async function scrapeCounter(adminUrl: string, name: string): Promise<number | undefined> {
  try {
    const res = await request(`${adminUrl}/metrics`);
    const text = await res.body.text();
    let total = 0;
    let seen = false;
    for (const line of text.split('\n')) {
      if (line.startsWith(name) && (line[name.length] === ' ' || line[name.length] === '{')) {
        total += Number(line.slice(line.lastIndexOf(' ') + 1));
        seen = true;
      }
    }
    return seen ? total : undefined;
  } catch {
    return undefined;
  }
}

export async function runCacheMiss(options: CacheMissOptions): Promise<CacheMissResult> {
  const client = new Client(options.guardUrl, {
    connect: { cert: options.cert, key: options.key, rejectUnauthorized: false, servername: 'localhost' },
    pipelining: 1,
  });
  const get = async (token: string): Promise<{ ok: boolean; ms: number }> => {
    const started = performance.now();
    const res = await client.request({ path: '/bench', method: 'GET', headers: { authorization: `Bearer ${token}` } });
    await res.body.dump();
    return { ok: res.statusCode === 200, ms: performance.now() - started };
  };
  try {
    // Warm the connection and the hit token.
    for (let i = 0; i < 20; i++) await get(options.hitToken);
    const hits: number[] = [];
    for (let i = 0; i < options.tokens.length; i++) hits.push((await get(options.hitToken)).ms);

    const missesBefore = await scrapeCounter(options.adminUrl, 'cnfguard_token_cache_misses_total');
    const introspectionsBefore = await scrapeCounter(options.adminUrl, 'cnfguard_introspection_requests_total');
    const durationSumBefore = await scrapeCounter(options.adminUrl, 'cnfguard_introspection_duration_seconds_sum');
    const durationCountBefore = await scrapeCounter(options.adminUrl, 'cnfguard_introspection_duration_seconds_count');
    const callsBefore = options.asCalls();
    const misses: number[] = [];
    let failures = 0;
    for (const token of options.tokens) {
      const { ok, ms } = await get(token);
      if (ok) misses.push(ms);
      else failures += 1;
    }
    const asCalls = options.asCalls() - callsBefore;
    const missesAfter = await scrapeCounter(options.adminUrl, 'cnfguard_token_cache_misses_total');
    const introspectionsAfter = await scrapeCounter(options.adminUrl, 'cnfguard_introspection_requests_total');
    const durationSumAfter = await scrapeCounter(options.adminUrl, 'cnfguard_introspection_duration_seconds_sum');
    const durationCountAfter = await scrapeCounter(options.adminUrl, 'cnfguard_introspection_duration_seconds_count');
    const introspectionMeanMs =
      durationSumBefore === undefined || durationSumAfter === undefined || durationCountBefore === undefined || durationCountAfter === undefined || durationCountAfter === durationCountBefore
        ? undefined
        : round(((durationSumAfter - durationSumBefore) / (durationCountAfter - durationCountBefore)) * 1000);

    // The AS alone: the same introspection call cnfguard makes, on a keep-alive connection.
    const asClient = new Client(new URL(options.asIntrospectionUrl).origin, { connect: { ca: options.asCa } });
    const authorization = `Basic ${Buffer.from(`${options.asCredentials.clientId}:${options.asCredentials.clientSecret}`).toString('base64')}`;
    const asTimes: number[] = [];
    try {
      const path = new URL(options.asIntrospectionUrl).pathname;
      for (let i = 0; i < options.tokens.length + 10; i++) {
        const token = options.tokens[i % options.tokens.length] as string;
        const started = performance.now();
        const res = await asClient.request({
          path,
          method: 'POST',
          headers: { authorization, 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
          body: new URLSearchParams({ token, token_type_hint: 'access_token' }).toString(),
        });
        await res.body.dump();
        if (i >= 10) asTimes.push(performance.now() - started);
      }
    } finally {
      await asClient.close();
    }
    const requests = options.tokens.length;
    return {
      miss: { ...summarize(misses), failures },
      hit: summarize(hits),
      asRoundTrip: summarize(asTimes),
      asCalls,
      asCallsPerRequest: Math.round((asCalls / requests) * 1000) / 1000,
      guardCacheMisses: missesBefore === undefined || missesAfter === undefined ? undefined : missesAfter - missesBefore,
      guardIntrospections: introspectionsBefore === undefined || introspectionsAfter === undefined ? undefined : introspectionsAfter - introspectionsBefore,
      guardIntrospectionMeanMs: introspectionMeanMs,
    };
  } finally {
    await client.close();
  }
}
