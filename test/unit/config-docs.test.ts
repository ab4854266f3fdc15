/**
 * docs/configuration.md and docs/cnfguard.schema.json are generated (npm run docs): both must be
 * what the schema makes now, every key must say what it means, and the JSON Schema must accept
 * the configs we ship and refuse a typo the way `check` does.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { configJsonSchema, configJsonSchemaText, type JsonSchema } from '../../src/config/json-schema.ts';
import { configurationMarkdown } from '../../src/config/reference-doc.ts';

const root = join(import.meta.dirname, '..', '..');
const read = (path: string) => readFileSync(join(root, path), 'utf8');
const STALE = 'stale: run `npm run docs` and commit docs/configuration.md and docs/cnfguard.schema.json';

/** Every key of the schema, with its dotted path. */
function keys(schema: JsonSchema, path = ''): [string, JsonSchema][] {
  const out: [string, JsonSchema][] = [];
  const object = schema.items ?? schema;
  for (const [key, child] of Object.entries(object.properties ?? {})) {
    const at = `${path}${schema.items ? '[]' : ''}${path || schema.items ? '.' : ''}${key}`;
    out.push([at, child], ...keys(child, at));
  }
  for (const part of schema.anyOf ?? []) out.push(...keys(part, path));
  return out;
}

function schemaValidator() {
  const ajv = new Ajv2020({ strict: false, allErrors: true, validateFormats: false });
  return ajv.compile(JSON.parse(read('docs/cnfguard.schema.json')) as object);
}

describe('the generated config reference', () => {
  it('every schema key has a description', () => {
    const all = keys(configJsonSchema());
    expect(all.length).toBeGreaterThan(100);
    expect(all.filter(([, schema]) => (schema.description ?? '').trim().length < 10).map(([path]) => path)).toEqual([]);
  });

  it('docs/cnfguard.schema.json is what `cnfguard schema` prints', () => {
    expect(read('docs/cnfguard.schema.json'), STALE).toBe(configJsonSchemaText());
  });

  it('docs/configuration.md is generated from the schema and the reload table', () => {
    const markdown = read('docs/configuration.md');
    expect(markdown, STALE).toBe(configurationMarkdown(configJsonSchema()));
    for (const [path] of keys(configJsonSchema())) expect(markdown).toContain(`\`${path}\``);
    expect(markdown).not.toMatch(/\| \? \|/);
  });

  it('is draft 2020-12', () => {
    expect(configJsonSchema().$schema).toBe('https://json-schema.org/draft/2020-12/schema');
  });
});

describe('docs/cnfguard.schema.json', () => {
  const validate = schemaValidator();
  it.each(['deploy/cnfguard.yaml', 'deploy/cnfguard.shared-state.yaml', 'k8s/config/cnfguard.yaml'])('accepts %s', (file) => {
    const ok = validate(parse(read(file)));
    expect(ok ? [] : validate.errors).toEqual([]);
  });

  it.each([
    ['a misspelt key', { tls: { cert: 'a', key: 'b', clientCA: 'c' } }],
    ['a missing tls block', {}],
    ['workers: lots', { workers: 'lots' }],
    ['a port out of range', { listen: { port: 99999 } }],
  ])('refuses %s', (_name, change) => {
    const base = { tls: { cert: 'a', key: 'b' }, introspection: { url: 'https://as.example/i', clientId: 'c', clientSecret: 's' }, upstream: 'http://127.0.0.1:8080' };
    const config = Object.keys(change).length === 0 ? { introspection: base.introspection, upstream: base.upstream } : { ...base, ...change };
    expect(validate(config)).toBe(false);
  });

  it('accepts ${VAR} references where the loader reads numbers and flags from text', () => {
    const base = { tls: { cert: 'a', key: 'b' }, introspection: { url: '${AS_URL}', clientId: 'c', clientSecret: '${SECRET}' }, upstream: 'http://127.0.0.1:8080' };
    expect(validate({ ...base, listen: { port: '${PORT:-8443}', http2: '${H2}' }, workers: '${WORKERS}' })).toBe(true);
  });
});

describe('the config `cnfguard init` writes', () => {
  it('passes the JSON Schema', async () => {
    const { INIT_CONFIG } = await import('../../src/cli/init.ts');
    const validate = schemaValidator();
    const ok = validate(parse(INIT_CONFIG));
    expect(ok ? [] : validate.errors).toEqual([]);
  });
});
