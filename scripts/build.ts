/**
 * The production build (`npm run build`): cmd/cnfguard.ts and src/ compiled to JS in dist/
 * (tsconfig.build.json), which bin/cnfguard.js runs instead of type-stripping the sources when it
 * is complete and no source is newer. package.json is copied beside it (src/version.ts reads
 * `../package.json`), and dist/.built, written last, says the build finished.
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

const root = join(import.meta.dirname, '..');
const dist = join(root, 'dist');
rmSync(dist, { recursive: true, force: true });
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
execFileSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.build.json')], { stdio: 'inherit' });
copyFileSync(join(root, 'package.json'), join(dist, 'package.json'));
writeFileSync(join(dist, '.built'), '');
