/**
 * `cnfguard init`, `dev-certs` refusing to overwrite, `schema`, and "did you mean" for commands and
 * options: real processes through bin/cnfguard.js, exit codes and messages as a user sees them.
 */
import { execFileSync, spawn } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '..', '..');
const BIN = join(ROOT, 'bin', 'cnfguard.js');

function cnfguard(args: string[], env: NodeJS.ProcessEnv = {}, as: string[] = []): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const [command, ...prefix] = [...as, process.execPath];
  const child = spawn(command as string, [...prefix, BIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
}

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cnfguard-init-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('cnfguard init', () => {
  it('writes a commented config and dev certificates that check accepts as written', async () => {
    const out = join(dir, 'starter');
    const made = await cnfguard(['init', out]);
    expect(made.code).toBe(0);
    expect((await readdir(out)).sort()).toEqual(['certs', 'cnfguard.yaml']);
    expect((await readdir(join(out, 'certs'))).sort()).toEqual(['ca.crt', 'ca.key', 'client1.crt', 'client1.key', 'client2.crt', 'client2.key', 'tls.crt', 'tls.key']);
    const config = await readFile(join(out, 'cnfguard.yaml'), 'utf8');
    expect(config).toMatch(/^# /);
    expect(config).toContain('url: https://127.0.0.1:9443/token/introspection');
    const checked = await cnfguard(['check', '-c', join(out, 'cnfguard.yaml')], { INTROSPECTION_SECRET: '' });
    expect(checked.stderr).toBe('');
    expect(checked.code).toBe(0);
  });

  it('refuses to overwrite any file without --force, naming it, and writes nothing', async () => {
    const out = join(dir, 'twice');
    expect((await cnfguard(['init', out])).code).toBe(0);
    const ca = await readFile(join(out, 'certs', 'ca.crt'), 'utf8');
    await writeFile(join(out, 'cnfguard.yaml'), '# mine\n');
    const again = await cnfguard(['init', out]);
    expect(again.code).toBe(2);
    expect(again.stderr).toContain(join(out, 'cnfguard.yaml'));
    expect(again.stderr).toContain('--force');
    expect(await readFile(join(out, 'cnfguard.yaml'), 'utf8')).toBe('# mine\n');
    expect(await readFile(join(out, 'certs', 'ca.crt'), 'utf8')).toBe(ca);
    // One existing file is enough to refuse.
    const one = join(dir, 'one');
    expect((await cnfguard(['dev-certs', join(one, 'certs')])).code).toBe(0);
    const partly = await cnfguard(['init', one]);
    expect(partly.code).toBe(2);
    expect(partly.stderr).toContain(join(one, 'certs', 'ca.crt'));
    expect((await readdir(one)).sort()).toEqual(['certs']);
    const forced = await cnfguard(['init', out, '--force']);
    expect(forced.code).toBe(0);
    expect(await readFile(join(out, 'certs', 'ca.crt'), 'utf8')).not.toBe(ca);
    expect(await readFile(join(out, 'cnfguard.yaml'), 'utf8')).not.toBe('# mine\n');
  });
});

describe('cnfguard dev-certs', () => {
  it('refuses to replace an existing CA without --force (exit 2, naming the file), replaces it with --force', async () => {
    const out = join(dir, 'certs');
    expect((await cnfguard(['dev-certs', out])).code).toBe(0);
    const ca = await readFile(join(out, 'ca.crt'), 'utf8');
    const again = await cnfguard(['dev-certs', out]);
    expect(again.code).toBe(2);
    expect(again.stderr).toContain(join(out, 'ca.crt'));
    expect(await readFile(join(out, 'ca.crt'), 'utf8')).toBe(ca);
    expect((await cnfguard(['dev-certs', out, '--force'])).code).toBe(0);
    expect(await readFile(join(out, 'ca.crt'), 'utf8')).not.toBe(ca);
  });
});

/** How to run cnfguard as a user whom a 0555 directory refuses: as is, or (as root) through setpriv as nobody. */
function unprivileged(): string[] | undefined {
  if (process.getuid?.() !== 0) return [];
  try {
    execFileSync('setpriv', ['--version'], { stdio: 'ignore' });
  } catch {
    return undefined;
  }
  const asNobody = ['setpriv', '--reuid', '65534', '--regid', '65534', '--clear-groups'];
  // nobody must be able to run cnfguard from this checkout at all: a clone inside a 0700 directory
  // (mktemp -d) is not theirs to read, and every case would fail on that, not on the 0555 one.
  try {
    execFileSync(asNobody[0] as string, [...asNobody.slice(1), process.execPath, BIN, 'version'], { stdio: 'ignore' });
  } catch {
    return undefined;
  }
  return asNobody;
}
const AS_USER = unprivileged();

describe('init and dev-certs on a path they cannot write: exit 2, one line naming the path and the cause, nothing written', () => {
  const oneLine = (stderr: string) => {
    expect(stderr).not.toMatch(/\n\s+at /); // no stack trace
    expect(stderr.trimEnd().split('\n')).toHaveLength(1);
    return stderr.trimEnd();
  };

  it.each([['init'], ['dev-certs']])('%s into a file: it is not a directory', async (command) => {
    const file = join(dir, `afile-${command}`);
    await writeFile(file, 'mine\n');
    const r = await cnfguard([command, file]);
    expect(r.code).toBe(2);
    const target = command === 'init' ? join(file, 'cnfguard.yaml') : join(file, 'ca.crt');
    expect(oneLine(r.stderr)).toBe(`cnfguard: ${command}: cannot write ${target}: ${file} is not a directory; nothing was written`);
    expect(await readFile(file, 'utf8')).toBe('mine\n');
  });

  it('init --force with a directory where tls.key goes: names it, and writes neither the CA nor the config', async () => {
    const out = join(dir, 'g6');
    await mkdir(join(out, 'certs', 'tls.key'), { recursive: true });
    for (const force of [['--force'], []]) {
      const r = await cnfguard(['init', out, ...force]);
      expect(r.code).toBe(2);
      expect(oneLine(r.stderr)).toBe(`cnfguard: init: cannot write ${join(out, 'certs', 'tls.key')}: it is a directory; nothing was written`);
      expect(await readdir(out)).toEqual(['certs']);
      expect(await readdir(join(out, 'certs'))).toEqual(['tls.key']);
    }
  });

  it('init --force over a set with a directory in one place replaces none of the files', async () => {
    const out = join(dir, 'kept');
    expect((await cnfguard(['init', out])).code).toBe(0);
    const before = await readFile(join(out, 'certs', 'ca.crt'), 'utf8');
    await rm(join(out, 'certs', 'client2.crt'));
    await mkdir(join(out, 'certs', 'client2.crt'));
    const r = await cnfguard(['init', out, '--force']);
    expect(r.code).toBe(2);
    expect(oneLine(r.stderr)).toContain(`cannot write ${join(out, 'certs', 'client2.crt')}: it is a directory`);
    expect(await readFile(join(out, 'certs', 'ca.crt'), 'utf8')).toBe(before);
    expect((await readdir(join(out, 'certs'))).filter((name) => name.startsWith('.'))).toEqual([]);
  });

  it.skipIf(AS_USER === undefined).each([['init'], ['dev-certs']])('%s under a read-only directory: permission denied', async (command) => {
    const shared = await mkdtemp(join(tmpdir(), 'cnfguard-ro-'));
    try {
      await chmod(shared, 0o755);
      const readOnly = join(shared, 'ro');
      await mkdir(readOnly, { mode: 0o555 });
      await chmod(readOnly, 0o555);
      const inside = await cnfguard([command, readOnly], {}, AS_USER);
      expect(inside.code).toBe(2);
      const first = command === 'init' ? join(readOnly, 'cnfguard.yaml') : join(readOnly, 'ca.crt');
      expect(oneLine(inside.stderr)).toBe(`cnfguard: ${command}: cannot write ${first}: permission denied; nothing was written`);
      const below = await cnfguard([command, join(readOnly, 'new')], {}, AS_USER);
      expect(below.code).toBe(2);
      expect(oneLine(below.stderr)).toBe(`cnfguard: ${command}: cannot create ${join(readOnly, 'new')}: permission denied; nothing was written`);
      expect(await readdir(readOnly)).toEqual([]);
    } finally {
      await rm(join(shared), { recursive: true, force: true });
    }
  });
});

describe('cnfguard schema', () => {
  it('prints the JSON Schema committed as docs/cnfguard.schema.json', async () => {
    const r = await cnfguard(['schema']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(await readFile(join(ROOT, 'docs', 'cnfguard.schema.json'), 'utf8'));
    expect((JSON.parse(r.stdout) as { $schema: string }).$schema).toBe('https://json-schema.org/draft/2020-12/schema');
  });
});

describe('did you mean', () => {
  it.each([
    [['chek'], 'unknown command "chek" (did you mean "check"?)'],
    [['dev-cert', 'x'], 'unknown command "dev-cert" (did you mean "dev-certs"?)'],
    [['help', 'int'], 'unknown command "int" (did you mean "init"?)'],
    [['check', '--confg', 'x.yaml'], 'unknown option --confg (did you mean "--config"?)'],
    [['dev-certs', 'x', '--forse'], 'unknown option --forse (did you mean "--force"?)'],
  ])('%j: exit 2 and a suggestion', async (args, message) => {
    const r = await cnfguard(args);
    expect(r.code).toBe(2);
    expect(r.stderr.split('\n')[0]).toBe(`cnfguard: ${message}`);
  });

  it('no suggestion for a name close to nothing', async () => {
    const r = await cnfguard(['frobnicate']);
    expect(r.stderr.split('\n')[0]).toBe('cnfguard: unknown command "frobnicate"');
  });
});

describe('cnfguard check in plain words', () => {
  it('names a misspelt key, a bad value, an out-of-range port and an empty variable, one line each', async () => {
    const out = join(dir, 'words');
    expect((await cnfguard(['init', out])).code).toBe(0);
    const file = join(out, 'cnfguard.yaml');
    const text = (await readFile(file, 'utf8'))
      .replace('clientCa: certs/ca.crt', 'clientCA: certs/ca.crt')
      .replace('clientSecret: ${INTROSPECTION_SECRET:-rs-secret}', 'clientSecret: ${INTROSPECTION_SECRET}')
      .replace('  port: 8443', '  port: 99999')
      .replace('logLevel: info', 'logLevel: info\nworkers: lots');
    await writeFile(file, text);
    const r = await cnfguard(['check', '-c', file], { INTROSPECTION_SECRET: '' });
    expect(r.code).toBe(2);
    expect(r.stderr.split('\n').filter((line) => line.startsWith('  - ')).sort()).toEqual(
      [
        '  - tls: unknown key "clientCA" (did you mean "clientCa"?)',
        '  - listen.port: 99999 is out of range: expected integer 0–65535',
        '  - workers: expected auto or integer 1–64, got "lots"',
        '  - introspection.clientSecret: INTROSPECTION_SECRET is set but empty, and this value cannot be empty (too small: expected string to have >=1 characters)',
      ].sort(),
    );
    const leaf = text.replace('clientCA: certs/ca.crt', 'clientCa: certs/client1.crt').replace('  port: 99999', '  port: 8443').replace('\nworkers: lots', '');
    await writeFile(file, leaf);
    const refused = await cnfguard(['check', '-c', file], { INTROSPECTION_SECRET: 'x' });
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('tls.clientCa: ');
    expect(refused.stderr).toContain('holds a certificate without CA rights');
  });
});
