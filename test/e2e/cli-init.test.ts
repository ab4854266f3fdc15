/**
 * `cnfguard init`, `dev-certs` refusing to overwrite, `schema`, and "did you mean" for commands and
 * options: real processes through bin/cnfguard.js, exit codes and messages as a user sees them.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '..', '..');
const BIN = join(ROOT, 'bin', 'cnfguard.js');

function cnfguard(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
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
