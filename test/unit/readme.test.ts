/** The README's config reference must stay a valid config: it is what users copy. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { parseConfigText, type ConfigProblem } from '../../src/config/load.ts';
import { configSchema } from '../../src/config/schema.ts';
import { REASONS, type ReasonId } from '../../src/edge/render.ts';

it('the config reference in README.md parses and passes the schema', () => {
  const readme = readFileSync(join(import.meta.dirname, '..', '..', 'README.md'), 'utf8');
  const block = /```yaml\n(listen:[\s\S]*?)```/.exec(readme)?.[1];
  expect(block).toBeDefined();
  const problems: ConfigProblem[] = [];
  const raw = parseConfigText(block as string, { INTROSPECTION_SECRET: 'secret' }, problems);
  expect(problems).toEqual([]);
  const parsed = configSchema.safeParse(raw);
  expect(parsed.success ? [] : parsed.error.issues).toEqual([]);
});

it('the troubleshooting table lists every reason id in the code, with its status, and no other', () => {
  const readme = readFileSync(join(import.meta.dirname, '..', '..', 'README.md'), 'utf8');
  const section = /\n## Troubleshooting\n([\s\S]*?)\n## /.exec(readme)?.[1] ?? '';
  const table = section.slice(section.indexOf('| reason | status | what to check |'));
  const rows = [...table.matchAll(/^\| `([a-z0-9_]+)` \| (\d{3})[^|]*\| (.+) \|$/gm)].map(([, id, status, check]) => ({ id: id as string, status: Number(status), check: check as string }));
  expect(rows.map((r) => r.id).sort()).toEqual(Object.keys(REASONS).sort());
  for (const row of rows) {
    expect({ id: row.id, status: row.status }).toEqual({ id: row.id, status: REASONS[row.id as ReasonId].status });
    expect(row.check.trim().length).toBeGreaterThan(10);
  }
  expect(new Set(rows.map((r) => r.id)).size).toBe(rows.length);
});
