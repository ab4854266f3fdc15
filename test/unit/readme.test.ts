/**
 * The README is a landing page; what users copy lives in docs/: the annotated config in
 * docs/running.md must stay a valid config, and docs/troubleshooting.md must list every reason id.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { parseConfigText, type ConfigProblem } from '../../src/config/load.ts';
import { configSchema } from '../../src/config/schema.ts';
import { REASONS, type ReasonId } from '../../src/edge/render.ts';

const read = (path: string) => readFileSync(join(import.meta.dirname, '..', '..', path), 'utf8');

it('README.md is a landing page of at most 250 lines, with the two set-up commands first and a diagram', () => {
  const readme = read('README.md');
  expect(readme.split('\n').length).toBeLessThanOrEqual(250);
  const firstBlock = /```sh\n([\s\S]*?)```/.exec(readme)?.[1] ?? '';
  expect(firstBlock).toMatch(/^npm install && npm run demo /m);
  expect(firstBlock).toMatch(/^npm install && npm test /m);
  expect(readme).toContain('```mermaid\n');
});

it('the annotated config in docs/running.md parses and passes the schema', () => {
  const readme = read('docs/running.md');
  const block = /```yaml\n(listen:[\s\S]*?)```/.exec(readme)?.[1];
  expect(block).toBeDefined();
  const problems: ConfigProblem[] = [];
  const raw = parseConfigText(block as string, { INTROSPECTION_SECRET: 'secret' }, problems);
  expect(problems).toEqual([]);
  const parsed = configSchema.safeParse(raw);
  expect(parsed.success ? [] : parsed.error.issues).toEqual([]);
});

it('the troubleshooting table in docs/troubleshooting.md lists every reason id in the code, with its status, and no other', () => {
  const section = read('docs/troubleshooting.md');
  const table = section.slice(section.indexOf('| reason | status | what to check |'));
  const rows = [...table.matchAll(/^\| `([a-z0-9_]+)` \| (\d{3})[^|]*\| (.+) \|$/gm)].map(([, id, status, check]) => ({ id: id as string, status: Number(status), check: check as string }));
  expect(rows.map((r) => r.id).sort()).toEqual(Object.keys(REASONS).sort());
  for (const row of rows) {
    expect({ id: row.id, status: row.status }).toEqual({ id: row.id, status: REASONS[row.id as ReasonId].status });
    expect(row.check.trim().length).toBeGreaterThan(10);
  }
  expect(new Set(rows.map((r) => r.id)).size).toBe(rows.length);
});
