/**
 * The config file's text as a plain object: YAML (duplicate keys and alias bombs refused), then
 * `${VAR}` / `${VAR:-default}` from the environment. Problems are collected with their YAML path.
 */
import { LineCounter, isMap, isScalar, isSeq, parseDocument, type Node as YamlNode } from 'yaml';
import { formatPath, type ConfigProblem } from './problems.ts';
import { maskedLine } from './secrets.ts';

export type Environment = Readonly<Record<string, string | undefined>>;

const REFERENCE = /\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g;

/**
 * Replaces `${VAR}` and `${VAR:-default}` in one string; `$$` is a literal `$`. The result is
 * text: the schema reads numbers and booleans out of it where it expects them.
 */
export function interpolate(value: string, env: Environment, path: string, problems: ConfigProblem[], empty?: Map<string, string[]>): string {
  const unclosed = unclosedReference(value);
  if (unclosed !== undefined) problems.push({ path, message: `unclosed reference ${unclosed}: a reference ends with "}" (\${NAME} or \${NAME:-default}; $\${ is a literal "\${")` });
  return value.replace(REFERENCE, (match, name: string | undefined, fallback: string | undefined) => {
    if (match === '$$') return '$';
    const fromEnv = env[name as string];
    // Set but empty: kept, and noted, so a value that may not be empty names the variable.
    if (fromEnv === '' && fallback === undefined && empty !== undefined) empty.set(path, [...(empty.get(path) ?? []), name as string]);
    if (fromEnv !== undefined && (fromEnv !== '' || fallback === undefined)) return fromEnv;
    if (fallback !== undefined) return fallback;
    problems.push({ path, message: `environment variable ${name} is not set (use \${${name}:-default} for a default)` });
    return '';
  });
}

/**
 * A `${` that no `}` closes (`${SECRET:-value` ), shown as `"${NAME"` or `"${NAME:-…"`: never the
 * default that follows, which may be a secret. Undefined when every `${` is closed (or is `$${`).
 */
export function unclosedReference(value: string): string | undefined {
  const rest = value.replace(REFERENCE, ' ');
  const at = rest.search(/\$\{[^}]*$/);
  if (at === -1) return undefined;
  const head = /^\$\{([A-Za-z_][A-Za-z0-9_]*)?(:-)?/.exec(rest.slice(at)) as RegExpExecArray;
  return `"\${${head[1] ?? ''}${head[2] === undefined ? '' : ':-…'}"`;
}

function interpolateTree(node: unknown, env: Environment, path: (string | number)[], problems: ConfigProblem[], refs: References, empty?: Map<string, string[]>): unknown {
  if (typeof node === 'string') return interpolate(refs.restore(node), env, formatPath(path), problems, empty);
  if (Array.isArray(node)) return node.map((item, index) => interpolateTree(item, env, [...path, index], problems, refs, empty));
  if (node !== null && typeof node === 'object') {
    return Object.fromEntries(
      Object.entries(node).map(([rawKey, value]) => {
        // Keys are not interpolated; a reference in one reads as written.
        const key = refs.restore(rawKey);
        return [key, interpolateTree(value, env, [...path, key], problems, refs, empty)];
      }),
    );
  }
  return node;
}

/**
 * `${…}` references stood in for by placeholders while the YAML is parsed, so that a reference is
 * a plain word wherever it stands: `{ port: ${PORT:-8443} }` is a valid flow map (its braces and
 * colon would otherwise be YAML syntax). The references are put back into the parsed strings and
 * interpolated there, so an environment value can never inject YAML either.
 */
interface References {
  /** The text the parser sees. */
  text: string;
  /** A parsed string with its placeholders replaced by the references they stood for. */
  restore(value: string): string;
  /** An offset in `text` as an offset in the original text (for error positions). */
  originalOffset(offset: number): number;
}

function maskReferences(original: string): References {
  let marker = 'cnfguardref';
  while (original.includes(marker)) marker += 'x';
  const refs: string[] = [];
  const index = new Map<string, number>();
  const shifts: { at: number; delta: number }[] = []; // at: offset in the masked text after a placeholder
  let delta = 0;
  const text = original.replace(REFERENCE, (match: string, _name: unknown, _fallback: unknown, offset: number) => {
    if (match === '$$' || match.includes('\n')) return match;
    let i = index.get(match);
    if (i === undefined) {
      i = refs.push(match) - 1;
      index.set(match, i);
    }
    const placeholder = `${marker}${i}z`;
    delta += match.length - placeholder.length;
    shifts.push({ at: offset - (delta - (match.length - placeholder.length)) + placeholder.length, delta });
    return placeholder;
  });
  const pattern = new RegExp(`${marker}(\\d+)z`, 'g');
  return {
    text,
    restore: (value) => (refs.length === 0 || !value.includes(marker) ? value : value.replace(pattern, (whole, i: string) => refs[Number(i)] ?? whole)),
    originalOffset(offset) {
      let shift = 0;
      for (const s of shifts) {
        if (s.at > offset) break;
        shift = s.delta;
      }
      return offset + shift;
    },
  };
}

/**
 * One YAML syntax error, short: `file:line:col`, the message, the line with a caret, and a hint
 * when the line holds `${` (later errors are mostly echoes of the first: counted, not listed).
 */
function yamlProblem(error: { message: string; pos: [number, number] }, more: number, refs: References, original: string, source: string | undefined): ConfigProblem {
  const offset = Math.min(refs.originalOffset(error.pos[0]), original.length);
  const lineStart = original.lastIndexOf('\n', offset - 1) + 1;
  const lineEnd = original.indexOf('\n', offset);
  const lineText = original.slice(lineStart, lineEnd === -1 ? undefined : lineEnd);
  const line = original.slice(0, lineStart).split('\n').length;
  const column = offset - lineStart + 1;
  const where = source === undefined ? `line ${line}, column ${column}` : `${source}:${line}:${column}`;
  const message = (error.message.split('\n')[0] ?? error.message).replace(/ at line \d+, column \d+:?$/, '');
  // The line is logged with the problem (a rejected reload): a secret on it is masked.
  const masked = maskedLine(lineText);
  const shown = masked.length > 160 ? `${masked.slice(0, 160)}…` : masked;
  const lines = [`YAML: ${where}: ${message}`, `      ${shown}`, `      ${' '.repeat(Math.min(column - 1, 160))}^`];
  // The line before too: a reference that swallowed a flow map's "}" is noticed one line later.
  const previousLine = original.slice(original.lastIndexOf('\n', lineStart - 2) + 1, Math.max(lineStart - 1, 0));
  const hinted = lineText.includes('${') ? 'this line has' : previousLine.includes('${') ? `line ${line - 1} has` : undefined;
  if (hinted !== undefined) {
    lines.push(
      `    ${hinted} a "\${": a reference is \${NAME} or \${NAME:-default}, ending at the first "}" (NAME: letters, digits, _); anything else is YAML text, where "{" opens a flow map: close it, or quote the value`,
    );
  }
  if (more > 0) lines.push(`    (${more} more YAML error${more === 1 ? '' : 's'} after this one, probably caused by it)`);
  return { path: '', message: lines.join('\n') };
}

/** A key given twice is an error, not a silent override: reported at the key's own path. */
function duplicateKeys(node: YamlNode | null, path: (string | number)[], lines: LineCounter, problems: ConfigProblem[], refs: References): void {
  if (isMap(node)) {
    const seen = new Set<unknown>();
    for (const pair of node.items) {
      const key = isScalar(pair.key) ? pair.key.value : pair.key;
      const keyPath = [...path, typeof key === 'string' ? refs.restore(key) : String(key)];
      if (seen.has(key)) {
        const offset = isScalar(pair.key) ? pair.key.range?.[0] : undefined;
        problems.push({ path: formatPath(keyPath), message: `duplicate key${offset === undefined ? '' : ` (line ${lines.linePos(offset).line})`}` });
      }
      seen.add(key);
      duplicateKeys(pair.value as YamlNode | null, keyPath, lines, problems, refs);
    }
  } else if (isSeq(node)) {
    node.items.forEach((item, index) => duplicateKeys(item as YamlNode | null, [...path, index], lines, problems, refs));
  }
}

/**
 * Parses YAML text and interpolates the environment; problems are collected, not thrown.
 * `source` (the file) goes into YAML error positions; `empty` collects the paths whose `${VAR}` was
 * set but empty (the loader names the variable if the schema refuses the empty value).
 */
export function parseConfigText(text: string, env: Environment, problems: ConfigProblem[], source?: string, empty?: Map<string, string[]>): unknown {
  const refs = maskReferences(text);
  const lines = new LineCounter();
  const doc = parseDocument(refs.text, { prettyErrors: false, uniqueKeys: false, lineCounter: lines });
  const first = doc.errors[0];
  if (first !== undefined) {
    problems.push(yamlProblem(first, doc.errors.length - 1, refs, text, source));
    return undefined;
  }
  const before = problems.length;
  duplicateKeys(doc.contents, [], lines, problems, refs);
  if (problems.length > before) return undefined;
  let value: unknown;
  try {
    // Aliases resolve here: an alias without its anchor, or an alias bomb, throws only now.
    value = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    problems.push({ path: '', message: `YAML: ${(err as Error).message.split('\n')[0] ?? 'unreadable document'}` });
    return undefined;
  }
  if (!isMap(doc.contents) && !(doc.contents === null)) {
    problems.push({ path: '', message: isSeq(doc.contents) ? 'the config must be a mapping, not a list' : 'the config must be a mapping' });
    return undefined;
  }
  return interpolateTree(value ?? {}, env, [], problems, refs, empty);
}
