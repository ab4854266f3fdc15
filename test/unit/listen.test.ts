import { createServer, type Server } from 'node:net';
import { afterEach, expect, it } from 'vitest';
import { listen } from '../../src/listen.ts';

const servers: Server[] = [];
afterEach(() => {
  for (const server of servers.splice(0)) server.close();
});

it('after start every runtime error reaches the handler: none is swallowed, none crashes', async () => {
  const server = createServer();
  servers.push(server);
  const seen: string[] = [];
  await listen(server, '127.0.0.1', 0, (err) => seen.push(err.message));
  // What an accept failure (EMFILE) looks like to the server; without a listener, emit throws.
  server.emit('error', new Error('first'));
  server.emit('error', new Error('second'));
  expect(seen).toEqual(['first', 'second']);
  expect(server.listenerCount('error')).toBe(1);
  expect(server.listenerCount('listening')).toBe(0);
});

it('a listen error rejects and is not passed to the runtime handler', async () => {
  const taken = createServer();
  servers.push(taken);
  const { port } = await listen(taken, '127.0.0.1', 0, () => {});
  const second = createServer();
  const seen: Error[] = [];
  await expect(listen(second, '127.0.0.1', port, (err) => seen.push(err))).rejects.toMatchObject({ code: 'EADDRINUSE' });
  expect(seen).toEqual([]);
  expect(second.listenerCount('error')).toBe(0);
});
