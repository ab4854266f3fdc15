/**
 * Connection chaos (issue 26): clients that drop, reset or stall at every phase of an exchange,
 * over HTTP/1.1, HTTP/2, gRPC and the decision API (its TCP port and its Unix socket,
 * `decisionApi.socket`), many at once, with made-up and valid bound
 * tokens, against cnfguard running as a real process (`node cmd/cnfguard.ts run`).
 *
 * What must hold:
 * - the process never exits, and answers control requests on every edge afterwards;
 * - no upstream request outlives its client by more than {@link OUTLIVE_BOUND_MS} (the upstream
 *   timeout is 30 s: an abort that waits for it is caught); a stalled client "goes" when the run
 *   closes it, a stream reset on a live session at its RST_STREAM;
 * - memory, after a full GC (the V8 heap in use plus external memory, where Buffers live), returns
 *   to within {@link MEMORY_MARGIN_BYTES} of its level after a warm-up round of the same traffic.
 *
 * The servers around it are test/fixtures/chaos-servers.ts, the clients chaos-clients.ts.
 */
import http from 'node:http';
import http2 from 'node:http2';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { play, type Action, type ChaosEvent, type ChaosTarget, type Phase, type Played, type Protocol, type TokenKind } from '../fixtures/chaos-clients.ts';
import { grpcFrame, Signals, startChaosAs, startGrpcUpstream, startHttp1Upstream, type ChaosAs, type ChaosUpstream } from '../fixtures/chaos-servers.ts';
import { startGuardProcess, type GuardProcess, type Memory } from '../fixtures/guard-process.ts';
import { freePort } from '../fixtures/processes.ts';
import { livenessPingEveryMs } from '../../src/proxy/limits.ts';
import { createPki, curl, type Pki } from '../fixtures/stack.ts';

const REPEATS = 3;
const CONCURRENCY = 50;
/**
 * How long an upstream request may stay open after its client went. An HTTP/2 client that vanished
 * unseen is found by the session's liveness ping: sent within an interval, unanswered for its
 * timeout (limits.ts; test/unit/liveness.test.ts pins that timing), then 1.5 s for the rest on a
 * loaded 2-core machine.
 */
const PING_TIMEOUT_MS = 1500;
const OUTLIVE_BOUND_MS = livenessPingEveryMs({ http2PingTimeoutMs: PING_TIMEOUT_MS }) + PING_TIMEOUT_MS + 1500;
/** How far above its warmed-up level heap used + external may be after the run (after a full GC each time). */
const MEMORY_MARGIN_BYTES = 4 * 1024 * 1024;
const SLOW_AS_MS = 400;
const EVENT_DEADLINE_MS = 10_000;
const MAX_RESTARTS = 8;
const VALID = 'valid-chaos';
const CONTROLS_OK = { 'HTTP/1.1': 200, 'HTTP/2': 200, gRPC: '0', 'decision API': 200, 'decision API socket': 200 };

let pki: Pki;
let as: ChaosAs;
let h1: ChaosUpstream;
let grpc: ChaosUpstream;
let guard: GuardProcess;
let target: ChaosTarget;
const signals = new Signals();

beforeAll(async () => {
  pki = await createPki();
  [as, h1, grpc] = await Promise.all([startChaosAs(pki.certs.server, pki.certs.clients.client1, signals, SLOW_AS_MS), startHttp1Upstream(signals), startGrpcUpstream(signals)]);
  // Free ports are picked before cnfguard binds them, and other test files pick theirs meanwhile:
  // a start that lost that race (EADDRINUSE) is tried again on fresh ports.
  for (let attempt = 1; ; attempt++) {
    const [port, adminPort, decisionPort] = [await freePort(), await freePort(), await freePort()];
    guard = await startGuardProcess(pki.dir, guardConfig(port, adminPort, decisionPort), adminPort, MAX_RESTARTS);
    if (await guard.up()) {
      target = { port, decisionPort, decisionSocket: socketPath(), ca: pki.certs.ca.cert, client: pki.certs.clients.client1, signals, validToken: VALID, deadlineMs: EVENT_DEADLINE_MS };
      return;
    }
    await guard.stop();
    if (attempt === 3) throw new Error('cnfguard did not start (3 attempts, fresh ports each)');
  }
});

const socketPath = () => join(pki.dir, 'decision.sock');

function guardConfig(port: number, adminPort: number, decisionPort: number): Record<string, unknown> {
  return {
    listen: { host: '127.0.0.1', port },
    tls: { cert: pki.files.server.cert, key: pki.files.server.key },
    introspection: {
      url: as.url,
      clientId: 'rs',
      clientSecret: 'rs-secret',
      ca: pki.files.ca,
      timeoutMs: 5000,
      probeAtStartup: false,
      // Every chaos client comes from one address: the introspection budget is not what is tested.
      budget: { perPeerPerSecond: 0, totalPerSecond: 0 },
    },
    upstream: h1.url,
    routes: [{ pathPrefix: '/chaos.Svc', upstream: grpc.url, upstreamHttp2: true }],
    admin: { host: '127.0.0.1', port: adminPort },
    decisionApi: { host: '127.0.0.1', port: decisionPort, socket: socketPath() },
    trustedProxies: [
      { cidrs: ['127.0.0.1/32'], header: 'x-client-cert', format: 'pem-urlencoded' },
      { unixSocket: true, header: 'x-client-cert', format: 'pem-urlencoded' },
    ],
    limits: { handshakeTimeoutMs: 5000, http2PingTimeoutMs: PING_TIMEOUT_MS },
  };
}

afterAll(async () => {
  await guard?.stop();
  await Promise.all([as?.stop(), h1?.stop(), grpc?.stop()]);
  await pki?.cleanup();
});

const PHASES: readonly Phase[] = ['handshake', 'headers', 'introspection', 'upstream', 'response', 'upload'];
/** Phases a made-up token can reach: it is refused once the AS has answered. */
const MADE_UP_PHASES: readonly Phase[] = ['headers', 'introspection', 'upload'];
// A Unix socket has no reset (no RST; Node's resetAndDestroy is for TCP only): its client drops or stalls.
const ACTIONS: Record<Protocol, readonly Action[]> = { h1: ['drop', 'reset', 'stall'], h2: ['drop', 'reset', 'rst_stream', 'stall'], grpc: ['drop', 'reset', 'rst_stream', 'stall'], decision: ['drop', 'reset', 'stall'], 'decision-unix': ['drop', 'stall'] };

type Cell = Omit<ChaosEvent, 'id'>;
const cellName = (c: Cell): string => `${c.protocol}/${c.phase}/${c.action}/${c.token}`;

/** Every (protocol, phase, action, token) that applies. */
function cells(): Cell[] {
  const out: Cell[] = [];
  for (const protocol of ['h1', 'h2', 'grpc'] as const) {
    for (const phase of PHASES) {
      for (const action of ACTIONS[protocol]) {
        if (phase === 'handshake') {
          if (action !== 'rst_stream') out.push({ protocol, phase, action, token: 'none' });
          continue;
        }
        const tokens: TokenKind[] = MADE_UP_PHASES.includes(phase) ? ['made-up', 'valid'] : ['valid'];
        for (const token of tokens) out.push({ protocol, phase, action, token });
      }
    }
  }
  // The decision API (port and socket): a check request whose headers never end, and one dropped while the AS thinks.
  for (const protocol of ['decision', 'decision-unix'] as const) {
    for (const action of ACTIONS[protocol]) {
      out.push({ protocol, phase: 'headers', action, token: 'none' });
      for (const token of ['made-up', 'valid'] as const) out.push({ protocol, phase: 'introspection', action, token });
    }
  }
  return out;
}

interface RoundResult {
  events: ChaosEvent[];
  played: Map<string, Played>;
  /** Upstream requests (by chaos id) that outlived their client past the bound, with how long. */
  outlived: { id: string; ms: number | undefined }[];
  /** How long each closed upstream request outlived its client, in ms, slowest first (what the bound has to spare). */
  lags: number[];
  /** For each exit during the round, the cells of the events that acted in the 300 ms before it. */
  exitSuspects: string[][];
}

/** Plays `repeats` of each cell (default: all), `CONCURRENCY` at a time, then lets go of everything and checks the upstream ledgers. */
async function round(name: string, repeats: number, only: Cell[] = cells()): Promise<RoundResult> {
  const events = Array.from({ length: repeats }, (_, r) => only.map((cell, i) => ({ ...cell, id: `${name}-${r}-${i}` }))).flat();
  const played = new Map<string, Played>();
  const exitsBefore = guard.exits.length;
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < events.length) {
      const event = events[next++] as ChaosEvent;
      await guard.up();
      played.set(event.id, await play(event, target));
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  // Everything still held (stalls, sessions kept after a stream reset) is let go now.
  const releasedAt = performance.now();
  for (const p of played.values()) p.linger?.();
  const goneAt = (id: string): number => played.get(id)?.goneAt ?? releasedAt;
  const ids = new Set(events.map((e) => e.id));
  const open = () => [h1, grpc].flatMap((u) => [...u.ledger.opened.keys()].filter((id) => ids.has(id) && !u.ledger.closed.has(id)));
  // Bounded polling: the last client went at `releasedAt`.
  while (open().length > 0 && performance.now() < releasedAt + OUTLIVE_BOUND_MS) await new Promise((resolve) => setTimeout(resolve, 50));
  const outlived = [h1, grpc].flatMap((u) =>
    [...u.ledger.opened.keys()]
      .filter((id) => ids.has(id))
      .map((id) => ({ id, ms: u.ledger.closed.has(id) ? (u.ledger.closed.get(id) as number) - goneAt(id) : undefined }))
      .filter((o) => o.ms === undefined || o.ms > OUTLIVE_BOUND_MS),
  );
  const lags = [h1, grpc]
    .flatMap((u) => [...u.ledger.closed.entries()].filter(([id]) => ids.has(id)).map(([id, at]) => at - goneAt(id)))
    .sort((a, b) => b - a);
  const exitSuspects = guard.exits.slice(exitsBefore).map((exit) =>
    exit.at >= releasedAt
      ? ['(when the round let go of the connections it held)']
      : [...new Set(events.filter((e) => { const p = played.get(e.id); return p?.reached === true && p.goneAt !== undefined && p.goneAt <= exit.at && p.goneAt > exit.at - 300; }).map(cellName))].sort(),
  );
  return { events, played, outlived, lags, exitSuspects };
}

/** Memory after a full GC: each figure the least of three readings (each after its own collection). */
async function settledMemory(): Promise<Memory> {
  const readings: Memory[] = [];
  for (let i = 0; i < 3; i++) readings.push(await guard.memoryAfterGc());
  const least = (key: keyof Memory) => Math.min(...readings.map((r) => r[key]));
  return { heapUsed: least('heapUsed'), external: least('external'), rss: least('rss') };
}

const retained = (m: Memory | undefined): number | undefined => (m === undefined ? undefined : m.heapUsed + m.external);
const mib = (bytes: number | undefined): string => (bytes === undefined ? '?' : (bytes / 2 ** 20).toFixed(1));

/** One gRPC call with the valid token: its grpc-status, or why there was none. */
async function grpcControl(): Promise<string> {
  const session = http2.connect(`https://127.0.0.1:${target.port}`, { ca: target.ca, ...target.client, servername: 'localhost', localAddress: '127.0.0.2' } as http2.SecureClientSessionOptions);
  session.on('error', () => {});
  try {
    return await new Promise<string>((resolve) => {
      setTimeout(() => resolve('no answer in 10 s'), 10_000).unref();
      const stream = session.request({ ':method': 'POST', ':path': '/chaos.Svc/Fast', 'content-type': 'application/grpc', te: 'trailers', authorization: `Bearer ${VALID}`, 'x-chaos-id': 'control-grpc' });
      stream.on('trailers', (t) => resolve(String(t['grpc-status'])));
      stream.on('error', (e: Error) => resolve(e.message));
      stream.on('close', () => resolve(`closed (${stream.rstCode})`));
      stream.resume();
      stream.end(grpcFrame(Buffer.from('{}')));
    });
  } finally {
    session.destroy();
  }
}

/** A request on every edge with the valid token: what each answered. */
async function controls(): Promise<Record<string, string | number>> {
  const url = `https://localhost:${target.port}/control`;
  const viaCurl = (http: '1.1' | '2') =>
    curl(pki, url, { cert: pki.files.client1, token: VALID, http, extra: ['--interface', '127.0.0.2', '--resolve', `localhost:${target.port}:127.0.0.1`] }).then(
      (r) => r.status,
      (e: Error) => e.message,
    );
  const decision = await fetch(`http://127.0.0.1:${target.decisionPort}/nginx`, {
    headers: { 'x-original-method': 'GET', 'x-original-uri': '/control', authorization: `Bearer ${VALID}`, 'x-client-cert': encodeURIComponent(target.client.cert) },
    signal: AbortSignal.timeout(5000),
  }).then(
    (r) => r.status,
    (e: Error) => e.message,
  );
  return { 'HTTP/1.1': await viaCurl('1.1'), 'HTTP/2': await viaCurl('2'), gRPC: await grpcControl(), 'decision API': decision, 'decision API socket': await socketControl() };
}

/** The control check over the decision API's Unix socket: its status, or why there was none. */
function socketControl(): Promise<number | string> {
  return new Promise((resolve) => {
    const headers = { host: 'localhost', 'x-original-method': 'GET', 'x-original-uri': '/control', authorization: `Bearer ${VALID}`, 'x-client-cert': encodeURIComponent(target.client.cert) };
    const req = http.request({ socketPath: target.decisionSocket, path: '/nginx', headers, agent: false, timeout: 5000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('timeout', () => req.destroy(new Error('no answer in 5 s')));
    req.on('error', (e: Error) => resolve(e.message));
    req.end();
  });
}

describe('connection chaos', () => {
  it('no client ends the process, keeps an upstream request running, or leaves memory behind', async () => {
    const all = cells();
    expect(await controls()).toEqual(CONTROLS_OK);
    // Warm-up: the same traffic once, so that caches, pools and compiled code are in the baseline.
    const warm = await round('warm', 1);
    // (Unless the process has exited meanwhile: the test fails on that, and a baseline would mean nothing.)
    const before = guard.exits.length === 0 ? await settledMemory().catch(() => undefined) : undefined;
    const started = performance.now();
    const main = await round('main', REPEATS);
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    const after = guard.up().then((up) => (up ? settledMemory() : undefined)).catch(() => undefined);
    const memory = { before, after: await after };
    const control = await controls();

    const unreached = main.events.filter((e) => main.played.get(e.id)?.reached !== true).map(cellName);
    const byCell = (list: string[]) => Object.entries(Object.groupBy(list, (c) => c)).map(([c, l]) => `${c} x${l?.length ?? 0}`);
    const cellOf = new Map([...warm.events, ...main.events].map((e) => [e.id, cellName(e)]));
    // Per cell: how many, and by how long each outlived its client ("open": still, at the end of the poll).
    const outlived = Object.entries(Object.groupBy([...warm.outlived, ...main.outlived], (o) => cellOf.get(o.id) ?? o.id)).map(
      ([cell, list]) => `${cell} x${list?.length ?? 0} (${(list ?? []).map((o) => (o.ms === undefined ? 'open' : `${Math.round(o.ms)} ms`)).join(', ')})`,
    );
    const exits = guard.exits.map((e, i) => ({ code: e.code, signal: e.signal, fatal: e.fatal?.slice(0, 1500), suspects: [...warm.exitSuspects, ...main.exitSuspects][i] }));
    const protocols = new Set(all.map((c) => c.protocol)).size;
    const phases = new Set(all.map((c) => c.phase)).size;
    const actions = new Set(all.map((c) => c.action)).size;
    console.log(
      `connection chaos: ${main.events.length} events (${all.length} cells over ${protocols} protocols x ${phases} phases x ${actions} actions x made-up/valid tokens, x${REPEATS}) ` +
        `+ ${warm.events.length} warm-up, concurrency ${CONCURRENCY}, ${seconds} s; process exits: ${guard.exits.length}; ` +
        `upstream requests outliving their client > ${OUTLIVE_BOUND_MS} ms: ${outlived.length === 0 ? 0 : outlived.join(', ')}; ` +
        `after GC: heap used + external ${mib(retained(memory.before))} -> ${mib(retained(memory.after))} MiB ` +
        `(heap ${mib(memory.before?.heapUsed)} -> ${mib(memory.after?.heapUsed)}, external ${mib(memory.before?.external)} -> ${mib(memory.after?.external)}, rss ${mib(memory.before?.rss)} -> ${mib(memory.after?.rss)} MiB)`,
    );
    const context = JSON.stringify({ exits, outlived, unreached: byCell(unreached), control }, null, 2);

    expect(guard.exits, context).toEqual([]);
    expect(guard.alive(), context).toBe(true);
    expect(outlived, context).toEqual([]);
    expect(unreached, context).toEqual([]);
    expect(control, context).toEqual(CONTROLS_OK);
    expect(retained(memory.after), context).toBeLessThanOrEqual((retained(memory.before) ?? 0) + MEMORY_MARGIN_BYTES);
  }, 120_000);

  it('HTTP/2 and gRPC connections reset mid-response, many at once: every upstream request is aborted within the bound', async () => {
    // The cell of the run above that fails only now and then: Node's HTTP/2 server does not always
    // see a TCP reset that comes while it is writing a response (no 'close' on the socket, the
    // session or the stream, and a PING is never sent). Played 25 times each, it failed in every
    // run here (15 to 26 of the 50 left open) until sessions that stop answering PINGs were ended.
    const only = (['h2', 'grpc'] as const).map((protocol): Cell => ({ protocol, phase: 'response', action: 'reset', token: 'valid' }));
    const result = await round('reset', 25, only);
    const unreached = result.events.filter((e) => result.played.get(e.id)?.reached !== true).length;
    const context = JSON.stringify({ exits: guard.exits, outlived: result.outlived.map((o) => `${o.id}: ${o.ms === undefined ? 'open' : `${Math.round(o.ms)} ms`}`) }, null, 2);
    const slowest = result.lags.slice(0, 3).map((ms) => `${Math.round(ms)} ms`).join(', ');
    console.log(`connection chaos, reset mid-response: ${result.events.length} events, ${result.outlived.length} upstream requests outlived their client by > ${OUTLIVE_BOUND_MS} ms; the slowest closed ${slowest} after their client went`);
    expect(guard.exits, context).toEqual([]);
    expect(unreached, context).toBe(0);
    expect(result.outlived, context).toEqual([]);
  }, 60_000);
});
