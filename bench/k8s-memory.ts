/**
 * Memory of `cnfguard run` as k8s/ deploys it, behind the Deployment's memory request and limit
 * (k8s/README.md): the config is k8s/config/cnfguard.yaml (its cache.maxEntries, workers and
 * everything else) with only the files, URLs and ports made local. The RSS (VmRSS, and the
 * high-water mark VmHWM) of the real process is read from /proc:
 *   1. idle, a few seconds after /readyz says ready;
 *   2. after `--tokens` (default: maxEntries) distinct certificate-bound tokens went through the TLS
 *      listener, each a cache miss introspected at an in-process AS (realistic answers), then idle.
 *
 * The fill is a burst (as fast as `--concurrency` clients go): the worst case, where V8 keeps the
 * heap pages the garbage of each introspection grew it into. Heap figures are cnfguard's own
 * process metrics (cnfguard_nodejs_heap_size_*_bytes).
 *
 *   node bench/k8s-memory.ts [--tokens N] [--concurrency 32] [--settle 30] [--node-flag=--max-old-space-size=192 ...]
 */
import { X509Certificate, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Agent, request } from 'undici';
import { parse, stringify } from 'yaml';
import { startEchoUpstream } from '../demo/echo-upstream.ts';
import { thumbprintS256 } from '../src/tls/certificates.ts';
import { generateDevCertificates } from '../src/tls/dev-certs.ts';
import { startCli } from './lib/cli-target.ts';

const ROOT = join(import.meta.dirname, '..');
const { values } = parseArgs({ options: { tokens: { type: 'string' }, concurrency: { type: 'string', default: '32' }, settle: { type: 'string', default: '30' }, 'node-flag': { type: 'string', multiple: true, default: [] } } });

function memoryOf(pid: number): { rssMiB: number; hwmMiB: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { rssMiB: Math.round((kb('VmRSS') / 1024) * 10) / 10, hwmMiB: Math.round((kb('VmHWM') / 1024) * 10) / 10 };
}

async function freePort(): Promise<number> {
  const server = https.createServer().listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const dir = mkdtempSync(join(tmpdir(), 'cnfguard-k8s-memory-'));
const certs = generateDevCertificates();
const file = (name: string, text: string) => {
  const path = join(dir, name);
  writeFileSync(path, text, { mode: 0o600 });
  return path;
};
const thumbprint = thumbprintS256(new X509Certificate(certs.clients.client1.cert).raw);

// The AS: every token is active and bound to client1, with the claims oidc-provider sends.
let asCalls = 0;
const as = https.createServer({ cert: certs.server.cert, key: certs.server.key }, (req, res) => {
  asCalls += 1;
  req.resume();
  req.on('end', () => {
    const now = Math.floor(Date.now() / 1000);
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ active: true, client_id: 'app', exp: now + 3600, iat: now, iss: 'https://as.example', scope: 'read write', token_type: 'Bearer', aud: 'https://rs.example/', jti: randomBytes(16).toString('base64url'), cnf: { 'x5t#S256': thumbprint } }));
  });
});
as.listen(0, '127.0.0.1');
await new Promise((resolve) => as.once('listening', resolve));
const upstream = await startEchoUpstream();

const config = parse(readFileSync(join(ROOT, 'k8s', 'config', 'cnfguard.yaml'), 'utf8')) as Record<string, Record<string, unknown>>;
const maxEntries = Number((config.introspection!.cache as { maxEntries: number }).maxEntries);
const tokens = Number(values.tokens ?? maxEntries);
const [port, adminPort] = [await freePort(), await freePort()];
config.listen = { ...config.listen, host: '127.0.0.1', port };
config.admin = { ...config.admin, host: '127.0.0.1', port: adminPort };
config.tls = { cert: file('tls.crt', certs.server.cert), key: file('tls.key', certs.server.key), clientCa: file('ca.crt', certs.ca.cert) };
// The per-peer introspection budget (50/s by default) would refuse one client's 100k new tokens
// with 429: it is turned off here, and only here, so that every token reaches the cache.
config.introspection = { ...config.introspection, budget: { perPeerPerSecond: 0, totalPerSecond: 0 }, url: `https://127.0.0.1:${(as.address() as AddressInfo).port}/introspect`, ca: file('as-ca.crt', certs.ca.cert), clientSecretFile: file('client-secret', 'secret\n') };
(config as Record<string, unknown>).upstream = upstream.url;
(config as Record<string, unknown>).logLevel = 'warn';
const configFile = file('cnfguard.yaml', stringify(config));

const guard = await startCli({ entry: join(ROOT, 'bin', 'cnfguard.js'), configFile, adminUrl: `http://127.0.0.1:${adminPort}`, cpus: undefined, nodeFlags: values['node-flag'], stdout: false });
try {
  await sleep(3000);
  if (guard.pids().length !== 1) throw new Error(`expected one process (workers: 1), found ${guard.pids().length}`);
  const heap = async () => {
    const text = await (await request(`http://127.0.0.1:${adminPort}/metrics`)).body.text();
    const mib = (name: string) => Math.round(Number(new RegExp(`^${name} (\\S+)`, 'm').exec(text)?.[1]) / 2 ** 20);
    return `heap used ${mib('cnfguard_nodejs_heap_size_used_bytes')} MiB of ${mib('cnfguard_nodejs_heap_size_total_bytes')} MiB`;
  };
  const idle = memoryOf(guard.pid);
  const heapIdle = await heap();
  const client = new Agent({ connect: { ca: certs.ca.cert, cert: certs.clients.client1.cert, key: certs.clients.client1.key }, connections: Number(values.concurrency) });
  const started = performance.now();
  let next = 0;
  let failures = 0;
  await Promise.all(
    Array.from({ length: Number(values.concurrency) }, async () => {
      while (next < tokens) {
        next += 1;
        const res = await request(`https://127.0.0.1:${port}/`, { dispatcher: client, headers: { authorization: `Bearer ${randomBytes(32).toString('base64url')}` } });
        await res.body.dump();
        if (res.statusCode !== 200) failures += 1;
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  const filled = memoryOf(guard.pid);
  const heapFilled = await heap();
  await sleep(Number(values.settle) * 1000);
  const settled = memoryOf(guard.pid);
  const heapSettled = await heap();
  const metrics = await (await request(`http://127.0.0.1:${adminPort}/metrics`)).body.text();
  const entries = /^cnfguard_token_cache_entries\{cache="active"\} (\d+)/m.exec(metrics)?.[1];
  await client.close();
  console.log(`cnfguard run, k8s/config/cnfguard.yaml (maxEntries ${maxEntries}), Node ${process.version}${values['node-flag'].length > 0 ? ` ${values['node-flag'].join(' ')}` : ''}, ${new Date().toISOString()}`);
  console.log(`idle after start: RSS ${idle.rssMiB} MiB (high-water ${idle.hwmMiB} MiB), ${heapIdle}`);
  console.log(`after ${tokens} new tokens (${Math.round(tokens / seconds)}/s, ${failures} failed, ${asCalls} AS calls, ${entries} cached): RSS ${filled.rssMiB} MiB (high-water ${filled.hwmMiB} MiB), ${heapFilled}`);
  console.log(`then ${values.settle} s idle: RSS ${settled.rssMiB} MiB (high-water ${settled.hwmMiB} MiB), ${heapSettled}`);
} finally {
  await guard.stop();
  await upstream.stop();
  as.close();
  rmSync(dir, { recursive: true, force: true });
}
