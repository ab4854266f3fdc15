/**
 * docs/quickstarts.md must not drift from the code: every config block (a yaml block whose first
 * line is `# cnfguard.yaml`) passes the real schema and names no unreachable route, and every sample
 * introspection answer (a json block with "active") is read by cnfguard's own answer parser as an
 * active, bound token. Files the configs name are not read: the schema checks their paths only.
 */
import { readFileSync } from 'node:fs';
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
