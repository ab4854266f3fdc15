/**
 * Closed-loop load over HTTP/2 and gRPC, for the issue-15 figures (autocannon speaks HTTP/1.1
 * only): `sessions` mTLS h2 sessions with `streams` requests in flight on each (the same 32 in
 * flight as the HTTP/1.1 load by default), or `concurrency` grpc-js unary calls in flight on one
 * channel. Every 2xx response (gRPC: status OK) time is kept exactly; percentiles come from those.
 */
import http2 from 'node:http2';
import * as grpc from '@grpc/grpc-js';
import { percentile } from './load.ts';
import { cpuSecondsOf, systemBusySeconds } from './machine.ts';

export interface ClosedLoopResult {
  requests: number;
  ok: number;
  failures: number;
  seconds: number;
  rps: number;
  p50Ms: number;
  p99Ms: number;
  serverCpuPct: number | undefined;
  /** The server's CPU (user + system) per answered request, in µs. */
  serverCpuUsPerReq: number | undefined;
  loadgenCpuPct: number;
  /** The upstream's CPU (it shares the load generator's core). */
  upstreamCpuPct: number;
  foreignCpuPct: number | undefined;
}

/**
 * Runs `issue` with `inFlight` calls outstanding until `seconds` pass; `issue` resolves true on success.
 * With `ratePerSecond`, calls start no faster than that in all (each slot paced on its own), so
 * that servers compared see the same arrivals: CPU per request depends on how many requests each
 * turn of the event loop carries, which a closed loop on a shared machine lets swing 3x.
 */
async function closedLoop(inFlight: number, seconds: number, issue: (slot: number) => Promise<boolean>, pids: readonly number[], sidePids: readonly number[], ratePerSecond?: number): Promise<ClosedLoopResult> {
  const samples: number[] = [];
  let requests = 0;
  let failures = 0;
  const serverBefore = pids.length > 0 ? cpuSecondsOf(pids) : undefined;
  const sideBefore = cpuSecondsOf(sidePids);
  const systemBefore = systemBusySeconds();
  const cpuBefore = process.cpuUsage();
  const started = performance.now();
  const deadline = started + seconds * 1000;
  const period = ratePerSecond === undefined ? 0 : (inFlight * 1000) / ratePerSecond;
  const worker = async (slot: number) => {
    let due = started + (slot * period) / inFlight;
    while (performance.now() < deadline) {
      if (period > 0) {
        const wait = due - performance.now();
        if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
        // A slot that fell behind starts again from now rather than bursting to catch up.
        due = Math.max(due + period, performance.now());
      }
      const at = performance.now();
      requests++;
      if (await issue(slot).catch(() => false)) samples.push(performance.now() - at);
      else failures++;
    }
  };
  await Promise.all(Array.from({ length: inFlight }, (_, i) => worker(i)));
  const wall = (performance.now() - started) / 1000;
  const cpu = process.cpuUsage(cpuBefore);
  const serverCpu = serverBefore === undefined ? undefined : cpuSecondsOf(pids) - serverBefore;
  const sideCpu = cpuSecondsOf(sidePids) - sideBefore;
  const own = (serverCpu ?? 0) + sideCpu + (cpu.user + cpu.system) / 1e6;
  const systemAfter = systemBusySeconds();
  const foreign = systemBefore === undefined || systemAfter === undefined ? undefined : Math.max(0, systemAfter - systemBefore - own);
  samples.sort((a, b) => a - b);
  return {
    requests,
    ok: samples.length,
    failures,
    seconds: Math.round(wall * 100) / 100,
    rps: Math.round(samples.length / wall),
    p50Ms: Math.round(percentile(samples, 50) * 1000) / 1000,
    p99Ms: Math.round(percentile(samples, 99) * 1000) / 1000,
    serverCpuPct: serverCpu === undefined ? undefined : Math.round((serverCpu / wall) * 100),
    serverCpuUsPerReq: serverCpu === undefined || samples.length === 0 ? undefined : Math.round((serverCpu * 1e6) / samples.length),
    loadgenCpuPct: Math.round(((cpu.user + cpu.system) / 1e6 / wall) * 100),
    upstreamCpuPct: Math.round((sideCpu / wall) * 100),
    foreignCpuPct: foreign === undefined ? undefined : Math.round((foreign / wall) * 100),
  };
}

export interface H2LoadOptions {
  url: string;
  token: string;
  ca: string;
  cert: string;
  key: string;
  sessions: number;
  streams: number;
  seconds: number;
  /** Requests per second in all, paced (default: as fast as the server answers). */
  rate?: number | undefined;
  path?: string;
  serverPids?: () => number[];
  sidePids?: () => number[];
}

/** Cache-hit GETs over h2 with ALPN, a client certificate and a bearer token. */
export async function runH2Load(options: H2LoadOptions): Promise<ClosedLoopResult> {
  const sessions = await Promise.all(
    Array.from({ length: options.sessions }, async () => {
      const session = http2.connect(options.url, { ca: options.ca, cert: options.cert, key: options.key, servername: 'localhost', peerMaxConcurrentStreams: options.streams });
      session.on('error', () => {});
      await new Promise<void>((resolve, reject) => {
        session.once('connect', () => resolve());
        session.once('error', reject);
      });
      return session;
    }),
  );
  const headers = { ':method': 'GET', ':path': options.path ?? '/bench', authorization: `Bearer ${options.token}` };
  const issue = (slot: number) =>
    new Promise<boolean>((resolve) => {
      const stream = (sessions[slot % sessions.length] as http2.ClientHttp2Session).request(headers, { endStream: true });
      let status = 0;
      stream.on('response', (h) => (status = Number(h[':status'])));
      stream.on('error', () => resolve(false));
      stream.resume();
      stream.on('end', () => resolve(status >= 200 && status < 300));
    });
  try {
    return await closedLoop(options.sessions * options.streams, options.seconds, issue, options.serverPids?.() ?? [], options.sidePids?.() ?? [], options.rate);
  } finally {
    for (const session of sessions) session.destroy();
  }
}

/** The benchmark's gRPC method, JSON in Buffers (no .proto). */
export const BENCH_METHOD = {
  path: '/bench.Echo/Echo',
  requestStream: false,
  responseStream: false,
  requestSerialize: (value: unknown) => Buffer.from(JSON.stringify(value)),
  requestDeserialize: (bytes: Buffer) => JSON.parse(bytes.toString()) as unknown,
  responseSerialize: (value: unknown) => Buffer.from(JSON.stringify(value)),
  responseDeserialize: (bytes: Buffer) => JSON.parse(bytes.toString()) as unknown,
} satisfies grpc.MethodDefinition<unknown, unknown>;

export interface GrpcLoadOptions {
  /** host:port */
  address: string;
  /** mTLS with a bearer token (through cnfguard), or plaintext h2c (direct to the upstream). */
  tls?: { ca: string; cert: string; key: string; token: string };
  concurrency: number;
  seconds: number;
  serverPids?: () => number[];
  sidePids?: () => number[];
}

/** Unary calls with grpc-js on one channel (grpc-js multiplexes them over one h2 session). */
export async function runGrpcLoad(options: GrpcLoadOptions): Promise<ClosedLoopResult> {
  const credentials = options.tls === undefined ? grpc.credentials.createInsecure() : grpc.credentials.createSsl(Buffer.from(options.tls.ca), Buffer.from(options.tls.key), Buffer.from(options.tls.cert));
  const client = new grpc.Client(options.address, credentials, { 'grpc.ssl_target_name_override': 'localhost', 'grpc.default_authority': 'localhost' });
  const metadata = new grpc.Metadata();
  if (options.tls !== undefined) metadata.set('authorization', `Bearer ${options.tls.token}`);
  const request = { text: 'bench' };
  const issue = () =>
    new Promise<boolean>((resolve) => {
      client.makeUnaryRequest(BENCH_METHOD.path, BENCH_METHOD.requestSerialize, BENCH_METHOD.responseDeserialize, request, metadata, (err) => resolve(err === null));
    });
  try {
    // One call first, so that the channel is connected before the clock starts.
    if (!(await issue())) throw new Error(`gRPC bench: the first call to ${options.address} failed`);
    return await closedLoop(options.concurrency, options.seconds, issue, options.serverPids?.() ?? [], options.sidePids?.() ?? []);
  } finally {
    client.close();
  }
}
