/**
 * src/undici.ts loads undici's Agent and request without the package's index (which loads
 * fetch, WebSocket, caches, mocks...): they must be the package's very objects, work as its
 * request does, and the server's modules must not load the index (nor ioredis or node-forge,
 * which only sharedState and dev-certs need).
 */
import { spawnSync } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import * as undici from 'undici';
import { expect, it } from 'vitest';
import { Agent, request } from '../../src/undici.ts';

const SRC = join(import.meta.dirname, '..', '..', 'src');

it('Agent is the class undici exports, and request reaches the URL with its method, path, query, headers and body', async () => {
  expect(Agent).toBe(undici.Agent);
  const seen: { method?: string; url?: string; type?: string; body: string }[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (chunk: Buffer) => (body += chunk.toString()));
    req.on('end', () => {
      seen.push({ method: req.method, url: req.url, type: req.headers['content-type'], body });
      res.writeHead(201, { 'content-type': 'text/plain' }).end('answered');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const dispatcher = new Agent();
  try {
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const posted = await request(`${base}/introspect?x=1`, { dispatcher, method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'token=t' });
    expect(posted.statusCode).toBe(201);
    expect(await posted.body.text()).toBe('answered');
    const got = await request(`${base}/jwks`, { dispatcher });
    await got.body.dump();
    expect(seen).toEqual([
      { method: 'POST', url: '/introspect?x=1', type: 'application/x-www-form-urlencoded', body: 'token=t' },
      { method: 'GET', url: '/jwks', type: undefined, body: '' },
    ]);
  } finally {
    await dispatcher.close();
    server.close();
  }
});

it("the server's modules (src/app.ts and all it imports) load neither undici's index nor ioredis nor node-forge", () => {
  const script = `import { createRequire } from 'node:module';
await import(${JSON.stringify(join(SRC, 'app.ts'))});
const cache = createRequire(import.meta.url).cache;
console.log(JSON.stringify(Object.keys(cache).map((file) => file.split('node_modules/').at(-1))));`;
  const run = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 30_000 });
  expect(run.stderr).toBe('');
  const loaded = JSON.parse(run.stdout) as string[];
  expect(loaded, 'the check sees CommonJS packages').toContain('undici/lib/dispatcher/agent.js');
  expect(loaded.filter((file) => file === 'undici/index.js' || file.startsWith('undici/lib/web/') || file.startsWith('ioredis/') || file.startsWith('node-forge/'))).toEqual([]);
});
