/**
 * The production build (`npm run build`): cmd/cnfguard.ts bundled by esbuild with the libraries it
 * imports into dist/ (ESM, minified, tree-shaken), which bin/cnfguard.js runs instead of
 * type-stripping the sources when it is complete and nothing it came from is newer.
 *
 * Why a bundle and not tsc's per-file output (issue 32): an idle `cnfguard run` holds ~13 MB less
 * RSS (fewer module records and function metadata, less source text for V8 to keep) and starts
 * faster. It is a build step, not a replacement: the libraries are the same, only packed.
 * - Dynamic imports stay separate chunks (dist/chunks/), so a feature the config does not use
 *   (tracing, dev-certs' node-forge, a command other than the one run) is never loaded.
 * - Packages src/ loads on first use through createRequire (jose, ioredis) are not bundled: they
 *   load from node_modules, as from the sources, only when used. undici's two parts (src/undici.ts)
 *   are imported, so bundled: the server loads them at every start.
 * - Node built-ins are taken without their ESM facade (scripts/node-builtins.ts: importing
 *   `node:http` that way loads Node's own undici, ~3 MB of idle RSS). CommonJS packages inside the
 *   bundle call `require` for them: the banner gives each output file one (createRequire). pino's transports (worker files found by __dirname) cannot
 *   run from a bundle; cnfguard does not use them (src/log.ts writes through pino.destination).
 * - Licences: the libraries' legal comments go to a .LEGAL.txt beside each file, and
 *   dist/THIRD-PARTY-NOTICES.txt holds the licence text of every package bundled.
 * - Source maps (dist/**\/*.js.map, without the sources' text) turn a minified stack trace back
 *   into file:line: NODE_OPTIONS=--enable-source-maps; they cost nothing unless asked for.
 * package.json is copied beside it (src/version.ts reads `../package.json` from its chunk),
 * dist/chunks.json names the chunk of each source module a chunk starts from (bench/idle-rss.ts
 * loads the app's), and dist/.built, written last, says the build finished.
 */
import { build, type Metafile } from 'esbuild';
import { nodeBuiltinsWithoutFacade } from './node-builtins.ts';
import { copyFileSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { parseArgs } from 'node:util';

const root = join(import.meta.dirname, '..');
// --outdir: somewhere else than dist/ (the test of the built binary builds into a scratch folder).
const { values } = parseArgs({ options: { outdir: { type: 'string' } } });
const dist = values.outdir === undefined ? join(root, 'dist') : resolve(values.outdir);
rmSync(dist, { recursive: true, force: true });

const result = await build({
  absWorkingDir: root,
  entryPoints: { 'cmd/cnfguard': 'cmd/cnfguard.ts' },
  outdir: dist,
  // One folder below dist/ like the entry, so `../package.json` from any chunk is dist/package.json.
  chunkNames: 'chunks/[name]-[hash]',
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node24',
  minify: true,
  sourcemap: 'linked',
  sourcesContent: false,
  legalComments: 'linked',
  metafile: true,
  plugins: [nodeBuiltinsWithoutFacade],
  banner: { js: "import { createRequire as __cnfguardCreateRequire } from 'node:module'; const require = __cnfguardCreateRequire(import.meta.url);" },
  logLevel: 'warning',
});
writeFileSync(join(dist, 'THIRD-PARTY-NOTICES.txt'), notices(result.metafile));
writeFileSync(join(dist, 'chunks.json'), `${JSON.stringify(chunksOf(result.metafile), null, 2)}\n`);
copyFileSync(join(root, 'package.json'), join(dist, 'package.json'));
writeFileSync(join(dist, '.built'), '');

/** Source module -> the output file it starts (the entry, and each dynamic import's chunk). */
function chunksOf(metafile: Metafile): Record<string, string> {
  const chunks: Record<string, string> = {};
  for (const [file, output] of Object.entries(metafile.outputs)) if (output.entryPoint !== undefined) chunks[output.entryPoint] = relative(dist, resolve(root, file));
  return chunks;
}

/** The licence of every package with a file in the bundle: name, version, licence, its LICENSE text. */
function notices(metafile: Metafile): string {
  const packages = new Set<string>();
  for (const input of Object.keys(metafile.inputs)) {
    // The innermost node_modules/<package>/ (a nested dependency is its own package).
    const match = [...input.matchAll(/node_modules\/(?:@[^/]+\/)?[^/]+\//g)].at(-1);
    if (match !== undefined) packages.add(relative(root, join(root, input.slice(0, match.index + match[0].length - 1))));
  }
  const sections = [...packages].sort().map((dir) => {
    const manifest = JSON.parse(readFileSync(join(root, dir, 'package.json'), 'utf8')) as { name: string; version: string; license?: string };
    const file = readdirSync(join(root, dir)).find((name) => /^(licen[cs]e|copying|notice)/i.test(name));
    const text = file === undefined ? '(no licence file in the package)' : readFileSync(join(root, dir, file), 'utf8').trim();
    return `${manifest.name} ${manifest.version} (${manifest.license ?? 'see text'})\n\n${text}`;
  });
  const header = 'cnfguard bundles the following packages into dist/ (scripts/build.ts); their licences follow.\n';
  return `${[header, ...sections].join(`\n\n${'-'.repeat(78)}\n\n`)}\n`;
}
