// A plain-HTTP upstream for the demo and the tests: it records every request and echoes what it saw.
//
// Bodies are streamed through SHA-256 and never buffered, so tests can push large bodies through the
// proxy and compare hashes. `x-echo-delay-ms: N` delays the answer by N ms (upstream timeout tests).
// WebSocket upgrades get the RFC 6455 handshake, after which raw bytes are echoed (no frame parsing).
import { createHash } from 'node:crypto';
import { createServer } from 'node:http';
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { listen } from '../src/listen.ts';

export interface RecordedRequest {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  bodyBytes: number;
  /** Hex SHA-256 of the request body (of the empty string for upgrades and empty bodies). */
  bodySha256: string;
}

export interface EchoUpstream {
  /** http://HOST:PORT, no trailing slash. */
  url: string;
  /** Every request in arrival order of completion (a body is recorded once fully read). */
  requests: RecordedRequest[];
  /** Closes the listener and every connection, websockets and idle keep-alive ones included. */
  stop(): Promise<void>;
}

const WEBSOCKET_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
/** Longest delay honoured from x-echo-delay-ms, so a typo cannot hang a test run. */
const MAX_DELAY_MS = 60_000;
const EMPTY_SHA256 = createHash('sha256').digest('hex');

function requestedDelay(req: IncomingMessage, fallback: number): number {
  const raw = req.headers['x-echo-delay-ms'];
  if (typeof raw !== 'string' || !/^\d+$/.test(raw.trim())) return fallback;
  return Math.min(Number(raw.trim()), MAX_DELAY_MS);
}

function urlHost(host: string): string {
  return host.includes(':') ? `[${host}]` : host;
}

export async function startEchoUpstream(
  opts: { host?: string; port?: number; delayMs?: number } = {},
): Promise<EchoUpstream> {
  const host = opts.host ?? '127.0.0.1';
  const requests: RecordedRequest[] = [];
  const timers = new Set<NodeJS.Timeout>();
  const upgraded = new Set<Duplex>();

  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const hash = createHash('sha256');
    let bodyBytes = 0;
    req.on('data', (chunk: Buffer) => {
      bodyBytes += chunk.length;
      hash.update(chunk);
    });
    req.on('error', () => res.destroy());
    req.on('end', () => {
      const record: RecordedRequest = {
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        bodyBytes,
        bodySha256: hash.digest('hex'),
      };
      requests.push(record);
      const answer = (): void => {
        if (res.destroyed) return;
        const payload = JSON.stringify(record);
        res.writeHead(200, {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(payload),
        });
        res.end(payload);
      };
      const delay = requestedDelay(req, opts.delayMs ?? 0);
      if (delay <= 0) {
        answer();
        return;
      }
      const timer = setTimeout(() => {
        timers.delete(timer);
        answer();
      }, delay);
      timers.add(timer);
      // A caller that gives up (a proxy's timeout) should not keep a timer around.
      res.on('close', () => {
        clearTimeout(timer);
        timers.delete(timer);
      });
    });
  });

  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const key = req.headers['sec-websocket-key'];
    if (req.headers.upgrade?.toLowerCase() !== 'websocket' || typeof key !== 'string' || key === '') {
      socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
      return;
    }
    requests.push({
      method: req.method ?? '',
      url: req.url ?? '',
      headers: req.headers,
      bodyBytes: 0,
      bodySha256: EMPTY_SHA256,
    });
    const accept = createHash('sha1').update(key + WEBSOCKET_GUID).digest('base64');
    upgraded.add(socket);
    socket.on('close', () => upgraded.delete(socket));
    socket.on('error', () => socket.destroy());
    socket.write(
      'HTTP/1.1 101 Switching Protocols\r\n' +
        'Upgrade: websocket\r\n' +
        'Connection: Upgrade\r\n' +
        `Sec-WebSocket-Accept: ${accept}\r\n\r\n`,
    );
    if (head.length > 0) socket.write(head);
    socket.pipe(socket);
  });

  await listen(server, host, opts.port ?? 0);
  const { port } = server.address() as AddressInfo;

  let stopped: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopped ??= new Promise<void>((resolve, reject) => {
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
      server.close((err) => (err ? reject(err) : resolve()));
      server.closeAllConnections();
      // Upgraded sockets are no longer the HTTP server's to close.
      for (const socket of upgraded) socket.destroy();
      upgraded.clear();
    });
    return stopped;
  };

  return { url: `http://${urlHost(host)}:${port}`, requests, stop };
}
