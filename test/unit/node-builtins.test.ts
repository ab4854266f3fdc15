/**
 * The build takes Node's built-ins without their ESM facade (scripts/node-builtins.ts): an ES
 * module importing `node:http` (default and named, as src/ does) bundled with the plugin works as
 * before and leaves Node's own undici unloaded, which the same module bundled without the plugin
 * loads; a getter-backed export imported by name fails the build instead of running its getter.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { build, type Plugin } from 'esbuild';
import { afterAll, expect, it } from 'vitest';
import { nodeBuiltinsWithoutFacade, plainExports } from '../../scripts/node-builtins.ts';

const dir = mkdtempSync(join(tmpdir(), 'cnfguard-builtins-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const MODULE = `
import http, { STATUS_CODES } from 'node:http';
import { createHash } from 'crypto';
const undici = process.moduleLoadList.some((name) => name.includes('undici'));
console.log(JSON.stringify({ undici, server: typeof http.createServer, teapot: STATUS_CODES[418], hash: createHash('sha256').update('x').digest('hex').slice(0, 8) }));
`;

async function bundleAndRun(name: string, plugins: Plugin[]): Promise<Record<string, unknown>> {
  const outfile = join(dir, `${name}.mjs`);
  await build({ stdin: { contents: MODULE, resolveDir: dir }, outfile, bundle: true, format: 'esm', platform: 'node', target: 'node24', plugins, logLevel: 'silent' });
  const result = spawnSync(process.execPath, [outfile], { encoding: 'utf8', timeout: 20_000 });
  expect(result.stderr).toBe('');
  return JSON.parse(result.stdout) as Record<string, unknown>;
}

it('bundled with the plugin, node:http works and Node does not load its own undici', async () => {
  const expected = { server: 'function', teapot: "I'm a Teapot", hash: '2d711642' };
  expect(await bundleAndRun('with', [nodeBuiltinsWithoutFacade])).toEqual({ undici: false, ...expected });
  // What the plugin is for: the ESM facade of node:http runs its WebSocket getter.
  expect(await bundleAndRun('without', [])).toEqual({ undici: true, ...expected });
});

it('exports data properties only; a getter imported by name fails the build', async () => {
  expect(plainExports('node:http')).toContain('createServer');
  expect(plainExports('node:http')).not.toContain('WebSocket');
  const failing = build({ stdin: { contents: "import { WebSocket } from 'node:http'; console.log(WebSocket);", resolveDir: dir }, write: false, bundle: true, format: 'esm', platform: 'node', plugins: [nodeBuiltinsWithoutFacade], logLevel: 'silent' });
  await expect(failing).rejects.toThrow(/No matching export .* for import "WebSocket"/);
});
