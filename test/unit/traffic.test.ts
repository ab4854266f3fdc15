import { describe, expect, it } from 'vitest';
import { connectionTraffic, declaredTraffic, forwardedClient } from '../../src/observe/traffic.ts';

describe('connectionTraffic', () => {
  it("counts each response's bytes since the previous one on the connection", () => {
    const socket = { bytesRead: 100, bytesWritten: 250 };
    expect(connectionTraffic(socket)).toEqual({ bytesIn: 100, bytesOut: 250 });
    socket.bytesRead = 130;
    socket.bytesWritten = 1250;
    expect(connectionTraffic(socket)).toEqual({ bytesIn: 30, bytesOut: 1000 });
  });
  it('says nothing without a socket', () => {
    expect(connectionTraffic(undefined)).toEqual({ bytesIn: undefined, bytesOut: undefined });
  });
});

it('declaredTraffic reads content-lengths, ignoring junk', () => {
  expect(declaredTraffic('12', 34)).toEqual({ bytesIn: 12, bytesOut: 34 });
  expect(declaredTraffic('x', ['1', '2'])).toEqual({ bytesIn: undefined, bytesOut: undefined });
});

it('forwardedClient takes the last X-Forwarded-For entry when it is an address', () => {
  expect(forwardedClient('203.0.113.9, 10.0.0.1')).toBe('10.0.0.1');
  expect(forwardedClient(['203.0.113.9', ' 2001:db8::1 '])).toBe('2001:db8::1');
  expect(forwardedClient('10.0.0.1, "><script>')).toBeUndefined();
  expect(forwardedClient(undefined)).toBeUndefined();
});
