/**
 * The admin listener's index, /status and /config (issue 28) on a real started cnfguard: the index
 * lists every endpoint (HTML for a browser, JSON when asked), /status says what cnfguard knows
 * without probing (dependencies as last seen in traffic), /config is `check`'s output with the
 * secrets masked.
 */
import { createHash, X509Certificate } from 'node:crypto';
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml, stringify } from 'yaml';
import { startEchoUpstream, type EchoUpstream } from '../../demo/echo-upstream.ts';
import { thumbprintS256 } from '../../src/tls/certificates.ts';
import { VERSION } from '../../src/version.ts';
import { manualClock } from '../fixtures/clock.ts';
import { startIntrospectionStub, type IntrospectionStub } from '../fixtures/introspection-stub.ts';
import { captureOutput, exited, freePort } from '../fixtures/processes.ts';
import { createPki, curl, startGuard, type Guard, type Pki } from '../fixtures/stack.ts';
import { waitFor } from '../fixtures/wait.ts';

let pki: Pki;
let stub: IntrospectionStub;
let upstream: EchoUpstream;
let guard: Guard;
const clock = manualClock({ followRealTime: true });

interface Status {
  version: string;
  ready: boolean;
  uptimeSeconds: number;
  config: { file: string; sha256: string };
  routes: { name: string; match: unknown; methods: string[]; binding: string; validation: string; upstream: { url: string; ok?: boolean; detail?: string; lastSeen: string } }[];
  caches: { tokens: { active: number; negative: number; jwt: number }; openConnections: number };
  breaker: { state: string };
  authorizationServer: { url: string; ok?: boolean; detail?: string; lastSeen: string };
  jwks: unknown;
  sharedState: unknown;
}

const get = (path: string, accept?: string) => fetch(`${guard.started.adminUrl}${path}`, accept === undefined ? {} : { headers: { accept } });
const status = async () => (await (await get('/status')).json()) as Status;

beforeAll(async () => {
  pki = await createPki();
  stub = await startIntrospectionStub(pki.certs.server, { secret: 'very-secret-value' });
  upstream = await startEchoUpstream();
  const client1 = thumbprintS256(new X509Certificate(pki.certs.clients.client1.cert).raw);
  stub.answers.set('tok', { active: true, client_id: 'app', scope: 'read', token_type: 'Bearer', exp: Math.floor(Date.now() / 1000) + 600, cnf: { 'x5t#S256': client1 } });
  guard = await startGuard(
    pki,
    {
      listen: { host: '127.0.0.1', port: 0 },
      tls: { cert: pki.files.server.cert, key: pki.files.server.key },
      introspection: { url: stub.url, clientId: 'rs', clientSecret: 'very-secret-value', ca: pki.files.ca },
      upstream: upstream.url,
      admin: { host: '127.0.0.1', port: 0 },
      routes: [{ name: 'reports', pathPrefix: '/reports', binding: 'report-only', methods: ['mtls', 'dpop'] }],
    },
    { now: clock.now },
  );
});

afterAll(async () => {
  await guard?.stop();
  await upstream?.stop();
  await stub?.stop();
  await pki?.cleanup();
});

describe('/ (the index)', () => {
  it('lists every admin endpoint as JSON when asked', async () => {
    const res = await get('/', 'application/json');
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    const { endpoints } = (await res.json()) as { endpoints: { path: string; summary: string }[] };
    expect(endpoints.map((e) => e.path)).toEqual(['/', '/healthz', '/readyz', '/metrics', '/status', '/config']);
    for (const endpoint of endpoints) expect(endpoint.summary.length).toBeGreaterThan(5);
  });

  it('is an HTML page of links for a browser, and every link answers', async () => {
    const res = await get('/', 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8');
    expect(res.headers.get('content-type')).toMatch(/^text\/html/);
    const html = await res.text();
    const links = [...html.matchAll(/href="([^"]+)"/g)].map((m) => m[1]!);
    expect(links).toContain('/status');
    for (const link of links) expect((await get(link)).status, link).toBe(200);
  });

  it('docs/admin.md documents every endpoint the index lists, and the options nowhere else documented', async () => {
    const doc = readFileSync(join(import.meta.dirname, '..', '..', 'docs', 'admin.md'), 'utf8');
    const { endpoints } = (await (await get('/', 'application/json')).json()) as { endpoints: { path: string }[] };
    for (const { path } of endpoints) expect(doc, path).toContain(`| \`${path}\` |`);
    for (const topic of ['admin.upstreamCheck', '/readyz?upstream=1', '`error`', '`aborted`', 'check --probe', 'deprecatedMetrics']) expect(doc, topic).toContain(topic);
  });

  it('answers other methods than GET and HEAD with 405 and the methods it allows', async () => {
    for (const method of ['POST', 'PUT', 'DELETE', 'OPTIONS', 'PATCH']) {
      const res = await fetch(`${guard.started.adminUrl as string}/metrics`, { method });
      expect(res.status).toBe(405);
      expect(res.headers.get('allow')).toBe('GET, HEAD');
    }
  });

  it('answers an unknown path with 404 pointing at the index', async () => {
    const res = await get('/nope');
    expect(res.status).toBe(404);
    expect(await res.text()).toMatch(/\/ lists the admin endpoints/);
  });
});

describe('/status', () => {
  it('says the version, uptime, config file and its SHA-256, and the routes', async () => {
    const before = await status();
    clock.advance(90_000);
    const doc = await status();
    expect(doc.version).toBe(VERSION);
    expect(doc.ready).toBe(true);
    expect(doc.uptimeSeconds - before.uptimeSeconds).toBe(90);
    expect(doc.config.file).toBe(guard.configFile);
    expect(doc.config.sha256).toBe(createHash('sha256').update(readFileSync(guard.configFile)).digest('hex'));
    expect(doc.routes.map(({ name, match, methods, binding, validation }) => ({ name, match, methods, binding, validation }))).toEqual([
      { name: 'reports', match: { pathPrefix: '/reports' }, methods: ['mtls', 'dpop'], binding: 'report-only', validation: 'introspection' },
      { name: 'default', match: 'anything no route above matches', methods: ['mtls'], binding: 'required', validation: 'introspection' },
    ]);
    expect(doc.breaker).toEqual({ state: 'closed' });
    expect(doc.jwks).toBeNull();
    expect(doc.sharedState).toBeNull();
    expect(JSON.stringify(doc)).not.toContain('very-secret-value');
  });

  it('shows the AS and the upstream as last seen in traffic, never probing them itself', async () => {
    const calls = stub.calls();
    const idle = await status();
    expect(stub.calls(), '/status did not call the AS').toBe(calls);
    expect(idle.authorizationServer).toMatchObject({ url: stub.url, lastSeen: 'never' });
    expect(idle.routes[1]!.upstream).toMatchObject({ url: `${upstream.url}/`, lastSeen: 'never' });

    expect((await curl(pki, `${guard.started.url}/x`, { cert: pki.files.client1, token: 'tok' })).status).toBe(200);
    const doc = await status();
    expect(doc.authorizationServer).toMatchObject({ ok: true, detail: 'active' });
    expect(doc.routes[1]!.upstream).toMatchObject({ ok: true, detail: 'HTTP 200' });
    expect(doc.routes[0]!.upstream.lastSeen).toBe('never');
    expect(doc.caches.tokens.active).toBe(1);
  });

  it('follows the config file after a reload', async () => {
    const text = readFileSync(guard.configFile, 'utf8');
    writeFileSync(guard.configFile, `${text}\n# edited\n`);
    expect((await guard.app.reload()).config).toBe('applied');
    expect((await status()).config.sha256).toBe(createHash('sha256').update(`${text}\n# edited\n`).digest('hex'));
  });
});

describe('/config', () => {
  it('is the effective config as check prints it, the client secret masked', async () => {
    const res = await get('/config');
    expect(res.status).toBe(200);
    const text = await res.text();
    expect(text).not.toContain('very-secret-value');
    const config = parseYaml(text) as { introspection: { clientSecret: string; url: string }; upstream: string; routes: { name: string }[]; admin: { deprecatedMetrics: boolean } };
    expect(config.introspection.clientSecret).toBe('********');
    expect(config.introspection.url).toBe(stub.url);
    expect(config.upstream).toBe(upstream.url);
    expect(config.routes.map((r) => r.name)).toEqual(['reports']);
    expect(config.admin.deprecatedMetrics).toBe(true); // defaults filled in, as check prints them
  });
});

describe('with workers: the cluster primary serves the admin listener', () => {
  it('answers /status (workers, config, routes; per-worker state said to be per worker) and /config', async () => {
    const adminPort = await freePort();
    const file = join(pki.dir, 'cluster.yaml');
    writeFileSync(
      file,
      stringify({
        listen: { host: '127.0.0.1', port: 0 },
        tls: { cert: pki.files.server.cert, key: pki.files.server.key },
        introspection: { url: stub.url, clientId: 'rs', clientSecret: 'very-secret-value', ca: pki.files.ca, probeAtStartup: false },
        upstream: upstream.url,
        admin: { host: '127.0.0.1', port: adminPort },
        workers: 2,
      }),
    );
    // Named relative to the working directory, as an operator types it: /status says where it is.
    const child = spawn(process.execPath, [join(import.meta.dirname, '..', '..', 'bin', 'cnfguard.js'), 'run', '-c', 'cluster.yaml'], { stdio: ['ignore', 'pipe', 'pipe'], cwd: pki.dir });
    const output = captureOutput(child);
    try {
      const admin = `http://127.0.0.1:${adminPort}`;
      const doc = await waitFor(
        async () => {
          const res = await fetch(`${admin}/status`).catch(() => undefined);
          const body = res?.status === 200 ? ((await res.json()) as Status & { workers: { count: number; ready: number } }) : undefined;
          return body?.workers.ready === 2 ? body : undefined;
        },
        () => `the primary's /status with 2 ready workers: ${output.text().slice(-1500)}`,
        { timeoutMs: 20_000, intervalMs: 100 },
      );
      expect(doc.workers).toEqual({ count: 2, ready: 2 });
      expect(doc.config).toEqual({ file, sha256: createHash('sha256').update(readFileSync(file)).digest('hex') });
      expect(doc.routes.map((r) => r.name)).toEqual(['default']);
      expect(doc.caches).toMatch(/per worker/);
      expect(doc.authorizationServer.lastSeen).toMatch(/per worker/);
      const config = await (await fetch(`${admin}/config`)).text();
      expect(config).toContain('clientSecret: "********"');
      expect(config).not.toContain('very-secret-value');
    } finally {
      child.kill('SIGTERM');
      if (!(await exited(child, 15_000))) child.kill('SIGKILL');
    }
  }, 40_000);
});
