/**
 * A load builds the config schema and lets it go (issue 32): an idle server holds none of its zod
 * objects, only a few small ones made before the first build (schema-fields.ts
 * makeFirstOfEachType). In a child node with --expose-gc: load a config as `run` does, collect,
 * count the zod schemas still reachable in a heap snapshot, and compare with one schema held.
 */
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { generateDevCertificates } from '../../src/tls/dev-certs.ts';

const CONFIG = join(import.meta.dirname, '..', '..', 'src', 'config');
const SCRIPT = `
import v8 from 'node:v8';
import { loadConfigFile } from ${JSON.stringify(join(CONFIG, 'load.ts'))};
import { buildConfigSchema } from ${JSON.stringify(join(CONFIG, 'schema.ts'))};
/** Objects with an own _zod property (every zod schema has one), after a full collection. */
async function liveSchemas() {
  globalThis.gc();
  let text = '';
  for await (const chunk of v8.getHeapSnapshot()) text += chunk;
  const { snapshot: { meta }, nodes, edges, strings } = JSON.parse(text);
  const nodeFields = meta.node_fields.length, edgeFields = meta.edge_fields.length;
  const edgeCount = meta.node_fields.indexOf('edge_count'), property = meta.edge_types[0].indexOf('property');
  let count = 0;
  for (let node = 0, edge = 0; node < nodes.length; node += nodeFields) {
    const end = edge + nodes[node + edgeCount] * edgeFields;
    for (; edge < end; edge += edgeFields) if (edges[edge] === property && strings[edges[edge + 1]] === '_zod') count++;
  }
  return count;
}
const loaded = loadConfigFile(process.argv[1]);
const idle = await liveSchemas();
const held = buildConfigSchema();
const withOne = await liveSchemas();
console.log(JSON.stringify({ upstream: loaded.settings.upstream, idle, withOne, parses: held.safeParse({}).success }));
`;

let dir: string;
let config: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cnfguard-config-memory-'));
  const certs = generateDevCertificates();
  await writeFile(join(dir, 'server.crt'), certs.server.cert);
  await writeFile(join(dir, 'server.key'), certs.server.key);
  config = join(dir, 'cnfguard.yaml');
  const yaml = 'tls: { cert: server.crt, key: server.key }\nintrospection: { url: https://as.example/introspect, clientId: rs, clientSecret: s }\nupstream: http://127.0.0.1:8080\nroutes: [{ pathPrefix: /admin, scopes: [admin] }]\n';
  await writeFile(config, yaml);
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

it('a loaded config keeps none of its schema: what stays live is a few small zod objects, not a schema', () => {
  const result = spawnSync(process.execPath, ['--expose-gc', '--input-type=module', '-e', SCRIPT, config], { encoding: 'utf8', timeout: 60_000 });
  expect(result.stderr).toBe('');
  const { upstream, idle, withOne, parses } = JSON.parse(result.stdout) as { upstream: string; idle: number; withOne: number; parses: boolean };
  expect(upstream).toBe('http://127.0.0.1:8080');
  expect(parses).toBe(false);
  // One schema is several hundred zod objects; after a load, a tenth of that at most stays.
  expect(withOne - idle).toBeGreaterThan(300);
  expect(idle).toBeLessThan((withOne - idle) / 10);
});
