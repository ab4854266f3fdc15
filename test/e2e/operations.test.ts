/**
 * Running in production: certificate rotation the way Kubernetes does it (a `..data` symlink
 * swap) under a live keep-alive connection, config reload on SIGHUP, draining on SIGTERM,
 * several workers behind one port, and the access log.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { X509Certificate, generateKeyPairSync } from 'node:crypto';
import { once } from 'node:events';
import { createServer as createHttpServer } from 'node:http';
import { closeSync, constants, openSync, readSync } from 'node:fs';
import { mkdir, mkdtemp, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { Client } from 'undici';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { issueServerCertificate, type PemPair } from '../../src/tls/dev-certs.ts';
import { VERSION } from '../../src/version.ts';
import { baseConfig, curl, startDeployment, startGuard, type Deployment } from '../fixtures/stack.ts';
import { captureOutput, freePort } from '../fixtures/processes.ts';
import { waitFor } from '../fixtures/wait.ts';

/** The bound and pace these waits always had: processes start here, not only in-process servers. */
const POLL = { timeoutMs: 10_000, intervalMs: 50 };

const BIN = join(import.meta.dirname, '..', '..', 'bin', 'cnfguard.js');

let d: Deployment;
beforeAll(async () => {
  d = await startDeployment();
});
afterAll(async () => {
  await d?.stop();
});

function metric(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(series));
  return line === undefined ? 0 : Number(line.split(' ').pop());
}

async function metricsOf(adminUrl: string): Promise<string> {
  return (await fetch(`${adminUrl}/metrics`)).text();
}

/** The server certificate a new TLS connection sees. */
async function servedCertificate(port: number): Promise<X509Certificate> {
  const socket = tls.connect({ host: '127.0.0.1', port, ca: d.pki.certs.ca.cert });
  await once(socket, 'secureConnect');
  const cert = socket.getPeerX509Certificate() as X509Certificate;
  socket.destroy();
  return cert;
}

/** A Kubernetes-style secret volume: files are links through `..data`, swapped atomically. */
async function secretVolume(dir: string, pair: PemPair, generation: number): Promise<void> {
  const versioned = join(dir, `..${generation}`);
  await mkdir(versioned, { recursive: true });
  await writeFile(join(versioned, 'tls.crt'), pair.cert);
  await writeFile(join(versioned, 'tls.key'), pair.key);
  await symlink(`..${generation}`, join(dir, '..data_tmp'));
  await rename(join(dir, '..data_tmp'), join(dir, '..data'));
  if (generation === 1) {
    await symlink('..data/tls.crt', join(dir, 'tls.crt'));
    await symlink('..data/tls.key', join(dir, 'tls.key'));
  }
}

describe('certificate rotation', () => {
  it('a symlink swap reloads the certificate: the open keep-alive connection keeps working, new connections see the new one; bad files keep it', async () => {
    const volume = join(d.pki.dir, 'secret-volume');
    await mkdir(volume);
    const first = issueServerCertificate(d.pki.certs.ca, { dns: ['localhost'], ips: ['127.0.0.1'] });
    await secretVolume(volume, first, 1);
    const g = await startGuard(d.pki, baseConfig(d.pki, d.as, d.upstream, { tls: { cert: join(volume, 'tls.crt'), key: join(volume, 'tls.key') } }));
    const client = new Client(g.started.url, { connect: { ca: d.pki.certs.ca.cert, ...d.pki.certs.clients.client1 }, pipelining: 1 });
    let connects = 0;
    client.on('connect', () => connects++);
    try {
      const token = await d.tokenFor('client1');
      const call = async () => {
        const r = await client.request({ path: '/rotate', method: 'GET', headers: { authorization: `Bearer ${token}` } });
        await r.body.dump();
        return r.statusCode;
      };
      expect(await call()).toBe(200);
      expect((await servedCertificate(g.started.port)).serialNumber).toBe(new X509Certificate(first.cert).serialNumber);

      const second = issueServerCertificate(d.pki.certs.ca, { dns: ['localhost'], ips: ['127.0.0.1'] });
      await secretVolume(volume, second, 2);
      await waitFor(async () => (metric(await metricsOf(g.started.adminUrl as string), 'cnfguard_cert_reload_total{result="success"}') === 1 ? true : undefined), 'reload', POLL);
      expect((await servedCertificate(g.started.port)).serialNumber).toBe(new X509Certificate(second.cert).serialNumber);
      expect(await call()).toBe(200);
      expect(connects).toBe(1); // the same connection, never dropped

      // A key that does not match its certificate: counted as a failure, the second certificate stays.
      await secretVolume(volume, { cert: first.cert, key: second.key }, 3);
      await waitFor(async () => (metric(await metricsOf(g.started.adminUrl as string), 'cnfguard_cert_reload_total{result="failure"}') >= 1 ? true : undefined), 'failed reload', POLL);
      expect((await servedCertificate(g.started.port)).serialNumber).toBe(new X509Certificate(second.cert).serialNumber);
      const metrics = await metricsOf(g.started.adminUrl as string);
      expect(metric(metrics, 'cnfguard_certificate_not_after_seconds')).toBe(Math.floor(new Date(new X509Certificate(second.cert).validTo).getTime() / 1000));
      expect(g.logs.entries().some((e) => e.msg === 'certificate reload failed; keeping the current certificate')).toBe(true);
    } finally {
      await client.close();
      await g.stop();
    }
  });
  it('a certificate that has expired or is not valid yet is refused like a key that does not match; one served from the start gets a warning naming notAfter', async () => {
    const names = { dns: ['localhost'], ips: ['127.0.0.1'] };
    const volume = join(d.pki.dir, 'secret-volume-validity');
    await mkdir(volume);
    const valid = issueServerCertificate(d.pki.certs.ca, names);
    await secretVolume(volume, valid, 1);
    const g = await startGuard(d.pki, baseConfig(d.pki, d.as, d.upstream, { tls: { cert: join(volume, 'tls.crt'), key: join(volume, 'tls.key') } }));
    const failures = async () => metric(await metricsOf(g.started.adminUrl as string), 'cnfguard_cert_reload_total{result="failure"}');
    const refusals = () => g.logs.entries().filter((e) => e.msg === 'certificate reload failed; keeping the current certificate');
    try {
      expect(g.logs.entries().filter((e) => e.level === 'warn' && e.path === 'tls.cert')).toEqual([]);
      const expired = issueServerCertificate(d.pki.certs.ca, names, { notBefore: new Date('2020-01-01T00:00:00Z'), notAfter: new Date('2021-01-01T00:00:00Z') });
      await secretVolume(volume, expired, 2);
      await waitFor(async () => ((await failures()) >= 1 ? true : undefined), 'refused reload', POLL);
      expect((await servedCertificate(g.started.port)).serialNumber).toBe(new X509Certificate(valid.cert).serialNumber);
      expect(refusals()[0]).toMatchObject({
        level: 'error',
        reason: 'expired',
        notAfter: '2021-01-01T00:00:00Z',
        problems: [{ path: 'tls.cert', message: 'the new certificate expired on 2021-01-01T00:00:00Z (notAfter); clients that verify it refuse the connection' }],
      });

      const early = issueServerCertificate(d.pki.certs.ca, names, { notBefore: new Date('2999-01-01T00:00:00Z'), notAfter: new Date('2999-12-31T00:00:00Z') });
      await secretVolume(volume, early, 3);
      await waitFor(() => (refusals().some((e) => e.reason === 'not_yet_valid') ? true : undefined), 'refused reload', POLL);
      expect(refusals().find((e) => e.reason === 'not_yet_valid')).toMatchObject({ notBefore: '2999-01-01T00:00:00Z' });
      expect((await servedCertificate(g.started.port)).serialNumber).toBe(new X509Certificate(valid.cert).serialNumber);
      const metrics = await metricsOf(g.started.adminUrl as string);
      expect(metric(metrics, 'cnfguard_cert_reload_total{result="success"}')).toBe(0);
      expect(metric(metrics, 'cnfguard_certificate_not_after_seconds')).toBe(Math.floor(new Date(new X509Certificate(valid.cert).validTo).getTime() / 1000));

      // Started on the expired pair (nothing else to serve): it is served, with a warning.
      const stale = join(d.pki.dir, 'stale');
      await mkdir(stale);
      await writeFile(join(stale, 'tls.crt'), expired.cert);
      await writeFile(join(stale, 'tls.key'), expired.key);
      const h = await startGuard(d.pki, baseConfig(d.pki, d.as, d.upstream, { tls: { cert: join(stale, 'tls.crt'), key: join(stale, 'tls.key') } }));
      try {
        const warned = h.logs.entries().filter((e) => e.level === 'warn' && e.path === 'tls.cert');
        expect(warned).toMatchObject([{ reason: 'expired', notAfter: '2021-01-01T00:00:00Z', msg: 'the server certificate expired on 2021-01-01T00:00:00Z (notAfter); clients that verify it refuse the connection' }]);
      } finally {
        await h.stop();
      }
    } finally {
      await g.stop();
    }
  });
});

interface Running {
  child: ChildProcess;
  lines: () => Record<string, unknown>[];
  started: Record<string, unknown>;
}

async function runCnfguard(configFile: string, startedMessage = 'cnfguard started'): Promise<Running> {
  const child = spawn(process.execPath, [BIN, 'run', '--config', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
  const output = captureOutput(child);
  const lines = output.lines;
  const started = await waitFor(() => lines().find((l) => l.msg === startedMessage), startedMessage, { ...POLL, timeoutMs: 20_000 });
  return { child, lines, started };
}

/**
 * cnfguard with `shutdownGraceSeconds`, and a request to /`name` that its upstream holds for
 * `delayMs`, there already. (The answer is undefined when the request failed.)
 */
async function withRequestInFlight(name: string, shutdownGraceSeconds: number, delayMs: number): Promise<Running & { inFlight: Promise<Awaited<ReturnType<typeof curl>> | undefined> }> {
  const file = join(d.pki.dir, `${name}.yaml`);
  await writeFile(file, stringify(baseConfig(d.pki, d.as, d.upstream, { shutdownGraceSeconds })));
  const running = await runCnfguard(file);
  const token = await d.tokenFor('client1');
  const inFlight = curl(d.pki, `${running.started.listen as string}/${name}`, { cert: d.pki.files.client1, token, headers: [`x-echo-delay-ms: ${delayMs}`] }).catch(() => undefined);
  await waitFor(() => (d.upstream.requests.some((r) => r.url === `/${name}`) ? true : undefined), `the request to /${name} to reach the upstream`, POLL);
  return { ...running, inFlight };
}

describe('signals', () => {
  it('SIGHUP applies a changed config atomically and keeps the running one when the new file is bad', async () => {
    const file = join(d.pki.dir, 'hup.yaml');
    const config = (binding: string) => stringify(baseConfig(d.pki, d.as, d.upstream, { binding }));
    await writeFile(file, config('required'));
    const { child, lines, started } = await runCnfguard(file);
    try {
      const url = started.listen as string;
      const token = await d.unboundToken();
      expect((await curl(d.pki, `${url}/x`, { token })).status).toBe(401);
      await writeFile(file, config('optional'));
      child.kill('SIGHUP');
      await waitFor(() => lines().find((l) => l.msg === 'config reloaded'), 'config reloaded', POLL);
      expect((await curl(d.pki, `${url}/x`, { token })).status).toBe(200);

      await writeFile(file, 'upstream: [not, a, url]\n');
      child.kill('SIGHUP');
      const rejected = await waitFor(() => lines().find((l) => l.msg === 'config reload rejected; keeping the running config'), 'rejection', POLL);
      expect(JSON.stringify(rejected.problems)).toContain('upstream');
      expect((await curl(d.pki, `${url}/x`, { token })).status).toBe(200);
      const metrics = await metricsOf(started.admin as string);
      expect(metric(metrics, 'cnfguard_config_reload_total{result="applied"}')).toBe(1);
      expect(metric(metrics, 'cnfguard_config_reload_total{result="rejected"}')).toBe(1);
    } finally {
      child.kill('SIGKILL');
    }
  });

  for (const workers of [1, 2]) {
    it(`a SIGHUP while starting is held and applied once serving, not the end of the process (workers: ${workers})`, async () => {
      // Start-up waits for the JWKS (jwt:), which answers only once the SIGHUP is sent.
      let asked!: () => void;
      const jwksAsked = new Promise<void>((resolve) => (asked = resolve));
      let release!: () => void;
      const released = new Promise<void>((resolve) => (release = resolve));
      const jwks = createHttpServer((_req, res) => {
        asked();
        void released.then(() => res.end(JSON.stringify({ keys: [] })));
      });
      await new Promise<void>((resolve) => jwks.listen(0, '127.0.0.1', resolve));
      const file = join(d.pki.dir, `early-hup-${workers}.yaml`);
      const jwksUri = `http://127.0.0.1:${(jwks.address() as { port: number }).port}/jwks`;
      await writeFile(file, stringify(baseConfig(d.pki, d.as, d.upstream, { workers, jwt: { issuer: 'https://as.test', jwksUri, timeoutMs: 20_000 } })));
      const child = spawn(process.execPath, [BIN, 'run', '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] });
      const { lines } = captureOutput(child);
      try {
        await jwksAsked;
        child.kill('SIGHUP');
        release();
        await waitFor(() => lines().find((l) => l.msg === (workers === 1 ? 'cnfguard started' : 'cnfguard cluster started')), 'started', { ...POLL, timeoutMs: 20_000 });
        // Each serving process applies it once.
        await waitFor(() => lines().filter((l) => l.msg === 'config reloaded').length === workers || undefined, 'config reloaded', POLL);
        expect(child.exitCode).toBeNull();
        expect(child.signalCode).toBeNull();
      } finally {
        child.kill('SIGKILL');
        jwks.closeAllConnections();
        jwks.close();
      }
    });
  }

  it('SIGTERM drains: readyz turns 503 at once, the slow in-flight request completes, exit 0', async () => {
    const { child, started, lines, inFlight: slow } = await withRequestInFlight('slow', 10, 1500);
    const exited = once(child, 'exit');
    child.kill('SIGTERM');
    const readyz = await waitFor(async () => {
      const status = (await fetch(`${started.admin as string}/readyz`)).status;
      return status === 503 ? status : undefined;
    }, 'readyz 503', { ...POLL, timeoutMs: 1000 });
    expect(readyz).toBe(503);
    const answer = await slow;
    expect(answer?.status).toBe(200);
    expect(answer?.headers.connection).toBe('close');
    const [code] = (await exited) as [number];
    expect(code).toBe(0);
    expect(lines().some((l) => l.msg === 'draining')).toBe(true);
  });
  it('SIGTERM with a request its upstream has not answered: the process ends when the grace period does', async () => {
    const { child, lines, inFlight: hung } = await withRequestInFlight('hung', 1, 20_000);
    try {
      const exited = once(child, 'exit');
      const signalled = performance.now();
      child.kill('SIGTERM');
      expect(await exited).toEqual([0, null]);
      // The grace period, and what closing takes after it; not the upstream's 20 s.
      expect(performance.now() - signalled).toBeLessThan(4000);
      expect(lines().some((l) => l.msg === 'cnfguard stopped')).toBe(true);
      await hung;
    } finally {
      child.kill('SIGKILL');
    }
  });
  it('a SIGINT while draining after SIGTERM ends the process at once, by that signal', async () => {
    const { child, lines, inFlight: slow } = await withRequestInFlight('slower', 30, 10_000);
    try {
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      await waitFor(() => lines().find((l) => l.msg === 'draining'), 'draining', POLL);
      const signalled = performance.now();
      child.kill('SIGINT');
      expect(await exited).toEqual([null, 'SIGINT']);
      expect(performance.now() - signalled).toBeLessThan(2000);
      await slow;
    } finally {
      child.kill('SIGKILL');
    }
  });
});

describe('a stdout nobody reads', () => {
  /** cnfguard with a FIFO as stdout whose read end stays open (so writes do not fail with EPIPE) and is not read until the test says. */
  async function withStuckStdout(settings: Record<string, unknown>, body: (run: { child: ChildProcess; listen: number; admin: number; reader: number }) => Promise<void>): Promise<void> {
    // Free ports are picked before cnfguard binds them, and other test files pick theirs meanwhile:
    // a start that lost that race (EADDRINUSE) is tried again on fresh ports.
    for (let attempt = 1; ; attempt++) {
      const dir = await mkdtemp(join(tmpdir(), 'cnfguard-stuck-stdout-'));
      const fifo = join(dir, 'stdout');
      execFileSync('mkfifo', [fifo]);
      const reader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
      const writer = openSync(fifo, 'w');
      const [listen, admin] = [await freePort(), await freePort()];
      const file = join(dir, 'stuck.yaml');
      await writeFile(file, stringify(baseConfig(d.pki, d.as, d.upstream, { ...settings, listen: { host: '127.0.0.1', port: listen }, admin: { host: '127.0.0.1', port: admin } })));
      const child = spawn(process.execPath, [BIN, 'run', '--config', file], { stdio: ['ignore', writer, 'pipe'], detached: true });
      closeSync(writer);
      let stderr = '';
      child.stderr?.setEncoding('utf8').on('data', (c: string) => (stderr = (stderr + c).slice(-3000)));
      let retry = false;
      try {
        const ready = await waitFor(async () => ((await fetch(`http://127.0.0.1:${admin}/readyz`).catch(() => undefined))?.status === 200 ? 'ready' : child.exitCode !== null || child.signalCode !== null ? 'exited' : undefined), 'readyz 200', { ...POLL, timeoutMs: 20_000 }).catch((err: Error) => err.message);
        if (ready !== 'ready') {
          // Say why: whether the process lives, and the lines it wrote (the pipe is not read until now).
          const buffer = Buffer.alloc(1 << 16);
          let lines = '';
          try {
            lines = buffer.subarray(0, readSync(reader, buffer)).toString('utf8');
          } catch {
            // EAGAIN: nothing written
          }
          const output = `${lines.slice(-3000)}\n${stderr}`;
          if (attempt < 3 && (output.includes('EADDRINUSE') || output.includes('already in use'))) retry = true;
          else throw new Error(`not ready (${ready}); exit ${String(child.exitCode)} ${String(child.signalCode)}; stdout and stderr: ${output}`);
        } else await body({ child, listen, admin, reader });
      } finally {
        if (child.pid !== undefined && child.exitCode === null) process.kill(-child.pid, 'SIGKILL');
        closeSync(reader);
        await rm(dir, { recursive: true, force: true });
      }
      if (!retry) return;
    }
  }

  /** `count` refused requests with 7 KB paths: an access line of ~7.2 KB each. */
  async function longLines(listen: number, count: number): Promise<void> {
    const client = new Client(`https://127.0.0.1:${listen}`, { connect: { ca: d.pki.certs.ca.cert }, pipelining: 8 });
    const path = `/${'p'.repeat(7000)}`;
    const statuses = await Promise.all(Array.from({ length: count }, async () => {
      const r = await client.request({ path, method: 'GET' });
      await r.body.dump();
      return r.statusCode;
    }));
    await client.close();
    expect(new Set(statuses)).toEqual(new Set([401]));
  }

  // A log shipper that stopped reading: the pipe fills, every write gets EAGAIN. Lines wait, the
  // proxy keeps serving, and a SIGTERM must still end the process (it used to retry for ever).
  for (const workers of [1, 2]) {
    it(`SIGTERM still ends the process (workers: ${workers}), with the lines the pipe took`, async () => {
      await withStuckStdout({ workers }, async ({ child, listen, reader }) => {
        // More access lines than a pipe holds (64 KiB).
        await longLines(listen, 40);
        const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error('still running 15 s after SIGTERM')), 15_000);
          child.once('exit', (c, s) => {
            clearTimeout(timer);
            resolve([c, s]);
          });
          child.kill('SIGTERM');
        });
        expect([code, signal]).toEqual([0, null]);
        // What the pipe took is whole lines from the start: the first is the start-up's.
        const taken = Buffer.alloc(1 << 17);
        const text = taken.subarray(0, readSync(reader, taken)).toString('utf8');
        // Full: a pipe holds 64 KiB in 16 pages, and a write that does not fit in what is left gets
        // EAGAIN, so it reads full somewhat under 64 KiB (57,967 bytes in one run), far from the
        // ~290 KB of lines written.
        expect(text.length).toBeGreaterThan(40_000);
        expect(JSON.parse(text.slice(0, text.indexOf('\n'))).service).toBe('cnfguard');
      });
    });
  }

  // Meanwhile the lines must not grow the process until it is killed for its memory: past
  // limits.logBufferBytes they are dropped, counted, and the loss is said once stdout takes lines again.
  it('past limits.logBufferBytes, lines are dropped and counted, and the count is logged once stdout reads again', async () => {
    await withStuckStdout({ limits: { logBufferBytes: 65_536 } }, async ({ listen, admin, reader }) => {
      const sent = 120; // ~860 KB of access lines against ~64 KiB of pipe, the 64 KiB bound and a 32 KiB batch
      await longLines(listen, sent);
      const dropped = metric(await metricsOf(`http://127.0.0.1:${admin}`), 'cnfguard_log_lines_dropped_total');
      expect(dropped).toBeGreaterThan(sent / 2);
      expect(dropped).toBeLessThan(sent);
      // The shipper reads again: what was kept arrives, then the warning with the count.
      let text = '';
      const chunk = Buffer.alloc(1 << 16);
      const readAll = (): string => {
        for (;;) {
          let n: number;
          try {
            n = readSync(reader, chunk);
          } catch (err) {
            if ((err as NodeJS.ErrnoException).code === 'EAGAIN') return text;
            throw err;
          }
          if (n === 0) return text;
          text += chunk.subarray(0, n).toString('latin1');
        }
      };
      // Each warning says what was lost since the one before (a write that got through between two
      // losses says so early, and the last loss is told at the next write): at least one, none
      // counting more than the counter says in the end (lines may still be lost after the scrape
      // above, while the pipe is drained).
      const warnings = (): Record<string, unknown>[] => readAll().split('\n').filter((l) => l.includes('"log lines dropped')).map((l) => JSON.parse(l) as Record<string, unknown>);
      await waitFor(() => warnings().length > 0 || undefined, 'a dropped-lines warning', POLL);
      for (const warning of warnings()) expect(warning).toMatchObject({ level: 'warn', bufferBytes: 65_536, droppedLines: expect.any(Number) as number });
      const finally_ = metric(await metricsOf(`http://127.0.0.1:${admin}`), 'cnfguard_log_lines_dropped_total');
      expect(finally_).toBeGreaterThanOrEqual(dropped);
      expect(warnings().reduce((sum, w) => sum + (w.droppedLines as number), 0)).toBeLessThanOrEqual(finally_);
      // Every request has its line or is among the lines counted as dropped.
      const accessLines = text.split('\n').filter((l) => l.startsWith('{') && (JSON.parse(l) as { msg?: string }).msg === 'request');
      expect(accessLines.length).toBeLessThan(sent);
      expect(accessLines.length + finally_).toBeGreaterThanOrEqual(sent);
    });
  });
});

describe('workers', () => {
  it('a replaced worker signs assertions with the key the primary publishes, whatever the key file holds now', async () => {
    const keyFile = join(d.pki.dir, 'workers-assertion.key');
    const newKey = () => generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
    await writeFile(keyFile, newKey(), { mode: 0o600 });
    const file = join(d.pki.dir, 'workers-assertion.yaml');
    await writeFile(file, stringify(baseConfig(d.pki, d.as, d.upstream, { workers: 2, assertion: { keyFile, issuer: 'https://cnfguard.test', audience: 'https://app.test' } })));
    const { child, lines, started } = await runCnfguard(file, 'cnfguard cluster started');
    try {
      const admin = started.admin as string;
      const token = await d.tokenFor('client1');
      const published = async (): Promise<string[]> => ((await (await fetch(`${admin}/jwks.json`)).json()) as { keys: { kid: string }[] }).keys.map((k) => k.kid);
      const kidsSigning = async (count: number): Promise<Set<string>> => {
        const kids = new Set<string>();
        for (let i = 0; i < count; i++) {
          expect((await curl(d.pki, `${started.listen as string}/signed`, { cert: d.pki.files.client1, token })).status).toBe(200);
          const assertion = d.upstream.requests.findLast((r) => r.url === '/signed')?.headers['x-auth-assertion'] as string;
          kids.add((JSON.parse(Buffer.from(assertion.split('.')[0] as string, 'base64url').toString()) as { kid: string }).kid);
        }
        return kids;
      };
      const [kid] = await published();
      expect(await kidsSigning(8)).toEqual(new Set([kid]));
      const replaceOneWorker = async (): Promise<void> => {
        const exited = lines().filter((l) => l.msg === 'worker exited; starting another').length;
        process.kill(lines().findLast((l) => l.msg === 'request')?.pid as number, 'SIGKILL');
        await waitFor(() => lines().filter((l) => l.msg === 'worker exited; starting another').length > exited || undefined, 'worker replaced', POLL);
        await waitFor(async () => (await fetch(`${admin}/readyz`)).status === 200 || undefined, 'readyz 200 again', { ...POLL, timeoutMs: 20_000 });
      };
      // The next key staged in the file, no SIGHUP yet: a worker that starts now still signs with the published key.
      await writeFile(keyFile, newKey(), { mode: 0o600 });
      await replaceOneWorker();
      expect(await kidsSigning(12)).toEqual(new Set([kid]));
      // A file that is no key at all: the replacement starts all the same (no crash loop), with the key in force.
      await writeFile(keyFile, 'not a key\n');
      await replaceOneWorker();
      expect(await kidsSigning(12)).toEqual(new Set([kid]));
      expect(await published()).toEqual([kid]);
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('workers judge by the config the primary read: a replaced worker, a file rewritten without SIGHUP, a rejected file', async () => {
    const file = join(d.pki.dir, 'workers-reload.yaml');
    const config = (binding: string) => stringify(baseConfig(d.pki, d.as, d.upstream, { binding, workers: 2 }));
    await writeFile(file, config('required'));
    const { child, lines, started } = await runCnfguard(file, 'cnfguard cluster started');
    try {
      const url = started.listen as string;
      const admin = started.admin as string;
      const token = await d.unboundToken();
      const statuses = async (count = 12): Promise<number[]> => {
        const seen = new Set<number>();
        for (let i = 0; i < count; i++) seen.add((await curl(d.pki, `${url}/x`, { token })).status);
        return [...seen];
      };
      const count = (msg: string): number => lines().filter((l) => l.msg === msg).length;
      const replaceOneWorker = async (): Promise<void> => {
        const exited = count('worker exited; starting another');
        const worker = lines().findLast((l) => l.msg === 'request')?.pid as number;
        process.kill(worker, 'SIGKILL');
        await waitFor(() => count('worker exited; starting another') > exited || undefined, 'worker replaced', POLL);
        await waitFor(async () => (await fetch(`${admin}/readyz`)).status === 200 || undefined, 'readyz 200 again', { ...POLL, timeoutMs: 20_000 });
      };
      expect(await statuses()).toEqual([401]);

      await writeFile(file, config('optional'));
      child.kill('SIGHUP');
      await waitFor(() => count('config reloaded') === 2 || undefined, 'both workers reloaded', POLL);
      expect(await statuses()).toEqual([200]);
      // One SIGHUP counts once, not once per worker (counted before a worker is replaced: a new one starts at 0).
      expect(metric(await metricsOf(admin), 'cnfguard_config_reload_total{result="applied"}')).toBe(1);

      // The file changes back with no SIGHUP, and a worker dies: its replacement judges as the other does.
      await writeFile(file, config('required'));
      await replaceOneWorker();
      const before = lines().length;
      expect(await statuses(16)).toEqual([200]);
      expect(new Set(lines().slice(before).filter((l) => l.msg === 'request').map((l) => l.pid)).size).toBe(2);

      // A bad file: the primary says why, once; the workers keep the config, and a replaced one starts with it.
      await writeFile(file, 'upstream: [not, a, url]\n');
      child.kill('SIGHUP');
      await waitFor(() => count('config reload rejected; keeping the running config') || undefined, 'rejection', POLL);
      await waitFor(async () => metric(await metricsOf(admin), 'cnfguard_config_reload_total{result="rejected"}') === 1 || undefined, 'the rejection counted once', POLL);
      await replaceOneWorker();
      expect(await statuses()).toEqual([200]);
      expect(count('config reload rejected; keeping the running config')).toBe(1);
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('workers: 2 serve one port, and the admin endpoint sums both workers', async () => {
    const file = join(d.pki.dir, 'workers.yaml');
    await writeFile(file, stringify(baseConfig(d.pki, d.as, d.upstream, { workers: 2 })));
    const { child, started, lines } = await runCnfguard(file, 'cnfguard cluster started');
    try {
      const token = await d.tokenFor('client1');
      const requests = 16;
      for (let i = 0; i < requests; i++) {
        expect((await curl(d.pki, `${started.listen as string}/w${i}`, { cert: d.pki.files.client1, token })).status).toBe(200);
      }
      const served = lines().filter((l) => l.msg === 'request');
      expect(new Set(served.map((l) => l.pid)).size).toBe(2);
      const metrics = await metricsOf(started.admin as string);
      expect(metric(metrics, 'cnfguard_requests_total{decision="allow",reason="bound",route="default"}')).toBe(requests);
      expect(metric(metrics, 'cnfguard_responses_total{route="default",status="200"}')).toBe(requests);
      expect(metric(metrics, 'cnfguard_request_duration_seconds_count{route="default"}')).toBe(requests);
      // One build, not one per worker summed: aggregator 'first'.
      expect(metrics.split('\n').filter((l) => l.startsWith('cnfguard_build_info{'))).toEqual([`cnfguard_build_info{version="${VERSION}",node_version="${process.version}"} 1`]);
      expect((await fetch(`${started.admin as string}/readyz`)).status).toBe(200);
      const exited = once(child, 'exit');
      const signalled = performance.now();
      child.kill('SIGTERM');
      expect(((await exited) as [number])[0]).toBe(0);
      // Idle workers drain at once; the bound is generous for a loaded 2-core machine (~1 s is usual).
      const exitMs = performance.now() - signalled;
      console.log(`idle cluster (workers: 2) exited ${Math.round(exitMs)} ms after SIGTERM`);
      expect(exitMs).toBeLessThan(3000);
      expect(lines().filter((l) => l.msg === 'cnfguard stopped').length).toBe(3); // two workers and the primary
    } finally {
      child.kill('SIGKILL');
    }
  });
});

it('one access log line per request, with the fields operators need and no token or query', async () => {
  const g = await startGuard(d.pki, baseConfig(d.pki, d.as, d.upstream));
  try {
    const token = await d.tokenFor('client1');
    await curl(d.pki, `${g.started.url}/orders/7?secret=abc`, { cert: d.pki.files.client1, token });
    const line = g.logs.entries().find((e) => e.msg === 'request' && e.path === '/orders/7');
    expect(line).toMatchObject({ method: 'GET', status: 200, decision: 'allow', reason: 'bound', route: 'default', clientId: 'app', upstreamStatus: 200 });
    expect(line?.reqId).toMatch(/^[0-9a-f-]{36}$/);
    expect(line?.thumbprint).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(typeof line?.latencyMs).toBe('number');
    expect(Number.isNaN(Date.parse(String(line?.time)))).toBe(false);
    expect(g.logs.text()).not.toContain(token);
    expect(g.logs.text()).not.toContain('secret=abc');
  } finally {
    await g.stop();
  }
});

it('a reload that adds claim headers says where and that it needs a restart, and /config does not show them in force', async () => {
  const routes = (claimHeaders?: Record<string, string>) => [{ name: 'api', pathPrefix: '/api', ...(claimHeaders !== undefined && { claimHeaders }) }];
  const g = await startGuard(d.pki, baseConfig(d.pki, d.as, d.upstream, { routes: routes() }));
  try {
    await writeFile(g.configFile, stringify(baseConfig(d.pki, d.as, d.upstream, { routes: routes({ 'x-cid': 'claims.client_id' }) })));
    const report = await g.app.reload();
    expect(report).toMatchObject({ config: 'applied', restartRequired: ['routes[0].claimHeaders'] });
    expect(g.logs.entries().find((e) => e.msg === 'changed settings take effect after a restart')).toMatchObject({ keys: ['routes[0].claimHeaders'] });
    // Answers were kept without their claims: no mapping applies, so none is shown as in force.
    const token = await d.tokenFor('client1');
    expect((await curl(d.pki, `${g.started.url}/api/claims`, { cert: d.pki.files.client1, token })).status).toBe(200);
    expect(d.upstream.requests.findLast((r) => r.url === '/api/claims')?.headers['x-cid']).toBeUndefined();
    expect(await (await fetch(`${g.started.adminUrl as string}/config`)).text()).not.toContain('x-cid');
  } finally {
    await g.stop();
  }
});

describe('SIGHUP reload: what applies live and what is reported as needing a restart', () => {
  const forwardedCert = () => [`x-client-cert: ${encodeURIComponent(d.pki.certs.clients.client1.cert)}`];

  it('removing a trusted proxy stops believing its certificate header at once, and is not reported as restart-required', async () => {
    const trustedProxies = [{ cidrs: ['127.0.0.0/8'], header: 'x-client-cert', format: 'pem-urlencoded' }];
    const g = await startGuard(d.pki, baseConfig(d.pki, d.as, d.upstream, { trustedProxies }));
    try {
      const token = await d.tokenFor('client1');
      // No TLS client certificate: the binding can only be met by the forwarded header.
      expect((await curl(d.pki, `${g.started.url}/tp`, { token, headers: forwardedCert() })).status).toBe(200);
      await writeFile(g.configFile, stringify(baseConfig(d.pki, d.as, d.upstream)));
      const report = await g.app.reload();
      expect(report).toMatchObject({ config: 'applied', restartRequired: [] });
      const after = await curl(d.pki, `${g.started.url}/tp`, { token, headers: forwardedCert() });
      expect(after.status).toBe(401);
      expect(after.json()).toMatchObject({ error_description: 'the access token is bound to a client certificate, but none was presented' });
      // The upstream may still trust that header: a client that sends it never gets it through.
      const withCert = await curl(d.pki, `${g.started.url}/tp`, { token, cert: d.pki.files.client1, headers: forwardedCert() });
      expect(withCert.status).toBe(200);
      expect(withCert.json<{ headers: Record<string, string> }>().headers['x-client-cert']).toBeUndefined();
    } finally {
      await g.stop();
    }
  });

  it('a changed listen address, admin address, worker count or AS URL is reported as restart-required and keeps serving as started', async () => {
    const g = await startGuard(d.pki, baseConfig(d.pki, d.as, d.upstream));
    try {
      await writeFile(
        g.configFile,
        stringify(
          baseConfig(d.pki, d.as, d.upstream, {
            listen: { host: '127.0.0.1', port: 1 },
            admin: { host: '127.0.0.1', port: 2 },
            workers: 2,
            introspection: { url: 'https://127.0.0.1:1/introspect', clientId: 'rs', clientSecret: 'rs-secret', ca: d.pki.files.ca, timeoutMs: 1500 },
          }),
        ),
      );
      const report = await g.app.reload();
      expect(report.config).toBe('applied');
      expect([...report.restartRequired].sort()).toEqual(['admin', 'introspection.url', 'listen', 'workers']);
      const token = await d.tokenFor('client1');
      expect((await curl(d.pki, `${g.started.url}/still`, { cert: d.pki.files.client1, token })).status).toBe(200);
    } finally {
      await g.stop();
    }
  });

  it('shutdownGraceSeconds and introspection.issuer apply live; limits.headerBytes is reported as restart-required', async () => {
    const g = await startGuard(d.pki, baseConfig(d.pki, d.as, d.upstream, { shutdownGraceSeconds: 20 }));
    let stopped = false;
    try {
      const token = await d.tokenFor('client1');
      await writeFile(
        g.configFile,
        stringify(
          baseConfig(d.pki, d.as, d.upstream, {
            shutdownGraceSeconds: 3,
            limits: { headerBytes: 32768 },
            introspection: { url: d.as.introspectionUrl, clientId: 'rs', clientSecret: 'rs-secret', ca: d.pki.files.ca, timeoutMs: 1500, issuer: 'https://another-as.example' },
          }),
        ),
      );
      const report = await g.app.reload();
      expect(report).toMatchObject({ config: 'applied', restartRequired: ['limits.headerBytes'] });
      const refused = await curl(d.pki, `${g.started.url}/iss`, { cert: d.pki.files.client1, token });
      expect(refused.status).toBe(401);
      expect(refused.json()).toMatchObject({ error_description: 'the access token was not issued by the expected authorization server' });
      stopped = true;
      await g.app.stop();
      expect(g.logs.entries().find((e) => e.msg === 'draining')).toMatchObject({ graceMs: 3000 });
    } finally {
      if (!stopped) await g.stop();
    }
  });
});
