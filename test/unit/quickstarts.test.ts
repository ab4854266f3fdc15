/**
 * docs/quickstarts.md must not drift from the code: every config block (a yaml block whose first
 * line is `# cnfguard.yaml`) passes the real schema and names no unreachable route, and every sample
 * introspection answer (a json block with "active") is read by cnfguard's own answer parser as an
 * active, bound token. Files the configs name are not read: the schema checks their paths only.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseConfigText, type ConfigProblem } from '../../src/config/load.ts';
import { configSchema } from '../../src/config/schema.ts';
import { tokenInfoFromAnswer } from '../../src/introspection/token-info.ts';
import { shadowedRoutes } from '../../src/pipeline/route.ts';

const doc = readFileSync(join(import.meta.dirname, '..', '..', 'docs', 'quickstarts.md'), 'utf8');

function blocks(language: string): string[] {
  return [...doc.matchAll(new RegExp('^```' + language + '\\n([\\s\\S]*?)^```', 'gm'))].map((m) => m[1] as string);
}

const MARKER = '# cnfguard.yaml';
const yamlBlocks = blocks('yaml');
const configs = yamlBlocks.filter((block) => block.startsWith(MARKER));
const answers = blocks('json').filter((block) => block.includes('"active"'));
const titleOf = (block: string) => (block.split('\n')[0] as string).slice(MARKER.length + 1).trim();

describe('docs/quickstarts.md', () => {
  it('has a config for the demo AS and every vendor, and no config block without the marker', () => {
    const titles = configs.map(titleOf).join('\n');
    for (const name of ['demo AS', 'Keycloak', 'Auth0', 'Okta', 'Curity', 'PingFederate', 'PingOne']) expect(titles).toContain(name);
    expect(yamlBlocks.filter((block) => !block.startsWith(MARKER) && /^introspection:/m.test(block))).toEqual([]);
  });

  it.each(configs.map((block) => [titleOf(block), block]))('config "%s" passes the schema', (_title, block) => {
    const problems: ConfigProblem[] = [];
    const raw = parseConfigText(block, { INTROSPECTION_SECRET: 'secret' }, problems);
    expect(problems).toEqual([]);
    const parsed = configSchema.safeParse(raw);
    expect(parsed.success ? [] : parsed.error.issues).toEqual([]);
    if (parsed.success) expect(shadowedRoutes(parsed.data.routes)).toEqual([]);
  });

  it('has a sample answer per section, each read as an active token bound by x5t#S256 or jkt', () => {
    expect(answers.length).toBeGreaterThanOrEqual(6);
    for (const block of answers) {
      const info = tokenInfoFromAnswer(JSON.parse(block));
      expect(info.active).toBe(true);
      expect(typeof info.scope).toBe('string');
      expect(info.clientId).toBeDefined();
      expect(info.exp).toBeTypeOf('number');
      expect(info.aud.length).toBeGreaterThan(0);
      expect(Object.keys(info.cnf ?? {}).filter((m) => m === 'x5t#S256' || m === 'jkt')).toHaveLength(1);
    }
  });
});

describe('every shell command in README.md and docs/ runs on an older system Node', () => {
  const root = join(import.meta.dirname, '..', '..');
  const scripts = Object.keys((JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts);
  const pages = ['README.md', ...readdirSync(join(root, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)];
  /** Commands in ```sh blocks (continuations joined) and inline code spans that start with node, npm or npx. */
  function commands(text: string): string[] {
    const blocks = [...text.matchAll(/^ *```(?:sh|bash|shell)\n([\s\S]*?)^ *```/gm)].flatMap((m) => (m[1] as string).replace(/\\\n\s*/g, ' ').split('\n'));
    const inline = [...text.replace(/^ *```[\s\S]*?^ *```/gm, '').matchAll(/`((?:node|npm|npx) [^`]+)`/g)].map((m) => m[1] as string);
    return [...blocks, ...inline].map((line) => line.trim()).filter((line) => line !== '' && !line.startsWith('#'));
  }

  it.each(pages)('%s: no `node file.ts` (type stripping needs Node 24), and every `npm run` script exists', (page) => {
    const found = commands(readFileSync(join(root, page), 'utf8'));
    // `node X.ts` fails with ERR_UNKNOWN_FILE_EXTENSION on Node 20; node_modules/.bin/node is the pinned 24.
    expect(found.filter((command) => /(^|[\s;&|(])node\s+(--\S+\s+)*\S+\.ts\b/.test(command) && !/node_modules\/\.bin\/node\s/.test(command))).toEqual([]);
    const missing = found.flatMap((command) => [...command.matchAll(/npm run ([\w:.-]+)/g)].map((m) => m[1] as string)).filter((name) => !scripts.includes(name));
    expect(missing).toEqual([]);
  });

  it('the check sees the commands it checks', () => {
    expect(commands(readFileSync(join(root, 'docs', 'quickstarts.md'), 'utf8'))).toContain('npm run demo:as -- --certs ./certs --host 127.0.0.1 --port 9443');
    expect(commands('```sh\nnode demo/serve-authorization-server.ts --certs x\n```\n').some((c) => /node\s+\S+\.ts/.test(c))).toBe(true);
  });
});
