/**
 * zod's issues in a user's words: an unknown key with the key it probably meant, a missing
 * section named with what it is for, a wrong value with what was expected (from the JSON Schema
 * the docs are made of), an empty `${VAR}` named. One message per problem: nothing is reported at
 * a path whose `${VAR}` was already reported unset, and a misspelt key does not also report the
 * key it meant as missing.
 */
import type { z } from 'zod';
import { suggestion, didYouMean } from './did-you-mean.ts';
import { configJsonSchema, type JsonSchema } from './json-schema.ts';
import { formatPath, type ConfigProblem } from './problems.ts';
import { isSecretPath } from './secrets.ts';
import { typeOf } from './reference-doc.ts';

/** Paths (as formatPath writes them) whose value came from a `${VAR}` that was set but empty. */
export type EmptyVariables = Map<string, string[]>;

type Path = readonly PropertyKey[];

function schemaAt(root: JsonSchema, path: Path): JsonSchema | undefined {
  let node: JsonSchema | undefined = root;
  for (const part of path) {
    if (node === undefined) return undefined;
    const object: JsonSchema = node.anyOf?.find((member) => member.properties !== undefined || member.items !== undefined) ?? node;
    node = typeof part === 'number' ? object.items : object.properties?.[String(part)];
  }
  return node;
}

function valueAt(input: unknown, path: Path): unknown {
  let node = input;
  for (const part of path) {
    if (node === null || typeof node !== 'object') return undefined;
    node = (node as Record<PropertyKey, unknown>)[part];
  }
  return node;
}

/** `\`auto\` \| integer 1–64` as prose: auto or integer 1–64. */
function expected(schema: JsonSchema): string {
  return typeOf(schema).replaceAll('`', '').replaceAll(' \\| ', ' or ').replace(/^section$/, 'a mapping of keys (see docs/configuration.md)');
}

/** A value as a problem quotes it; at a secret key only its kind (problems are logged). */
function shown(value: unknown, path: string): string {
  if (isSecretPath(path)) return value === null ? 'null' : Array.isArray(value) ? 'a list' : `a ${typeof value}`;
  const text = JSON.stringify(value);
  return text === undefined ? String(value) : text.length > 60 ? `${text.slice(0, 60)}…` : text;
}

/** zod's own wording, not one of ours: replaced by what the docs say the key is. */
const GENERIC = /^(Invalid|Too (big|small)|Expected|Unrecognized)/;

function lowerFirst(text: string): string {
  return text.length > 1 && /^[A-Z][a-z]/.test(text) ? text[0]?.toLowerCase() + text.slice(1) : text;
}

export function humanProblems(issues: readonly z.core.$ZodIssue[], input: unknown, preProblems: readonly ConfigProblem[], empty: EmptyVariables = new Map()): ConfigProblem[] {
  let root: JsonSchema | undefined;
  const schema = () => (root ??= configJsonSchema());
  const reported = new Set(preProblems.map((p) => p.path));
  const problems: ConfigProblem[] = [];
  const meant = new Set<string>();
  for (const issue of issues) {
    if (issue.code !== 'unrecognized_keys') continue;
    const known = Object.keys(schemaAt(schema(), issue.path)?.properties ?? {});
    for (const key of issue.keys) {
      const match = didYouMean(key, known);
      if (match !== undefined) meant.add(formatPath([...issue.path, match]));
      const list = known.length > 0 && known.length <= 16 ? `; the keys here are ${known.join(', ')}` : '; every key is in docs/configuration.md';
      problems.push({ path: formatPath(issue.path), message: `unknown key ${JSON.stringify(key)}${match === undefined ? list : suggestion(key, known)}` });
    }
  }
  for (const issue of issues) {
    if (issue.code === 'unrecognized_keys') continue;
    const path = formatPath(issue.path);
    // An unset variable was reported where it stands; what it left empty would only echo it.
    if ([...reported].some((at) => at !== '' && (path === at || path.startsWith(`${at}.`) || path.startsWith(`${at}[`)))) continue;
    const variables = empty.get(path);
    if (variables !== undefined) {
      problems.push({ path, message: `${variables.join(', ')} ${variables.length === 1 ? 'is' : 'are'} set but empty, and this value cannot be empty (${lowerFirst(issue.message)})` });
      continue;
    }
    const value = valueAt(input, issue.path);
    const at = schemaAt(schema(), issue.path);
    if (value === undefined && issue.code === 'invalid_type') {
      if (meant.has(path)) continue; // the misspelt key above is the one problem
      const what = at?.type === 'object' ? 'section' : 'key';
      problems.push({ path, message: `missing: this ${what} is required${at?.description === undefined ? '' : ` (${lowerFirst(at.description)})`}` });
      continue;
    }
    if (!GENERIC.test(issue.message) || at === undefined) {
      problems.push({ path, message: issue.message });
      continue;
    }
    if (issue.code === 'too_big' || issue.code === 'too_small') {
      problems.push({ path, message: `${shown(value, path)} is out of range: expected ${expected(at)}` });
      continue;
    }
    const choices = (at.enum ?? at.anyOf?.flatMap((member) => member.enum ?? []) ?? []).filter((choice): choice is string => typeof choice === 'string');
    const hint = typeof value === 'string' && !isSecretPath(path) ? suggestion(value, choices) : '';
    problems.push({ path, message: `expected ${expected(at)}, got ${shown(value, path)}${hint}` });
  }
  return problems;
}
