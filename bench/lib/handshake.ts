/**
 * New-connection rate: every request on a fresh mTLS connection (`Connection: close`), from
 * `concurrency` loops. `full` makes a full handshake each time; `resumed` offers the TLS session
 * ticket the previous connection of the same loop received, and counts how many were resumed.
 */
import { connect, type TLSSocket } from 'node:tls';
import { percentile } from './load.ts';

export interface HandshakeOptions {
  host: string;
  port: number;
  token: string;
  cert: string;
  key: string;
  mode: 'full' | 'resumed';
  concurrency: number;
  /** Stop after this many connections or this many seconds, whichever comes first. */
  maxConnections: number;
  maxSeconds: number;
}

export interface HandshakeResult {
  mode: 'full' | 'resumed';
  connections: number;
  seconds: number;
  perSecond: number;
  /** Connect + TLS handshake + one request + its response, per connection. */
  p50Ms: number;
  p99Ms: number;
  /** Share of connections whose session was resumed (0 for `full`). */
  resumedShare: number;
  failures: number;
}

interface OneResult {
  ok: boolean;
  ms: number;
  reused: boolean;
  session: Buffer | undefined;
}

function once(options: HandshakeOptions, session: Buffer | undefined): Promise<OneResult> {
  const started = performance.now();
  return new Promise<OneResult>((resolve) => {
    let latest = session;
    let settled = false;
    let head = '';
    const socket: TLSSocket = connect({
      host: options.host,
      port: options.port,
      servername: 'localhost',
      cert: options.cert,
      key: options.key,
      rejectUnauthorized: false,
      ...(session !== undefined && { session }),
    });
    const finish = (ok: boolean) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      const reused = socket.isSessionReused();
      socket.destroy();
      resolve({ ok, ms: performance.now() - started, reused, session: latest });
    };
    const timer = setTimeout(() => finish(false), 10_000);
    socket.on('session', (ticket: Buffer) => {
      latest = ticket;
    });
    socket.once('secureConnect', () => {
      socket.write(`GET /bench HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${options.token}\r\nConnection: close\r\n\r\n`);
    });
    socket.on('data', (chunk: Buffer) => {
      if (head.length < 64) head += chunk.toString('latin1');
    });
    socket.once('end', () => finish(head.startsWith('HTTP/1.1 200')));
    socket.once('close', () => finish(head.startsWith('HTTP/1.1 200')));
    socket.once('error', () => finish(false));
  });
}

export async function runHandshakes(options: HandshakeOptions): Promise<HandshakeResult> {
  const latencies: number[] = [];
  let reused = 0;
  let failures = 0;
  let started = 0;
  // When resuming, each loop first gets a session ticket from one full handshake (not counted).
  const primed: (Buffer | undefined)[] = [];
  for (let i = 0; i < options.concurrency; i++) primed.push(options.mode === 'resumed' ? (await once(options, undefined)).session : undefined);
  const deadline = performance.now() + options.maxSeconds * 1000;
  const t0 = performance.now();
  const loop = async (index: number) => {
    let session = primed[index];
    while (started < options.maxConnections && performance.now() < deadline) {
      started += 1;
      const result = await once(options, options.mode === 'resumed' ? session : undefined);
      if (options.mode === 'resumed' && result.session !== undefined) session = result.session;
      if (!result.ok) failures += 1;
      else {
        latencies.push(result.ms);
        if (result.reused) reused += 1;
      }
    }
  };
  const loops: Promise<void>[] = [];
  for (let i = 0; i < options.concurrency; i++) loops.push(loop(i));
  await Promise.all(loops);
  const seconds = (performance.now() - t0) / 1000;
  latencies.sort((a, b) => a - b);
  return {
    mode: options.mode,
    connections: latencies.length,
    seconds: Math.round(seconds * 100) / 100,
    perSecond: Math.round(latencies.length / seconds),
    p50Ms: Math.round(percentile(latencies, 50) * 100) / 100,
    p99Ms: Math.round(percentile(latencies, 99) * 100) / 100,
    resumedShare: latencies.length === 0 ? 0 : Math.round((reused / latencies.length) * 1000) / 1000,
    failures,
  };
}
