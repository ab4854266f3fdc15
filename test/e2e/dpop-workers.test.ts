/**
 * DPoP under `workers: 2`, started through the real CLI in a child process (issue 26, findings 5
 * and 11): a proof is accepted once whichever worker a connection lands on, a nonce one worker
 * issued is accepted by every worker, and workers whose primary was killed do not stay behind.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { generateKeyPair, generateProof, type KeyPair } from 'dpop';
import { Agent, request } from 'undici';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { running, startClusterRun, stopClusterRuns, type ClusterRun } from '../fixtures/processes.ts';
import { baseConfig, startDeployment, type Deployment } from '../fixtures/stack.ts';

/** Fresh connections per check: round-robin over two workers puts half of them on each. */
const CONNECTIONS = 8;

interface Cluster extends ClusterRun {
  url: string;
}

let d: Deployment;
let key: KeyPair;
let token: string;
let plain: Cluster;
let withNonces: Cluster;
const started: ClusterRun[] = [];

async function startCluster(name: string, extra: Record<string, unknown>): Promise<Cluster> {
  const file = join(d.pki.dir, `${name}.yaml`);
  await writeFile(file, stringify(baseConfig(d.pki, d.as, d.upstream, { workers: 2, methods: ['dpop'], introspection: { url: d.as.introspectionUrl, clientId: 'rs', clientSecret: 'rs-secret', ca: d.pki.files.ca, timeoutMs: 5000, probeAtStartup: false }, ...extra })));
  const run = await startClusterRun(file, started);
  return { ...run, url: run.startLine.listen as string };
}

interface Answer {
  status: number;
  nonce: string | undefined;
  challenge: string;
}

/** One request on a connection of its own. */
async function send(url: string, proof: string): Promise<Answer> {
  const agent = new Agent({ connect: { ca: d.pki.certs.ca.cert }, pipelining: 0 });
  try {
    const res = await request(url, { headers: { authorization: `DPoP ${token}`, dpop: proof }, dispatcher: agent });
    await res.body.dump();
    const nonce = res.headers['dpop-nonce'];
    return { status: res.statusCode, nonce: typeof nonce === 'string' ? nonce : undefined, challenge: String(res.headers['www-authenticate'] ?? '') };
  } finally {
    await agent.close();
  }
}

/** The access lines for `path`, once all `count` are written (the workers batch their log lines). */
async function accessLines(cluster: Cluster, path: string, count: number): Promise<Record<string, unknown>[]> {
  const of = () => cluster.lines().filter((l) => l.msg === 'request' && l.path === path);
  await expect.poll(() => of().length, { timeout: 10_000, interval: 50 }).toBe(count);
  return of();
}


beforeAll(async () => {
  d = await startDeployment();
  key = await generateKeyPair('ES256');
  token = await d.as.issueToken({ clientId: 'plain-app', caCert: d.pki.certs.ca.cert, dpopProof: (htu, htm) => generateProof(key, htu, htm) });
  [plain, withNonces] = await Promise.all([startCluster('workers-replay', {}), startCluster('workers-nonce', { dpop: { nonce: true } })]);
});

afterAll(async () => {
  stopClusterRuns(started);
  await d?.stop();
});

describe('workers: 2, no sharedState', () => {
  it('one proof sent on many fresh connections is accepted exactly once; every other answer says replayed', async () => {
    const url = `${plain.url}/dpop/replayed`;
    const proof = await generateProof(key, url, 'GET', undefined, token);
    const answers: Answer[] = [];
    for (let i = 0; i < CONNECTIONS; i++) answers.push(await send(url, proof));
    const lines = await accessLines(plain, '/dpop/replayed', CONNECTIONS);
    // Both workers saw the proof: the test means something only if it reached each of them.
    expect(new Set(lines.map((l) => l.pid)).size).toBe(2);
    expect(answers.filter((a) => a.status === 200)).toHaveLength(1);
    expect(answers.filter((a) => a.status === 401 && a.challenge.includes('DPoP error="invalid_dpop_proof"'))).toHaveLength(CONNECTIONS - 1);
    expect(lines.map((l) => l.reason).sort()).toEqual(['bound', ...Array<string>(CONNECTIONS - 1).fill('dpop_proof_replayed')]);
  });

  it('a nonce one answer issued is accepted on many fresh connections, whichever worker takes them', async () => {
    const url = `${withNonces.url}/dpop/nonce`;
    const first = await send(url, await generateProof(key, url, 'GET', undefined, token));
    expect(first.status).toBe(401);
    expect(first.challenge).toContain('DPoP error="use_dpop_nonce"');
    const nonce = first.nonce as string;
    expect(nonce).toMatch(/^[A-Za-z0-9_-]{22}$/);
    const statuses: number[] = [];
    for (let i = 0; i < CONNECTIONS; i++) statuses.push((await send(url, await generateProof(key, url, 'GET', nonce, token))).status);
    const lines = await accessLines(withNonces, '/dpop/nonce', CONNECTIONS + 1);
    expect(new Set(lines.map((l) => l.pid)).size).toBe(2);
    expect(statuses).toEqual(Array<number>(CONNECTIONS).fill(200));
  });

  it('workers whose primary is killed (SIGKILL) exit on their own', async () => {
    const workers = plain.workers();
    expect(workers).toHaveLength(2);
    expect(workers.every(running)).toBe(true);
    plain.child.kill('SIGKILL');
    // A worker with requests in flight drains first (shutdownGraceSeconds, default 30 s); these are idle.
    await expect.poll(() => workers.filter(running), { timeout: 15_000, interval: 100 }).toEqual([]);
  });
});
