/**
 * `npm run docs`: writes docs/configuration.md and docs/cnfguard.schema.json from the config
 * schema (src/config/schema.ts, its `.describe()` texts) and the reload table. Run it after
 * changing a config key; test/unit/config-docs.test.ts fails while either file is stale.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { configJsonSchema, configJsonSchemaText } from '../src/config/json-schema.ts';
import { configurationMarkdown } from '../src/config/reference-doc.ts';

const docs = join(import.meta.dirname, '..', 'docs');
writeFileSync(join(docs, 'cnfguard.schema.json'), configJsonSchemaText());
writeFileSync(join(docs, 'configuration.md'), configurationMarkdown(configJsonSchema()));
process.stdout.write('wrote docs/cnfguard.schema.json and docs/configuration.md\n');
