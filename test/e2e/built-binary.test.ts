/**
 * The production build (scripts/build.ts: one esbuild bundle with its chunks) run as operators run
 * it, through bin/cnfguard.js: built into a scratch folder holding only the launcher, package.json,
 * node_modules and dist/ (no sources, so nothing but the build can run), then a bound token
 * through it gets the upstream's 200, a request without one is refused, and each writes its
 * access line. The other tests run the sources (CNFGUARD_FROM_SOURCE=1).
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startChildGuard, type ChildGuard } from '../fixtures/child-guard.ts';

const ROOT = join(import.meta.dirname, '..', '..');
let scratch: string;
let g: ChildGuard;

const COUNT_FILES = `import { writeFileSync } from 'node:fs';
import { registerHooks } from 'node:module';
const files = new Set();
registerHooks({ resolve(specifier, context, next) {
  const resolved = next(specifier, context);
  if (resolved.url.includes('/dist/') && !files.has(resolved.url)) {
    files.add(resolved.url);
    writeFileSync(LOADED, JSON.stringify({ files: files.size, undici: process.moduleLoadList.some((name) => name.includes('undici')) }));
  }
  return resolved;
} });
`;

beforeAll(async () => {
  scratch = mkdtempSync(join(tmpdir(), 'cnfguard-built-'));
  mkdirSync(join(scratch, 'bin'));
  copyFileSync(join(ROOT, 'bin', 'cnfguard.js'), join(scratch, 'bin', 'cnfguard.js'));
  copyFileSync(join(ROOT, 'package.json'), join(scratch, 'package.json'));
  symlinkSync(join(ROOT, 'node_modules'), join(scratch, 'node_modules'));
  execFileSync(process.execPath, [join(ROOT, 'scripts', 'build.ts'), '--outdir', join(scratch, 'dist')], { stdio: 'inherit' });
  // What the server loads: each file of dist/ it resolves, and whether Node loaded its own undici.
  writeFileSync(join(scratch, 'count-files.mjs'), COUNT_FILES.replace('LOADED', JSON.stringify(join(scratch, 'loaded.json'))));
  g = await startChildGuard(100, { bin: join(scratch, 'bin', 'cnfguard.js'), env: { CNFGUARD_FROM_SOURCE: '0', NODE_OPTIONS: `--import ${join(scratch, 'count-files.mjs')}` } });
});

afterAll(async () => {
  await g?.stop();
  if (scratch !== undefined) rmSync(scratch, { recursive: true, force: true });
});

it('serves from the build: a bound token gets the upstream, none is refused, each is logged', async () => {
  const version = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
  expect(g.output()).toContain(`"version":"${version}"`);
  expect(await g.status('/h1/fast')).toBe(200);
  expect(await g.status('/h1/fast-without', '')).toBe(401);
  await expect.poll(() => g.linesFor('/h1/fast').map((line) => line.status)).toEqual([200, 401]);
  expect(g.fatalLines()).toEqual([]);
});

it('ships the licences of the packages it bundles', () => {
  const notices = readFileSync(join(scratch, 'dist', 'THIRD-PARTY-NOTICES.txt'), 'utf8');
  for (const name of ['pino', 'prom-client', 'yaml', 'zod', 'http-proxy-3', 'lru-cache']) expect(notices).toMatch(new RegExp(`^${name} \\d+\\.\\d+\\.\\d+ \\(`, 'm'));
});

it('`run` loads its code from a few files of dist/, and not Node\'s own undici', () => {
  // Each file one more resolution in Node's ESM loader at start-up, whose path work got V8's
  // optimising compiler going (src/cli/run-proxy.ts): ~40 files before run's steps were imported
  // statically, 16 after. Node's undici is what an ESM import of node:http loads (scripts/node-builtins.ts).
  const loaded = JSON.parse(readFileSync(join(scratch, 'loaded.json'), 'utf8')) as { files: number; undici: boolean };
  expect(loaded.files).toBeGreaterThan(1);
  expect(loaded.files).toBeLessThanOrEqual(20);
  expect(loaded.undici).toBe(false);
});

it('leaves out what the config never uses: zod\'s locales other than English', () => {
  // `import * as z from 'zod'` lets esbuild drop zod's unused exports (~260 KB of locales that
  // `import { z }` kept: source text an idle server holds on its heap). English messages stay.
  const chunks = join(scratch, 'dist', 'chunks');
  const text = readdirSync(chunks).filter((name) => name.endsWith('.js')).map((name) => readFileSync(join(chunks, name), 'utf8')).join('\n');
  expect(text).toContain('Invalid input');
  expect(text).not.toMatch(/Ung\S*ltige Eingabe/);
});
