/**
 * The HTTP/1.1 edges (the proxy listener and the decision API) read a request's lines through
 * headerLinesOf: Node's `headers` map when no name repeats, `headersDistinct` otherwise. Whatever
 * the lines, it must answer what `headersDistinct` would, for every name (a signature may cover
 * any field, "constructor" too).
 * Real requests to a real node:http server, their header lists made up by fast-check.
 */
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { isDeepStrictEqual } from 'node:util';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { headerLinesOf } from '../../src/edge/http-facts.ts';
import { rawRequest, sendRaw } from '../fixtures/raw-http.ts';

/** Names asked for on every request, besides the ones sent: Object's own members among them. */
const ASKED = ['authorization', 'dpop', 'host', 'x-client-cert', 'set-cookie', 'cookie', 'content-length', 'x-original-uri', 'constructor', 'tostring', 'toString', '__proto__', 'hasownproperty', 'valueof', 'absent'];
const NAMES = ['Authorization', 'authorization', 'AUTHORIZATION', 'DPoP', 'dpop', 'X-Client-Cert', 'x-client-cert', 'Set-Cookie', 'Cookie', 'X-Original-URI', 'Constructor', 'toString', '__proto__', 'valueOf', 'Accept', 'X-Other'];

let server: Server;
/** What the handler found for the last request: the names whose lines differed from headersDistinct's. */
let mismatches: string[] = [];

beforeAll(async () => {
  server = createServer((req, res) => {
    const lines = headerLinesOf(req);
    const names = new Set([...ASKED, ...req.rawHeaders.filter((_, i) => i % 2 === 0).map((name) => name.toLowerCase())]);
    mismatches = [...names].filter((name) => !isDeepStrictEqual(lines(name), req.headersDistinct[name]));
    res.writeHead(200, { 'content-length': 0 }).end();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
});
afterAll(() => server.close());

describe('headerLinesOf', () => {
  it('answers every name as headersDistinct does, with and without repeated names', async () => {
    const port = (server.address() as AddressInfo).port;
    const line = fc.tuple(fc.constantFrom(...NAMES), fc.stringMatching(/^[A-Za-z0-9 ._~+/=-]{1,12}$/).map((v) => v.trim() || 'v'));
    await fc.assert(
      fc.asyncProperty(fc.array(line, { maxLength: 8 }), async (headers) => {
        mismatches = ['(not answered)'];
        const answer = await sendRaw({ port }, rawRequest('/nginx', { headers }));
        expect(answer.status).toBe(200);
        expect(mismatches).toEqual([]);
      }),
      { numRuns: 150 },
    );
  });

  it('a request whose names all differ and one that repeats Authorization are both read right', async () => {
    const port = (server.address() as AddressInfo).port;
    for (const headers of [
      [['Authorization', 'Bearer a'], ['DPoP', 'p']],
      [['Authorization', 'Bearer a'], ['authorization', 'Bearer b']],
    ] as [string, string][][]) {
      mismatches = ['(not answered)'];
      await sendRaw({ port }, rawRequest('/nginx', { headers }));
      expect(mismatches, JSON.stringify(headers)).toEqual([]);
    }
  });
});
