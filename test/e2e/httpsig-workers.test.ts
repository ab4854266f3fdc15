/**
 * HTTP message signature nonces under `workers: 2`, started through the real CLI in a child
 * process: one signed request sent on many fresh connections (round-robin over both workers) is
 * accepted exactly once, because the nonce goes to the replay store the cluster's primary holds.
 * The token comes from the introspection stub (oidc-provider cannot bind a token to an httpsig key).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { stringify } from 'yaml';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startEchoUpstream, type EchoUpstream } from '../../demo/echo-upstream.ts';
import { httpsigKey, signRequest } from '../fixtures/httpsig-clients.ts';
import { startIntrospectionStub, type IntrospectionStub } from '../fixtures/introspection-stub.ts';
import { captureOutput, clusterStarted, running } from '../fixtures/processes.ts';
import { createPki, type Pki } from '../fixtures/stack.ts';

const BIN = join(import.meta.dirname, '..', '..', 'bin', 'cnfguard.js');
const CONNECTIONS = 8;
const ORIGIN = 'https://api.test';
const key = httpsigKey('ed25519');

let pki: Pki;
let stub: IntrospectionStub;
let upstream: EchoUpstream;
let child: ChildProcess | undefined;
let lines: () => Record<string, unknown>[];
let url = '';

beforeAll(async () => {
  pki = await createPki();
  stub = await startIntrospectionStub(pki.certs.server);
  upstream = await startEchoUpstream();
  stub.answers.set('tok-sig', { active: true, client_id: 'sig-app', exp: Math.floor(Date.now() / 1000) + 3600, cnf: key.cnf });
  const file = join(pki.dir, 'httpsig-workers.yaml');
  await writeFile(
    file,
    stringify({
      listen: { host: '127.0.0.1', port: 0 },
      tls: { cert: pki.files.server.cert, key: pki.files.server.key },
      introspection: { url: stub.url, clientId: 'rs', clientSecret: 'rs-secret', ca: pki.files.ca, timeoutMs: 5000, probeAtStartup: false },
      upstream: upstream.url,
      admin: { host: '127.0.0.1', port: 0 },
      workers: 2,
      methods: ['httpsig'],
      publicOrigin: ORIGIN,
    }),
  );
  child = spawn(process.execPath, [BIN, 'run', '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] });
  const output = captureOutput(child);
  lines = output.lines;
  url = (await clusterStarted(child, output)).listen as string;
});

afterAll(async () => {
  const workers = lines?.().filter((l) => l.msg === 'cnfguard started').map((l) => l.pid as number) ?? [];
  child?.kill('SIGKILL');
  for (const pid of workers) if (running(pid)) process.kill(pid, 'SIGKILL');
  await upstream?.stop();
  await stub?.stop();
  await pki?.cleanup();
});

it('workers: 2: one signed request sent on many fresh connections is accepted exactly once', async () => {
  const path = '/sig/replayed';
  const headers = await signRequest('http-message-signatures', { method: 'GET', url: `${ORIGIN}${path}`, headers: { authorization: 'HTTPSig tok-sig' }, key });
  const statuses: number[] = [];
  for (let i = 0; i < CONNECTIONS; i++) {
    const agent = new Agent({ connect: { ca: pki.certs.ca.cert }, pipelining: 0 });
    try {
      const res = await request(`${url}${path}`, { headers, dispatcher: agent });
      await res.body.dump();
      statuses.push(res.statusCode);
    } finally {
      await agent.close();
    }
  }
  const of = () => lines().filter((l) => l.msg === 'request' && l.path === path);
  await expect.poll(() => of().length, { timeout: 10_000, interval: 50 }).toBe(CONNECTIONS);
  // Both workers saw the signature: the test means something only if it reached each of them.
  expect(new Set(of().map((l) => l.pid)).size).toBe(2);
  expect(statuses.filter((s) => s === 200)).toHaveLength(1);
  expect(of().map((l) => l.reason).sort()).toEqual(['bound', ...Array<string>(CONNECTIONS - 1).fill('httpsig_nonce_replayed')]);
});
