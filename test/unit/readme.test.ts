/** The README's config reference must stay a valid config: it is what users copy. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { parseConfigText, type ConfigProblem } from '../../src/config/load.ts';
import { configSchema } from '../../src/config/schema.ts';

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
