import { EventEmitter } from 'node:events';
import { describe, expect, it, vi } from 'vitest';
import { BodyRelay, withoutHopByHop } from '../../src/proxy/forward-common.ts';
import type { ProxyResponse } from '../../src/proxy/messages.ts';

describe("the upstream's answer loses its hop-by-hop fields", () => {
  it('drops Connection, Keep-Alive, the other hop-by-hop fields and every field Connection names; keeps the rest', () => {
    const upstream = {
      connection: 'keep-alive, X-Hop-Secret',
      'keep-alive': 'timeout=5',
      'x-hop-secret': '1',
      'transfer-encoding': 'chunked',
      trailer: 'x-checksum',
      upgrade: 'h2c',
      'content-type': 'text/plain',
      'set-cookie': ['a=1', 'b=2'],
      'x-absent': undefined,
    };
    expect(withoutHopByHop(upstream)).toEqual({ 'content-type': 'text/plain', 'set-cookie': ['a=1', 'b=2'] });
  });

  it('a Connection header given as several lines names fields in each', () => {
    expect(withoutHopByHop({ connection: ['close', 'x-a'], 'x-a': '1', 'x-b': '2' })).toEqual({ 'x-b': '2' });
  });

  it("an HTTP/2 upstream's pseudo-headers are not passed on as fields", () => {
    expect(withoutHopByHop({ ':status': '200', 'content-type': 'application/grpc' })).toEqual({ 'content-type': 'application/grpc' });
  });

  it('leaves the upstream object as it was (a new object, no deletes)', () => {
    const upstream = { connection: 'close', 'content-length': '2' };
    const out = withoutHopByHop(upstream);
    expect(upstream).toEqual({ connection: 'close', 'content-length': '2' });
    expect(out).not.toBe(upstream);
  });
});

describe('BodyRelay', () => {
  /** A response that takes nothing until told: each write asks for a 'drain'. */
  class SlowResponse extends EventEmitter {
    write(): boolean {
      return false;
    }
    end(): void {}
  }

  it('a client that pauses the answer many times costs one close listener, and a pause still ends on its stall bound', () => {
    vi.useFakeTimers();
    try {
      const res = new SlowResponse();
      const stalls: string[] = [];
      const relay = new BodyRelay(res as unknown as ProxyResponse, () => {}, () => {}, { ms: 1000, onStall: (err) => stalls.push(err.reason) });
      for (let i = 0; i < 50; i++) {
        relay.write(Buffer.from('x'));
        res.emit('drain');
      }
      expect(res.listenerCount('close')).toBe(1);
      expect(res.listenerCount('drain')).toBe(0);
      relay.write(Buffer.from('x'));
      vi.advanceTimersByTime(1000);
      expect(stalls).toEqual(['client_aborted']);
      // Closed during a pause: its timer is cleared.
      relay.write(Buffer.from('x'));
      res.emit('close');
      vi.advanceTimersByTime(5000);
      expect(stalls).toHaveLength(1);
    } finally {
      vi.useRealTimers();
    }
  });
});
