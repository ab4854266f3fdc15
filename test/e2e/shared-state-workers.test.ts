/**
 * `replayDurability: replica` and the `local` fallback under `workers: 2`, through the real CLI in
 * a child process, against a real redis-server with no replica:
 * - store up, nobody to acknowledge: every worker's write waits for a replica (WAIT answers 0), so
 *   each proof falls back (`onUnavailable: local`) and counts as `replica_unacked`;
 * - store down: the fallback is the cluster primary's one store, so N workers still accept a proof
 *   once (each worker's own store would accept it once per worker).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { generateKeyPair, generateProof, type KeyPair } from 'dpop';
import { Agent, request } from 'undici';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { captureOutput, running } from '../fixtures/processes.ts';
import { findRedisServer, startRedis, type RedisServer } from '../fixtures/redis.ts';
import { baseConfig, startDeployment, type Deployment } from '../fixtures/stack.ts';
import { waitFor } from '../fixtures/wait.ts';

const BIN = join(import.meta.dirname, '..', '..', 'bin', 'cnfguard.js');
/** Fresh connections per check: round-robin over two workers puts half of them on each. */
const CONNECTIONS = 8;
const available = findRedisServer() !== undefined;

let d: Deployment;
let redis: RedisServer;
let key: KeyPair;
let token: string;
let child: ChildProcess | undefined;
let url = '';
let adminUrl = '';
let lines: () => Record<string, unknown>[] = () => [];

async function send(proof: string): Promise<number> {
  const agent = new Agent({ connect: { ca: d.pki.certs.ca.cert }, pipelining: 0 });
  try {
    const res = await request(`${url}/dpop/workers`, { headers: { authorization: `DPoP ${token}`, dpop: proof }, dispatcher: agent });
    await res.body.dump();
    return res.statusCode;
  } finally {
    await agent.close();
  }
}

const accessLines = () => lines().filter((l) => l.msg === 'request' && l.path === '/dpop/workers');

/** The pids that answered the CONNECTIONS requests after the first `before` (the workers batch their log lines). */
async function pidsAfter(before: number): Promise<Set<unknown>> {
  await expect.poll(() => accessLines().length, { timeout: 10_000, interval: 50 }).toBe(before + CONNECTIONS);
  return new Set(accessLines().slice(before).map((l) => l.pid));
}

async function metric(line: RegExp): Promise<number> {
  const text = await (await fetch(`${adminUrl}/metrics`)).text();
  const match = text.split('\n').find((l) => line.test(l));
  return match === undefined ? 0 : Number(match.slice(match.lastIndexOf(' ') + 1));
}

describe.skipIf(!available)('workers: 2, sharedState with replayDurability replica and onUnavailable local', () => {
  beforeAll(async () => {
    [d, redis] = await Promise.all([startDeployment(), startRedis() as Promise<RedisServer>]);
    key = await generateKeyPair('ES256');
    token = await d.as.issueToken({ clientId: 'plain-app', caCert: d.pki.certs.ca.cert, dpopProof: (htu, htm) => generateProof(key, htu, htm) });
    const secretFile = join(d.pki.dir, 'workers-secret');
    await writeFile(secretFile, randomBytes(32), { mode: 0o600 });
    const file = join(d.pki.dir, 'workers-shared.yaml');
    const introspection = { url: d.as.introspectionUrl, clientId: 'rs', clientSecret: 'rs-secret', ca: d.pki.files.ca, timeoutMs: 5000, probeAtStartup: false };
    const sharedState = { url: redis.url, secretFile, onUnavailable: 'local', replayDurability: 'replica', timeoutMs: 200 };
    await writeFile(file, stringify(baseConfig(d.pki, d.as, d.upstream, { workers: 2, methods: ['dpop'], introspection, sharedState })));
    child = spawn(process.execPath, [BIN, 'run', '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] });
    const output = captureOutput(child);
    lines = output.lines;
    // Not expect.poll: this runs in beforeAll.
    await waitFor(() => lines().some((l) => l.msg === 'cnfguard cluster started'), 'the cluster start line', { timeoutMs: 40_000, intervalMs: 100 });
    const started = lines().find((l) => l.msg === 'cnfguard cluster started') as Record<string, unknown>;
    url = started.listen as string;
    adminUrl = (started.admin as string | undefined) ?? '';
  }, 60_000);

  afterAll(async () => {
    const workers = lines().filter((l) => l.msg === 'cnfguard started').map((l) => l.pid as number);
    child?.kill('SIGKILL');
    for (const pid of workers) if (running(pid)) process.kill(pid, 'SIGKILL');
    await redis?.cleanup();
    await d?.stop();
  });

  /** One fresh proof sent on every connection: both workers see it, and exactly one copy is let through. */
  async function expectAcceptedOnceByBothWorkers(): Promise<void> {
    const proof = await generateProof(key, `${url}/dpop/workers`, 'GET', undefined, token);
    const before = accessLines().length;
    const statuses: number[] = [];
    for (let i = 0; i < CONNECTIONS; i++) statuses.push(await send(proof));
    expect((await pidsAfter(before)).size, 'both workers saw it').toBe(2);
    expect(statuses.filter((s) => s === 200)).toHaveLength(1);
    expect(statuses.filter((s) => s === 401)).toHaveLength(CONNECTIONS - 1);
  }

  it('the primary\'s admin says the store is kept per worker, not that none is configured', async () => {
    expect(await (await fetch(`${adminUrl}/readyz`)).text()).toMatch(/^ready\nshared_state: per worker/);
    expect(((await (await fetch(`${adminUrl}/status`)).json()) as { sharedState: unknown }).sharedState).toMatch(/per worker/);
  });

  it('store up, no replica to acknowledge: each worker waits, falls back, and a proof is still accepted once', async () => {
    await expectAcceptedOnceByBothWorkers();
    // WAIT answered 0, or (a slow machine) the call's deadline came first: either way no acknowledgement, and a fallback.
    const unacked = async () => (await metric(/^cnfguard_shared_state_errors_total\{kind="replica_unacked"\}/)) + (await metric(/^cnfguard_shared_state_errors_total\{kind="timeout"\}/));
    await expect.poll(unacked, { timeout: 5000, interval: 100 }).toBeGreaterThanOrEqual(1);
    await expect.poll(() => metric(/^cnfguard_shared_state_errors_total\{kind="local_fallback"\}/), { timeout: 5000, interval: 100 }).toBeGreaterThanOrEqual(1);
    // Logged, not only counted (CONTRACT: "a per-replica replay store under local (logged and counted)").
    const fallbackWarning = lines().find((l) => String(l.msg).startsWith("shared state store unavailable: DPoP replay checks use this replica's own store"));
    expect(fallbackWarning).toMatchObject({ onUnavailable: 'local' });
  });

  it('store down: the fallback is the cluster primary store, so two workers accept a proof once', async () => {
    await redis.stop();
    await expectAcceptedOnceByBothWorkers();
  });
});
