/**
 * bin/cnfguard.js runs the build (dist/, `npm run build`) only when it is complete and no source
 * is newer; otherwise the TypeScript sources. Checked on a scratch copy of the launcher whose
 * "build" and "sources" each print which they are.
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, expect, it } from 'vitest';

const LAUNCHER = join(import.meta.dirname, '..', '..', 'bin', 'cnfguard.js');
const roots: string[] = [];
afterEach(() => {
  for (const root of roots.splice(0)) rmSync(root, { recursive: true, force: true });
});

function scratch(): { root: string; at: (path: string, seconds: number) => void; run: (env?: NodeJS.ProcessEnv, args?: string[]) => string } {
  const root = mkdtempSync(join(tmpdir(), 'cnfguard-launcher-'));
  roots.push(root);
  const write = (path: string, text: string) => {
    mkdirSync(join(root, path, '..'), { recursive: true });
    writeFileSync(join(root, path), text);
  };
  write('package.json', '{"type":"module"}');
  mkdirSync(join(root, 'bin'));
  copyFileSync(LAUNCHER, join(root, 'bin', 'cnfguard.js'));
  write('cmd/cnfguard.ts', "console.log('sources');");
  write('src/app.ts', 'export {};');
  // The build also says whether node runs with --expose-gc (what `run` gets, for settle-memory.ts).
  // And which file node was started with: the launcher, or (run's exec) the build's entry itself.
  write('dist/cmd/cnfguard.js', "console.log(process.argv[2] === undefined ? 'build' : `build ${process.argv[2]} gc=${typeof globalThis.gc} from=${process.argv[1].split('/').slice(-2).join('/')}`);");
  write('dist/.built', '');
  const at = (path: string, seconds: number) => utimesSync(join(root, path), seconds, seconds);
  for (const path of ['package.json', 'cmd/cnfguard.ts', 'src/app.ts', 'src']) at(path, 1_000);
  at('dist/.built', 2_000);
  const run = (env: NodeJS.ProcessEnv = {}, args: string[] = []) => {
    const { CNFGUARD_FROM_SOURCE: _ignored, ...inherited } = process.env;
    const result = spawnSync(process.execPath, [join(root, 'bin', 'cnfguard.js'), ...args], { encoding: 'utf8', env: { ...inherited, ...env }, timeout: 20_000 });
    expect(result.stderr).toBe('');
    return result.stdout.trim();
  };
  return { root, at, run };
}

it('runs the build when it is complete and newer than every source', () => {
  expect(scratch().run()).toBe('build');
});

it('runs the sources when any of them is newer than the build, or the build is incomplete', () => {
  const changedSource = scratch();
  changedSource.at('src/app.ts', 3_000);
  expect(changedSource.run()).toBe('sources');

  const changedEntry = scratch();
  changedEntry.at('cmd/cnfguard.ts', 3_000);
  expect(changedEntry.run()).toBe('sources');

  const changedPackage = scratch();
  changedPackage.at('package.json', 3_000);
  expect(changedPackage.run()).toBe('sources');

  const unfinished = scratch();
  rmSync(join(unfinished.root, 'dist', '.built'));
  expect(unfinished.run()).toBe('sources');
});

it('CNFGUARD_FROM_SOURCE=1 runs the sources whatever dist/ holds', () => {
  expect(scratch().run({ CNFGUARD_FROM_SOURCE: '1' })).toBe('sources');
});

it('gives `run`, and only `run`, V8\'s gc() (--expose-gc) unless CNFGUARD_SETTLE_MEMORY=0', () => {
  const launcher = scratch();
  // run's exec starts the build's entry, not the launcher again (whose walk of src/ would run twice).
  expect(launcher.run({}, ['run'])).toBe('build run gc=function from=cmd/cnfguard.js');
  expect(launcher.run({}, ['check'])).toBe('build check gc=undefined from=bin/cnfguard.js');
  expect(launcher.run({ CNFGUARD_SETTLE_MEMORY: '0' }, ['run'])).toBe('build run gc=undefined from=bin/cnfguard.js');
});
