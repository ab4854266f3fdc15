/**
 * An introspection.url that is not what it should be: an address that accepts TCP but never
 * completes TLS (a wrong port, a half-dead load balancer), and the AS's token endpoint instead of
 * its introspection endpoint (the URL the docs show for getting tokens). Real processes and
 * servers on 127.0.0.1: the demo AS (oidc-provider) for both of its endpoints.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { TOKEN_ENDPOINT_HINT } from '../../src/introspection/client.ts';
import { createHttpJwksFetch } from '../../src/validation/jwt.ts';
import { baseConfig, curl, startDeployment, startGuard, type Deployment } from '../fixtures/stack.ts';
import { waitFor } from '../fixtures/wait.ts';

const BIN = join(import.meta.dirname, '..', '..', 'bin', 'cnfguard.js');

let d: Deployment;
/** Accepts TCP connections and never says a word: no TLS handshake ever completes. */
let silent: Server;
let silentUrl: string;
const sockets = new Set<Socket>();

beforeAll(async () => {
  d = await startDeployment();
  silent = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
  });
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  silentUrl = `https://127.0.0.1:${(silent.address() as AddressInfo).port}`;
}, 30_000);
afterAll(async () => {
  for (const socket of sockets) socket.destroy();
  silent?.close();
  await d?.stop();
});

function checkProbe(config: Record<string, unknown>): Promise<{ code: number | null; stdout: string; ms: number }> {
  const file = join(d.pki.dir, `as-endpoint-${randomBytes(4).toString('hex')}.yaml`);
  const started = performance.now();
  return writeFile(file, stringify(config)).then(
    () =>
      new Promise((resolve) => {
        const child = spawn(process.execPath, [BIN, 'check', '--probe', '-c', file], { stdio: ['ignore', 'pipe', 'pipe'] });
        let stdout = '';
        child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
        child.on('close', (code) => resolve({ code, stdout, ms: performance.now() - started }));
      }),
  );
}

describe('an AS address that accepts TCP but never completes TLS', () => {
  const timeoutMs = 700;

  it('a request is refused 503 (introspection timed out) within about introspection.timeoutMs, not undici’s 10 s connect timeout', async () => {
    const guard = await startGuard(d.pki, baseConfig(d.pki, d.as, d.upstream, { introspection: { url: `${silentUrl}/introspect`, clientId: 'rs', clientSecret: 'rs-secret', ca: d.pki.files.ca, timeoutMs } }));
    try {
      const token = await d.tokenFor('client1');
      const started = performance.now();
      const response = await curl(d.pki, `${guard.started.url}/slow-as`, { cert: d.pki.files.client1, token });
      const ms = performance.now() - started;
      expect(response.status).toBe(503);
      expect(guard.logs.text()).toContain('introspection timed out');
      expect(ms).toBeLessThan(timeoutMs + 1500);
    } finally {
      await guard.stop();
    }
  });

  it('check --probe names the timeout within about introspection.timeoutMs', async () => {
    const result = await checkProbe(baseConfig(d.pki, d.as, d.upstream, { introspection: { url: `${silentUrl}/introspect`, clientId: 'rs', clientSecret: 'rs-secret', ca: d.pki.files.ca, timeoutMs } }));
    expect(result.code).toBe(1);
    expect(result.stdout).toMatch(/probe FAILED: introspection https:\/\/127\.0\.0\.1:\d+\/introspect: timeout/);
    // The process's own start-up (~1-2 s here) plus the timeout; 10.8 s before.
    expect(result.ms).toBeLessThan(7000);
  });

  it('the JWKS fetch gives up within its timeoutMs as well', async () => {
    const jwks = createHttpJwksFetch({ url: `${silentUrl}/jwks`, ca: d.pki.certs.ca.cert, timeoutMs: 400, maxBytes: 100_000 });
    try {
      const started = performance.now();
      await expect(jwks.fetch()).rejects.toMatchObject({ name: 'TimeoutError' });
      expect(performance.now() - started).toBeLessThan(1400);
    } finally {
      await jwks.close();
    }
  });
});

describe("introspection.url at the AS's token endpoint", () => {
  const config = () => baseConfig(d.pki, d.as, d.upstream, { introspection: { url: d.as.tokenUrl, clientId: 'rs', clientSecret: 'rs-secret', ca: d.pki.files.ca, probeAtStartup: true } });

  it('check --probe fails, saying it answered like a token endpoint', async () => {
    const result = await checkProbe(config());
    expect(result.code).toBe(1);
    const line = result.stdout.split('\n').find((l) => l.includes(' introspection '));
    expect(line).toBe(`probe FAILED: introspection ${d.as.tokenUrl}: HTTP 400 invalid_request; fix: ${TOKEN_ENDPOINT_HINT}`);
  });

  it("the introspection endpoint itself still passes check --probe", async () => {
    const result = await checkProbe(baseConfig(d.pki, d.as, d.upstream));
    expect(result.stdout).toMatch(/probe ok: +introspection https:\/\/\S+: answered in \d+ ms/);
  });

  it('run warns at start-up, and a valid token gets 503 introspection_misconfigured with a warning naming the AS error, not 401 token_inactive', async () => {
    const guard = await startGuard(d.pki, config());
    try {
      await waitFor(() => guard.logs.entries().find((l) => l.msg?.toString().startsWith('introspection probe failed')), 'the start-up probe warning', { timeoutMs: 10_000, intervalMs: 50 });
      const probe = guard.logs.entries().find((l) => l.msg?.toString().startsWith('introspection probe failed'));
      expect(probe).toMatchObject({ level: 'warn', cause: 'HTTP 400 invalid_request', check: TOKEN_ENDPOINT_HINT });
      const token = await d.tokenFor('client1');
      const response = await curl(d.pki, `${guard.started.url}/through-token-endpoint`, { cert: d.pki.files.client1, token });
      expect(response.status).toBe(503);
      expect(d.upstream.requests.some((r) => r.url === '/through-token-endpoint')).toBe(false);
      const access = guard.logs.entries().find((l) => l.path === '/through-token-endpoint');
      expect(access).toMatchObject({ status: 503, reason: 'introspection_misconfigured' });
      expect(guard.logs.entries().find((l) => l.asError !== undefined)).toMatchObject({ level: 'warn', status: 400, asError: 'invalid_request', hint: TOKEN_ENDPOINT_HINT });
      expect(guard.logs.text()).not.toContain(token);
    } finally {
      await guard.stop();
    }
  });
});
