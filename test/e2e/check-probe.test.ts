/**
 * `cnfguard check --probe -c FILE` (issue 28) as a user runs it, against real servers: an HTTPS
 * introspection endpoint, an echo upstream, a redis-server. All answering: exit 0, one `probe ok`
 * line each. The AS down, the AS's certificate not chaining to introspection.ca, an upstream
 * refusing connections, the store down: non-zero, and the failing line names cause and fix (by
 * config key). A config that fails check still exits 2 without probing.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { startEchoUpstream, type EchoUpstream } from '../../demo/echo-upstream.ts';
import { startIntrospectionStub, type IntrospectionStub } from '../fixtures/introspection-stub.ts';
import { findRedisServer, startRedis, type RedisServer } from '../fixtures/redis.ts';
import { createPki, type Pki } from '../fixtures/stack.ts';

const BIN = join(import.meta.dirname, '..', '..', 'bin', 'cnfguard.js');

let pki: Pki;
let stub: IntrospectionStub;
let upstream: EchoUpstream;
let redis: RedisServer | undefined;
let secretFile: string;
/**
 * A port nothing listens on: 1, which no test's listener can be given (a freePort() port could be
 * taken by another test's server by the time a probe connects: one suite run found a JWKS there).
 */
const closedPort = 1;

function checkProbe(config: Record<string, unknown>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const file = join(pki.dir, `probe-${randomBytes(4).toString('hex')}.yaml`);
  return writeFile(file, stringify(config)).then(
    () =>
      new Promise((resolve) => {
        const child = spawn(process.execPath, [BIN, 'check', '--probe', '-c', file], { stdio: ['ignore', 'pipe', 'pipe'] });
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
        child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
        child.on('close', (code) => resolve({ code, stdout, stderr }));
      }),
  );
}

const probeLines = (stdout: string) => stdout.split('\n').filter((line) => line.startsWith('probe'));

function config(overrides: { introspection?: Record<string, unknown>; [key: string]: unknown } = {}): Record<string, unknown> {
  const { introspection, ...rest } = overrides;
  return {
    listen: { host: '127.0.0.1', port: 8443 },
    tls: { cert: pki.files.server.cert, key: pki.files.server.key },
    introspection: { url: stub.url, clientId: 'rs', clientSecret: 'rs-secret', ca: pki.files.ca, timeoutMs: 3000, ...introspection },
    upstream: upstream.url,
    ...(redis !== undefined && { sharedState: { url: redis.url, secretFile } }),
    ...rest,
  };
}

beforeAll(async () => {
  pki = await createPki();
  stub = await startIntrospectionStub(pki.certs.server);
  upstream = await startEchoUpstream();
  redis = await startRedis();
  secretFile = join(pki.dir, 'shared-secret');
  await writeFile(secretFile, randomBytes(32), { mode: 0o600 });
}, 30_000);

afterAll(async () => {
  await redis?.cleanup();
  await upstream?.stop();
  await stub?.stop();
  await pki?.cleanup();
});

describe('cnfguard check --probe', () => {
  it('exits 0 when the AS, the shared store and every upstream answer', async () => {
    const result = await checkProbe(config({ routes: [{ name: 'reports', pathPrefix: '/reports', upstream: `${upstream.url}/r` }] }));
    expect(result.code, result.stdout + result.stderr).toBe(0);
    const lines = probeLines(result.stdout);
    expect(lines.find((l) => l.includes('introspection'))).toMatch(/^probe ok: +introspection https:\/\/127\.0\.0\.1:\d+\/\S*: answered in \d+ ms$/);
    expect(lines.find((l) => l.includes('upstream (default)'))).toMatch(/^probe ok: /);
    expect(lines.find((l) => l.includes('upstream (reports)'))).toMatch(/^probe ok: /);
    if (redis !== undefined) expect(lines.find((l) => l.includes('shared state'))).toMatch(/^probe ok: +shared state redis:\/\/127\.0\.0\.1:\d+\/0: PONG$/);
    expect(lines.at(-1)).toMatch(/^probe: all \d answered$/);
    expect(result.stdout).not.toContain('rs-secret');
    // check's output comes first, unchanged.
    expect(result.stdout).toMatch(/^listen:/m);
  });

  it('names the cause and the fix when the AS is down', async () => {
    const result = await checkProbe(config({ introspection: { url: `https://127.0.0.1:${closedPort}/introspect` } }));
    expect(result.code).toBe(1);
    expect(probeLines(result.stdout).find((l) => l.includes('introspection'))).toMatch(/^probe FAILED: introspection .*: ECONNREFUSED; fix: nothing listens at introspection\.url/);
    expect(result.stdout).toMatch(/probe: 1 of \d did not answer/);
  });

  it("names the cause and the fix when the AS's certificate does not chain to introspection.ca", async () => {
    const result = await checkProbe(config({ introspection: { ca: pki.files.selfSigned.cert } }));
    expect(result.code).toBe(1);
    expect(probeLines(result.stdout).find((l) => l.includes('introspection'))).toMatch(/^probe FAILED: introspection .*: [A-Z_]+; fix: check introspection\.ca/);
  });

  it('names the cause and the fix when an upstream refuses connections', async () => {
    const result = await checkProbe(config({ routes: [{ name: 'reports', pathPrefix: '/reports', upstream: `http://127.0.0.1:${closedPort}` }] }));
    expect(result.code).toBe(1);
    const lines = probeLines(result.stdout);
    expect(lines.find((l) => l.includes('upstream (reports)'))).toBe(`probe FAILED: upstream (reports) http://127.0.0.1:${closedPort}/: ECONNREFUSED; fix: nothing listens at routes[0].upstream: start the service, or fix the host or port`);
    expect(lines.find((l) => l.includes('upstream (default)'))).toMatch(/^probe ok: /);
  });

  it.skipIf(findRedisServer() === undefined)('names the cause and the fix when the shared store is down', async () => {
    const result = await checkProbe(config({ sharedState: { url: `redis://127.0.0.1:${closedPort}/0`, secretFile } }));
    expect(result.code).toBe(1);
    expect(probeLines(result.stdout).find((l) => l.includes('shared state'))).toBe(
      `probe FAILED: shared state redis://127.0.0.1:${closedPort}/0: ECONNREFUSED; fix: nothing listens at sharedState.url: the store is down, or the host or port is wrong`,
    );
  });

  it('probes the JWKS when jwt is set: its keys, or the cause and fix by jwt.jwksUri', async () => {
    const jwks = https.createServer({ cert: pki.certs.server.cert, key: pki.certs.server.key }, (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ keys: [{ kty: 'EC', crv: 'P-256', x: 'f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU', y: 'x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0', kid: 'k1' }] }));
    });
    await new Promise<void>((resolve) => jwks.listen(0, '127.0.0.1', resolve));
    try {
      const port = (jwks.address() as AddressInfo).port;
      const good = await checkProbe(config({ jwt: { issuer: 'https://as.example', jwksUri: `https://127.0.0.1:${port}/jwks` } }));
      expect(good.code, good.stdout + good.stderr).toBe(0);
      expect(probeLines(good.stdout)).toContain(`probe ok:     jwks https://127.0.0.1:${port}/jwks: 1 key`);
      const down = await checkProbe(config({ jwt: { issuer: 'https://as.example', jwksUri: `https://127.0.0.1:${closedPort}/jwks` } }));
      expect(down.code).toBe(1);
      expect(probeLines(down.stdout).find((l) => l.includes('jwks'))).toBe(
        `probe FAILED: jwks https://127.0.0.1:${closedPort}/jwks: ECONNREFUSED; fix: nothing listens at jwt.jwksUri: the AS is down, or the host or port is wrong`,
      );
    } finally {
      jwks.close();
    }
  });

  it('exits 2 without probing when the config fails check', async () => {
    const result = await checkProbe({ ...config(), workers: 'lots' });
    expect(result.code).toBe(2);
    expect(probeLines(result.stdout)).toEqual([]);
  });
});
