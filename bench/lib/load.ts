/**
 * Keep-alive load with autocannon 9, which presents a client certificate through `tlsOptions`
 * (passed to tls.connect as is). autocannon's own latency histogram has 1 ms resolution, too coarse
 * for p99 comparisons of a few ms, so every 2xx response time (float ms, from process.hrtime) is
 * also kept in an exact sample buffer and percentiles are computed from it.
 */
// @ts-expect-error -- autocannon ships no type declarations; the small surface used is typed below.
import autocannon from 'autocannon';
import { cpuSecondsOf, systemBusySeconds } from './machine.ts';

interface AutocannonResult {
  requests: { total: number; average: number };
  duration: number;
  errors: number;
  timeouts: number;
  non2xx: number;
  statusCodeStats: Record<string, { count: number }>;
}

interface AutocannonInstance {
  on(event: 'response', listener: (client: unknown, statusCode: number, bytes: number, responseTimeMs: number) => void): void;
  stop(): void;
}

type AutocannonFn = (options: Record<string, unknown>, callback: (err: Error | null, result: AutocannonResult) => void) => AutocannonInstance;

export interface LoadOptions {
  url: string;
  token: string;
  cert: string;
  key: string;
  connections: number;
  /** Seconds; ignored when `amount` is set. */
  durationSeconds?: number;
  /** Total requests (quick mode). */
  amount?: number;
  path?: string;
  /** PIDs whose CPU time is reported as the server's. */
  serverPids?: () => number[];
  /** PIDs of other processes of the benchmark (the upstream), so their CPU is not counted as foreign. */
  sidePids?: () => number[];
  /** Requests per second in all, paced (autocannon's overallRate); undefined: closed loop, each connection as fast as it is answered. */
  rate?: number | undefined;
  /** Headers made afresh for each request (a DPoP proof), over the fixed ones; `authorization` among them replaces the Bearer one. */
  headersPerRequest?: () => Record<string, string>;
}

export interface LoadResult {
  requests: number;
  seconds: number;
  rps: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
  errors: number;
  timeouts: number;
  non2xx: number;
  statusCodes: Record<string, number>;
  /** CPU used by the server processes during the run, in % of one core. */
  serverCpuPct: number | undefined;
  /** The same, unrounded, in CPU seconds (for CPU per request). */
  serverCpuSeconds: number | undefined;
  /** CPU used by this process (the load generator) during the run, in % of one core. */
  loadgenCpuPct: number;
  /** CPU used by the upstream during the run, in % of one core (it shares the load generator's CPU). */
  upstreamCpuPct: number;
  /** CPU used by everything else on the machine (other users' work) during the run, in % of one core. */
  foreignCpuPct: number | undefined;
}

/** Percentile of a sorted sample (nearest rank). */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank] as number;
}

const MAX_SAMPLES = 4_000_000;

export async function runLoad(options: LoadOptions): Promise<LoadResult> {
  const samples = new Float64Array(MAX_SAMPLES);
  let count = 0;
  const pids = options.serverPids?.() ?? [];
  const sidePids = options.sidePids?.() ?? [];
  const serverCpuBefore = pids.length > 0 ? cpuSecondsOf(pids) : undefined;
  const sideCpuBefore = cpuSecondsOf(sidePids);
  const systemBefore = systemBusySeconds();
  const cpuBefore = process.cpuUsage();
  const wallBefore = performance.now();
  let lastResponseAt = wallBefore;
  const result = await new Promise<AutocannonResult>((resolve, reject) => {
    const instance = (autocannon as AutocannonFn)(
      {
        url: `${options.url}${options.path ?? '/bench'}`,
        connections: options.connections,
        pipelining: 1,
        ...(options.rate !== undefined && { overallRate: options.rate }),
        ...(options.amount !== undefined ? { amount: options.amount } : { duration: options.durationSeconds ?? 5 }),
        headers: { authorization: `Bearer ${options.token}` },
        ...(options.headersPerRequest !== undefined && {
          requests: [{ setupRequest: (req: { headers: Record<string, string> }) => ({ ...req, headers: { ...req.headers, ...options.headersPerRequest?.() } }) }],
        }),
        servername: 'localhost',
        tlsOptions: { cert: options.cert, key: options.key },
        timeout: 10,
        // autocannon ends a run at its next sample tick (1 s by default), after the last request or
        // the duration: a few hundred requests, or half a second, would wait most of a second each.
        ...((options.amount !== undefined || (options.durationSeconds ?? 5) < 2) && { sampleInt: 50 }),
        // Hard stop for a hung run (amount mode has no duration of its own).
        ...(options.amount !== undefined && { duration: 60 }),
      },
      (err, res) => (err ? reject(err) : resolve(res)),
    );
    instance.on('response', (_client, statusCode, _bytes, ms) => {
      lastResponseAt = performance.now();
      if (statusCode >= 200 && statusCode < 300 && count < MAX_SAMPLES) samples[count++] = ms;
    });
  });
  const cpu = process.cpuUsage(cpuBefore);
  const serverCpu = serverCpuBefore === undefined ? undefined : cpuSecondsOf(pids) - serverCpuBefore;
  const sideCpu = cpuSecondsOf(sidePids) - sideCpuBefore;
  const systemAfter = systemBusySeconds();
  const ownCpu = (serverCpu ?? 0) + sideCpu + (cpu.user + cpu.system) / 1e6;
  const foreign = systemBefore === undefined || systemAfter === undefined ? undefined : Math.max(0, systemAfter - systemBefore - ownCpu);
  const sorted = samples.subarray(0, count).sort();
  const statusCodes: Record<string, number> = {};
  for (const [code, { count: n }] of Object.entries(result.statusCodeStats ?? {})) statusCodes[code] = n;
  // From the start to the last response: autocannon's own duration is rounded to its 1 s ticks,
  // which in amount mode (a few hundred requests) would dominate.
  const seconds = Math.max(0.001, (lastResponseAt - wallBefore) / 1000);
  return {
    requests: result.requests.total,
    seconds: round(seconds, 2),
    // 2xx responses per second of the run.
    rps: Math.round(count / seconds),
    p50Ms: round(percentile(sorted, 50), 3),
    p90Ms: round(percentile(sorted, 90), 3),
    p99Ms: round(percentile(sorted, 99), 3),
    maxMs: round(percentile(sorted, 100), 3),
    errors: result.errors,
    timeouts: result.timeouts,
    non2xx: result.non2xx,
    statusCodes,
    serverCpuPct: serverCpu === undefined ? undefined : Math.round((serverCpu / seconds) * 100),
    serverCpuSeconds: serverCpu,
    loadgenCpuPct: Math.round(((cpu.user + cpu.system) / 1e6 / seconds) * 100),
    upstreamCpuPct: Math.round((sideCpu / seconds) * 100),
    foreignCpuPct: foreign === undefined ? undefined : Math.round((foreign / seconds) * 100),
  };
}

function round(n: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}
