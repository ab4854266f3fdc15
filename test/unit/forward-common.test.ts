import { describe, expect, it } from 'vitest';
import { withoutHopByHop } from '../../src/proxy/forward-common.ts';

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
