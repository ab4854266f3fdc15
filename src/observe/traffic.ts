/**
 * Who a request came from and how many bytes it moved, for the access line. Cheap enough for
 * every request: two counters read from the connection, no stream listeners.
 */
import { isIP } from 'node:net';

const MARK = Symbol('cnfguard.bytesMark');

interface CountingSocket {
  readonly bytesRead: number;
  readonly bytesWritten: number;
  [MARK]?: { read: number; written: number };
}

export interface Traffic {
  bytesIn: number | undefined;
  bytesOut: number | undefined;
}

/**
 * HTTP/1.1: the bytes the connection received and sent (decrypted TLS: request line, headers and
 * body; status line, headers and body) since the previous response on it ended, so one request's
 * own when the client waits for each response (no pipelining). Call once, when the response is over.
 */
export function connectionTraffic(socket: CountingSocket | null | undefined): Traffic {
  if (socket === null || socket === undefined || typeof socket.bytesRead !== 'number') return { bytesIn: undefined, bytesOut: undefined };
  const mark = socket[MARK];
  const read = socket.bytesRead;
  const written = socket.bytesWritten;
  const traffic = { bytesIn: read - (mark?.read ?? 0), bytesOut: written - (mark?.written ?? 0) };
  if (mark === undefined) socket[MARK] = { read, written };
  else {
    mark.read = read;
    mark.written = written;
  }
  return traffic;
}

/**
 * HTTP/2 streams count no bytes of their own: the declared `content-length`s (request and
 * response) when there are, else nothing.
 */
export function declaredTraffic(requestLength: string | undefined, responseLength: number | string | string[] | undefined): Traffic {
  const number = (value: unknown): number | undefined => {
    const n = typeof value === 'string' ? Number(value) : typeof value === 'number' ? value : NaN;
    return Number.isSafeInteger(n) && n >= 0 ? n : undefined;
  };
  return { bytesIn: number(requestLength), bytesOut: number(responseLength) };
}

/**
 * The client a trusted proxy names: the last `X-Forwarded-For` entry (the one that proxy added),
 * when it is an IP address; anything else is left out. Call only for a `trustedProxies` peer.
 */
export function forwardedClient(header: string | string[] | undefined): string | undefined {
  if (header === undefined) return undefined;
  const value = Array.isArray(header) ? header.join(',') : header;
  const last = value.slice(value.lastIndexOf(',') + 1).trim();
  return isIP(last) === 0 ? undefined : last;
}
