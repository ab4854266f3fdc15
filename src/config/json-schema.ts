/**
 * The config's JSON Schema (draft 2020-12), made from the zod schema: what a user writes
 * (`io: 'input'`), so defaults are optional keys and `${VAR}` references are allowed where the
 * loader reads numbers and flags out of text. `cnfguard schema` prints it; docs/cnfguard.schema.json
 * is the same text (scripts/generate-docs.ts writes both, a unit test fails when they differ).
 */
import * as z from 'zod';
import { buildConfigSchema } from './schema.ts';

export type JsonSchema = Record<string, unknown> & {
  type?: string | string[];
  description?: string;
  default?: unknown;
  properties?: Record<string, JsonSchema>;
  items?: JsonSchema;
  anyOf?: JsonSchema[];
  enum?: unknown[];
  required?: string[];
};

export const SCHEMA_ID = 'https://github.com/cnfguard/cnfguard/blob/main/docs/cnfguard.schema.json';

/** A `${VAR}` or `${VAR:-default}` reference: text that the loader interpolates before reading a number or flag from it. */
const ENV_REFERENCE: JsonSchema = { type: 'string', pattern: '\\$\\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\\}' };

interface ZodInternals {
  _zod: { def: { type: string; in?: { _zod: { def: { type: string } } }; defaultValue?: unknown } };
}

export function configJsonSchema(): JsonSchema {
  const schema = z.toJSONSchema(buildConfigSchema(), {
    target: 'draft-2020-12',
    io: 'input',
    // Transforms only normalise (lower-case header names, de-duplicated lists): their input is the inner schema's.
    unrepresentable: 'any',
    override: ({ zodSchema, jsonSchema }) => {
      const def = (zodSchema as unknown as ZodInternals)._zod.def;
      const json = jsonSchema as JsonSchema;
      // zod drops a default in front of a transforming schema in input mode; the value is a valid input here.
      if (def.type === 'default' && json.default === undefined) json.default = def.defaultValue;
      // A number or flag read out of text (schema-fields.ts fromText): `${PORT}` is a valid input.
      // A constrained string (URL, pattern, enum) may be written as a reference too: the loader checks the value it stands for.
      const fromText = def.type === 'pipe' && def.in?._zod.def.type === 'transform';
      const constrainedText = json.type === 'string' && (json.format !== undefined || json.pattern !== undefined || json.enum !== undefined);
      if (json.anyOf !== undefined && fromText) json.anyOf = [...json.anyOf, ENV_REFERENCE];
      else if (fromText || constrainedText) {
        const { description, default: fallback, ...value } = json;
        for (const key of Object.keys(json)) delete json[key];
        Object.assign(json, description === undefined ? {} : { description }, fallback === undefined ? {} : { default: fallback }, { anyOf: [value, ENV_REFERENCE] });
      }
    },
  }) as JsonSchema;
  return { $schema: schema.$schema, $id: SCHEMA_ID, title: 'cnfguard.yaml', ...schema };
}

/** The committed file's text: stable key order, two-space indent, final newline. */
export function configJsonSchemaText(): string {
  return `${JSON.stringify(configJsonSchema(), null, 2)}\n`;
}
