/**
 * No cnfguard process outlives what started it (issue 26, finding 11). On a machine whose Node is
 * older than 24, bin/cnfguard.js runs the server as its child; when that launcher is killed
 * (SIGKILL: nothing can be relayed), the primary and its workers used to stay, holding the port,
 * and a worker sent SIGTERM was restarted by its orphaned primary. (Workers whose primary is
 * killed exit already: test/e2e/dpop-workers.test.ts.)
 */
import { execFileSync, spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { captureOutput, running } from '../fixtures/processes.ts';
import { createPki, type Pki } from '../fixtures/stack.ts';

const BIN = join(import.meta.dirname, '..', '..', 'bin', 'cnfguard.js');

/** A `node` on PATH older than 24 (a machine's system Node): the launcher's relay path. */
function olderNode(): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    try {
      const major = Number(execFileSync(join(dir, 'node'), ['-p', 'process.versions.node.split(".")[0]'], { encoding: 'utf8' }).trim());
      if (major < 24) return join(dir, 'node');
    } catch {
      // not there, or not a node
    }
  }
  return undefined;
}
const OLDER_NODE = olderNode();


let pki: Pki;
const pids: number[] = [];
beforeAll(async () => {
  pki = await createPki();
});
afterAll(async () => {
  for (const pid of pids) if (running(pid)) process.kill(pid, 'SIGKILL');
  await pki?.cleanup();
});

describe.skipIf(OLDER_NODE === undefined)(`bin/cnfguard.js under ${OLDER_NODE ?? 'no older Node'}`, () => {
  it('a launcher killed by SIGKILL takes its primary and workers (workers: 2) down', async () => {
    const file = join(pki.dir, 'orphans.yaml');
    await writeFile(
      file,
      stringify({
        listen: { host: '127.0.0.1', port: 0 },
        admin: { host: '127.0.0.1', port: 0 },
        tls: { cert: pki.files.server.cert, key: pki.files.server.key },
        // Never called: no request is sent and the start-up probe is off.
        introspection: { url: 'https://127.0.0.1:9/introspect', clientId: 'rs', clientSecret: 'rs-secret', probeAtStartup: false },
        upstream: 'http://127.0.0.1:9',
        workers: 2,
      }),
    );
    const launcher = spawn(OLDER_NODE as string, [BIN, 'run', '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] });
    pids.push(launcher.pid as number);
    const output = captureOutput(launcher);
    const lines = output.lines;
    await expect.poll(() => lines().some((l) => l.msg === 'cnfguard cluster started'), { timeout: 40_000, interval: 100 }).toBe(true);
    const primary = lines().find((l) => l.msg === 'cnfguard cluster started')?.pid as number;
    const workers = lines()
      .filter((l) => l.msg === 'cnfguard started')
      .map((l) => l.pid as number);
    pids.push(primary, ...workers);
    expect(workers).toHaveLength(2);
    expect(primary).not.toBe(launcher.pid);
    expect([primary, ...workers].every(running)).toBe(true);

    launcher.kill('SIGKILL');
    // Idle workers drain at once; the parent is polled every 500 ms.
    await expect.poll(() => [primary, ...workers].filter(running), { timeout: 15_000, interval: 100 }).toEqual([]);
  });

  it('a launcher killed by SIGKILL takes its one server (workers: 1) down', async () => {
    const file = join(pki.dir, 'orphan-single.yaml');
    await writeFile(
      file,
      stringify({
        listen: { host: '127.0.0.1', port: 0 },
        admin: { host: '127.0.0.1', port: 0 },
        tls: { cert: pki.files.server.cert, key: pki.files.server.key },
        introspection: { url: 'https://127.0.0.1:9/introspect', clientId: 'rs', clientSecret: 'rs-secret', probeAtStartup: false },
        upstream: 'http://127.0.0.1:9',
      }),
    );
    const launcher = spawn(OLDER_NODE as string, [BIN, 'run', '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] });
    pids.push(launcher.pid as number);
    const { lines } = captureOutput(launcher);
    await expect.poll(() => lines().some((l) => l.msg === 'cnfguard started'), { timeout: 40_000, interval: 100 }).toBe(true);
    const server = lines().find((l) => l.msg === 'cnfguard started')?.pid as number;
    pids.push(server);
    expect(server).not.toBe(launcher.pid);
    expect(running(server)).toBe(true);
    launcher.kill('SIGKILL');
    await expect.poll(() => running(server), { timeout: 15_000, interval: 100 }).toBe(false);
  });
});
