/**
 * The newcomer's path, run as written: the shell blocks of README.md ("In front of your service")
 * and docs/quickstarts.md ("The demo AS") are executed in order with the system `node` (no Node 24
 * on PATH: bin/cnfguard.js and the npm scripts must bring it), in a copy of the checkout, up to the
 * first 200 through cnfguard and the 401 for another client's certificate.
 *
 * What differs from a user's terminal, and why: the well-known ports (9443, 8443, 8080, 9090) are
 * replaced by free ones everywhere (the machine is shared); commands the docs say keep running
 * (the AS, the upstream, `run`) are started in the background and waited for; a command with a
 * `<placeholder>` is skipped; the quickstart's config block is saved as the text says.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { cp, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../fixtures/processes.ts';
import { waitFor } from '../fixtures/wait.ts';

const ROOT = join(import.meta.dirname, '..', '..');
/** PATH without the checkout's node_modules/.bin: `node` is the system's. */
const SYSTEM_PATH = (process.env.PATH ?? '')
  .split(delimiter)
  .filter((dir) => !dir.includes('node_modules'))
  .join(delimiter);
const systemNode = (() => {
  try {
    return execFileSync('node', ['--version'], { env: { ...process.env, PATH: SYSTEM_PATH }, encoding: 'utf8' }).trim();
  } catch {
    return undefined;
  }
})();

/** The ```sh blocks of one `## heading` section, each a list of commands (continuations joined, comments dropped). */
function shellBlocks(markdown: string, heading: string): string[][] {
  const start = markdown.indexOf(`\n## ${heading}`);
  if (start === -1) throw new Error(`no section "## ${heading}"`);
  const end = markdown.indexOf('\n## ', start + 4);
  const section = markdown.slice(start, end === -1 ? undefined : end);
  return [...section.matchAll(/^ *```sh\n([\s\S]*?)^ *```/gm)].map((m) =>
    (m[1] as string)
      .replace(/\\\n\s*/g, ' ')
      .split('\n')
      .map((line) => line.replace(/\s+#\s.*$/, '').trim())
      .filter((line) => line !== ''),
  );
}

/** A command that keeps running, and the line that says it is ready. */
const BACKGROUND: [RegExp, string][] = [
  [/npm run demo:as\b/, 'authorization server listening'],
  [/npm run demo:upstream\b/, 'echo upstream listening'],
  [/cnfguard\.js run\b/, 'cnfguard started'],
];

interface Background {
  child: ChildProcess;
  output: () => string;
}

describe.skipIf(systemNode === undefined)(`the docs' first steps on the system node (${systemNode ?? 'none'})`, () => {
  let ports: Record<string, string>;
  const started: Background[] = [];
  const clones: string[] = [];

  /** A copy of what a clone holds (node_modules linked, as `npm install` would have made it), and fresh ports. */
  async function clone(): Promise<string> {
    const work = await mkdtemp(join(tmpdir(), 'cnfguard-newcomer-'));
    clones.push(work);
    for (const entry of ['bin', 'cmd', 'src', 'demo', 'package.json']) await cp(join(ROOT, entry), join(work, entry), { recursive: true });
    await symlink(join(ROOT, 'node_modules'), join(work, 'node_modules'));
    ports = { '9443': String(await freePort()), '8443': String(await freePort()), '8080': String(await freePort()), '9090': String(await freePort()) };
    return work;
  }

  const stopAll = () => {
    // The whole group, also when its shell has already exited: what the shell started may still run.
    for (const { child } of started.splice(0)) {
      if (child.pid === undefined) continue;
      try {
        process.kill(-child.pid, 'SIGTERM');
      } catch {
        // ESRCH: nothing of the group is left.
      }
    }
  };

  beforeAll(() => {
    expect(systemNode).not.toMatch(/^v2[4-9]/); // otherwise this shows nothing about an older Node
  });

  afterAll(async () => {
    stopAll();
    await Promise.all(clones.map((dir) => rm(dir, { recursive: true, force: true })));
  });

  const withPorts = (text: string) => text.replace(/\b(9443|8443|8080|9090)\b/g, (port) => ports[port] as string);

  function background(command: string, ready: string, cwd: string): Promise<Background> {
    // Its own process group, so that the npm -> sh -> node chain is stopped as one.
    const child = spawn('sh', ['-c', command], { cwd, detached: true, env: { ...process.env, PATH: SYSTEM_PATH }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout?.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr?.on('data', (c: Buffer) => (out += c.toString()));
    const entry = { child, output: () => out };
    started.push(entry);
    return waitFor(() => out.includes(ready) && entry, () => `"${ready}" from ${command}; output:\n${out}`, { timeoutMs: 60_000, intervalMs: 100 });
  }

  function script(commands: string[], cwd: string): { code: number; out: string } {
    try {
      const out = execFileSync('sh', ['-c', ['set -e', ...commands].join('\n')], { cwd, env: { ...process.env, PATH: SYSTEM_PATH }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 60_000 });
      return { code: 0, out };
    } catch (err) {
      const e = err as { status?: number; stdout?: string; stderr?: string };
      return { code: e.status ?? 1, out: `${e.stdout ?? ''}${e.stderr ?? ''}` };
    }
  }

  /** Runs the blocks in order; `before(command)` may prepare a file a command reads. Returns the output of the last block. */
  async function follow(blocks: string[][], cwd: string, before: (command: string) => Promise<void>): Promise<string> {
    let last = '';
    const flush = (now: string[]) => {
      if (now.length === 0) return;
      const r = script(now.splice(0), cwd);
      expect(r.code, r.out).toBe(0);
      last = r.out;
    };
    for (const block of blocks) {
      const now: string[] = [];
      for (const raw of block) {
        const command = withPorts(raw);
        if (/<[a-z_]+>/.test(command)) continue;
        // What comes before a check must have run: it may write the file the check reads.
        if (/cnfguard\.js check /.test(command)) flush(now);
        await before(command);
        const bg = BACKGROUND.find(([pattern]) => pattern.test(command));
        if (bg !== undefined) {
          flush(now);
          await background(command, bg[1], cwd);
        }
        else now.push(command);
      }
      flush(now);
    }
    return last;
  }

  it('README "In front of your service": init, check, the demo AS and upstream, run, a 200 then a 401', async () => {
    const readme = await readFile(join(ROOT, 'README.md'), 'utf8');
    const work = await clone();
    const blocks = shellBlocks(readme, 'In front of your service');
    const out = await follow(blocks, work, async (command) => {
      // The config init wrote, on this test's ports.
      if (/cnfguard\.js check /.test(command)) {
        const file = join(work, 'guard', 'cnfguard.yaml');
        await writeFile(file, withPorts(await readFile(file, 'utf8')));
      }
    });
    expect(out).toMatch(/^HTTP\/\S+ 200/m);
    expect(out).toMatch(/HTTP\/\S+ 401 [\s\S]*bound to a different client certificate/);
  }, 180_000);

  it('docs/quickstarts.md "The demo AS": dev-certs, the AS, the config block, check, run, a 200 then a 401', async () => {
    const doc = await readFile(join(ROOT, 'docs', 'quickstarts.md'), 'utf8');
    stopAll();
    const dir = await clone();
    const config = /```yaml\n(# cnfguard\.yaml: the demo AS[\s\S]*?)```/.exec(doc)?.[1];
    expect(config).toBeDefined();
    const out = await follow(shellBlocks(doc, 'The demo AS (oidc-provider): tested here'), dir, async (command) => {
      // "save it as cnfguard.yaml beside certs/"; its admin listener moved off 9090 too.
      if (/cnfguard\.js check /.test(command)) await writeFile(join(dir, 'cnfguard.yaml'), `${withPorts(config as string)}admin: { port: ${ports['9090']} }\n`);
    });
    expect(out).toMatch(/^HTTP\/\S+ 200/m);
    expect(out).toMatch(/HTTP\/\S+ 401 [\s\S]*bound to a different client certificate/);
  }, 180_000);
});
