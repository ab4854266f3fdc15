/**
 * Reading the config: YAML, `${VAR}` / `${VAR:-default}` from the environment, the schema, then the
 * files it names (PEMs are parsed here). Every problem is collected with its YAML path, so one
 * `cnfguard check` lists them all; nothing is returned half-loaded, and the result is frozen.
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { LineCounter, isMap, isScalar, isSeq, parseDocument, stringify, type Node as YamlNode } from 'yaml';
import { configWarnings, listenerClashes } from './checks.ts';
import { configSchema, type Settings } from './schema.ts';
import { shadowedRoutes } from '../pipeline/route.ts';
import { splitPemCertificates } from '../tls/certificates.ts';

export interface ConfigProblem {
  /** YAML path, e.g. `introspection.url` or `routes[0].upstream`; empty for the file itself. */
  path: string;
  message: string;
}

export class ConfigError extends Error {
  readonly problems: readonly ConfigProblem[];
  readonly source: string;

  constructor(source: string, problems: ConfigProblem[]) {
    super(`invalid config ${source}:\n${problems.map((p) => `  - ${p.path ? `${p.path}: ` : ''}${p.message}`).join('\n')}`);
    this.name = 'ConfigError';
    this.source = source;
    this.problems = problems;
  }
}

/** PEM material read from the files the settings name. */
export interface TlsMaterial {
  cert: string;
  key: string;
  clientCa: string | undefined;
}

export interface IntrospectionMaterial {
  clientSecret: string | undefined;
  ca: string | undefined;
  cert: string | undefined;
  key: string | undefined;
}

export interface SharedStateMaterial {
  secret: Buffer;
  ca: string | undefined;
}

export interface LoadedConfig {
  /** Where the config came from (a file path, or a label for embedded configs). */
  source: string;
  /** The file to read again on reload; undefined for a config built in code. */
  file: string | undefined;
  settings: Settings;
  tls: TlsMaterial;
  introspection: IntrospectionMaterial;
  /** Present when `sharedState` is set. */
  sharedState?: SharedStateMaterial | undefined;
  /** Notes from loading, beside {@link configWarnings}: relative paths found only from the working directory. */
  warnings?: readonly ConfigProblem[];
}

export type Environment = Readonly<Record<string, string | undefined>>;

export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out ? `.${String(part)}` : String(part);
  }
  return out;
}

const REFERENCE = /\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g;

/**
 * Replaces `${VAR}` and `${VAR:-default}` in one string; `$$` is a literal `$`. The result is
 * text: the schema reads numbers and booleans out of it where it expects them.
 */
export function interpolate(value: string, env: Environment, path: string, problems: ConfigProblem[]): string {
  return value.replace(REFERENCE, (match, name: string | undefined, fallback: string | undefined) => {
    if (match === '$$') return '$';
    const fromEnv = env[name as string];
    if (fromEnv !== undefined && (fromEnv !== '' || fallback === undefined)) return fromEnv;
    if (fallback !== undefined) return fallback;
    problems.push({ path, message: `environment variable ${name} is not set (use \${${name}:-default} for a default)` });
    return '';
  });
}

function interpolateTree(node: unknown, env: Environment, path: (string | number)[], problems: ConfigProblem[], refs: References): unknown {
  if (typeof node === 'string') return interpolate(refs.restore(node), env, formatPath(path), problems);
  if (Array.isArray(node)) return node.map((item, index) => interpolateTree(item, env, [...path, index], problems, refs));
  if (node !== null && typeof node === 'object') {
    return Object.fromEntries(
      Object.entries(node).map(([rawKey, value]) => {
        // Keys are not interpolated; a reference in one reads as written.
        const key = refs.restore(rawKey);
        return [key, interpolateTree(value, env, [...path, key], problems, refs)];
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
  const shown = lineText.length > 160 ? `${lineText.slice(0, 160)}…` : lineText;
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
 * `source` (the file) goes into YAML error positions.
 */
export function parseConfigText(text: string, env: Environment, problems: ConfigProblem[], source?: string): unknown {
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
  return interpolateTree(value ?? {}, env, [], problems, refs);
}

function readText(path: string, file: string, problems: ConfigProblem[]): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    problems.push({ path, message: `cannot read file ${JSON.stringify(file)}: ${(err as NodeJS.ErrnoException).code ?? String(err)}` });
    return undefined;
  }
}

function readCertificates(path: string, file: string, problems: ConfigProblem[]): { pem: string; certs: X509Certificate[] } | undefined {
  const pem = readText(path, file, problems);
  if (pem === undefined) return undefined;
  const blocks = splitPemCertificates(pem);
  if (blocks.length === 0) {
    problems.push({ path, message: `no PEM certificate in ${JSON.stringify(file)}` });
    return undefined;
  }
  try {
    return { pem, certs: blocks.map((block) => new X509Certificate(block)) };
  } catch (err) {
    problems.push({ path, message: `unparseable certificate in ${JSON.stringify(file)}: ${(err as Error).message}` });
    return undefined;
  }
}

function readPrivateKey(path: string, file: string, problems: ConfigProblem[]): { pem: string; key: ReturnType<typeof createPrivateKey> } | undefined {
  const pem = readText(path, file, problems);
  if (pem === undefined) return undefined;
  try {
    return { pem, key: createPrivateKey(pem) };
  } catch {
    // The message of a key parse error can quote key material: say only which file.
    problems.push({ path, message: `no usable private key in ${JSON.stringify(file)}` });
    return undefined;
  }
}

/** A certificate chain file and its key file, checked to belong together. */
function readKeyPair(certPath: string, certFile: string, keyPath: string, keyFile: string, problems: ConfigProblem[]) {
  const chain = readCertificates(certPath, certFile, problems);
  const key = readPrivateKey(keyPath, keyFile, problems);
  if (chain && key && !chain.certs[0]?.checkPrivateKey(key.key)) {
    problems.push({ path: keyPath, message: `the key in ${JSON.stringify(keyFile)} does not match the certificate in ${JSON.stringify(certFile)}` });
  }
  return { cert: chain?.pem, key: key?.pem };
}

/** The listener's certificate, key and client CA, checked to belong together; undefined when a problem was recorded. */
function readTlsMaterial(tls: FilePaths['tls'], problems: ConfigProblem[]): TlsMaterial | undefined {
  const before = problems.length;
  // A missing path is the schema's to report.
  if (tls.cert === undefined || tls.key === undefined) return undefined;
  const pair = readKeyPair('tls.cert', tls.cert, 'tls.key', tls.key, problems);
  const clientCa = tls.clientCa === undefined ? undefined : readCertificates('tls.clientCa', tls.clientCa, problems);
  if (problems.length > before) return undefined;
  return { cert: pair.cert as string, key: pair.key as string, clientCa: clientCa?.pem };
}

/** Reads the TLS files again (certificate rotation). Throws {@link ConfigError}; never returns half a set. */
export function loadTlsMaterial(tls: Settings['tls'], source: string): TlsMaterial {
  const problems: ConfigProblem[] = [];
  const material = readTlsMaterial(tls, problems);
  if (material === undefined) throw new ConfigError(source, problems);
  return Object.freeze(material);
}

function deepFreeze<T>(value: T): T {
  // A Buffer (the shared-state secret) cannot be frozen; it is never handed out for writing.
  if (value !== null && typeof value === 'object' && !Buffer.isBuffer(value) && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}

interface FilePaths {
  tls: { cert?: string | undefined; key?: string | undefined; clientCa?: string | undefined };
  introspection: { ca?: string | undefined; cert?: string | undefined; key?: string | undefined; clientSecretFile?: string | undefined };
}

/**
 * The file paths a config names, from validated settings or from a raw object that failed
 * validation elsewhere (so one `cnfguard check` reports unreadable files alongside schema errors).
 */
function filePathsOf(config: unknown): FilePaths {
  const section = (name: string): Record<string, unknown> => {
    const value = (config as Record<string, unknown> | null)?.[name];
    return value !== null && typeof value === 'object' ? (value as Record<string, unknown>) : {};
  };
  const text = (value: unknown) => (typeof value === 'string' && value.length > 0 ? value : undefined);
  const tls = section('tls');
  const introspection = section('introspection');
  return {
    tls: { cert: text(tls.cert), key: text(tls.key), clientCa: text(tls.clientCa) },
    introspection: { ca: text(introspection.ca), cert: text(introspection.cert), key: text(introspection.key), clientSecretFile: text(introspection.clientSecretFile) },
  };
}

function readIntrospectionFiles(paths: FilePaths['introspection'], problems: ConfigProblem[]) {
  const ca = paths.ca === undefined ? undefined : readCertificates('introspection.ca', paths.ca, problems);
  const pair = paths.cert !== undefined && paths.key !== undefined ? readKeyPair('introspection.cert', paths.cert, 'introspection.key', paths.key, problems) : undefined;
  let clientSecret: string | undefined;
  if (paths.clientSecretFile !== undefined) {
    clientSecret = readText('introspection.clientSecretFile', paths.clientSecretFile, problems)?.trim();
    if (clientSecret === '') problems.push({ path: 'introspection.clientSecretFile', message: `${JSON.stringify(paths.clientSecretFile)} is empty` });
  }
  return { clientSecret, ca: ca?.pem, cert: pair?.cert, key: pair?.key };
}

function readSharedStateFiles(settings: Settings, problems: ConfigProblem[]): SharedStateMaterial | undefined {
  const shared = settings.sharedState;
  if (shared === undefined) return undefined;
  let secret: Buffer | undefined;
  try {
    secret = readFileSync(shared.secretFile);
  } catch (err) {
    problems.push({ path: 'sharedState.secretFile', message: `cannot read file ${JSON.stringify(shared.secretFile)}: ${(err as NodeJS.ErrnoException).code ?? String(err)}` });
  }
  if (secret !== undefined && secret.length < 32) {
    problems.push({ path: 'sharedState.secretFile', message: `${JSON.stringify(shared.secretFile)} holds ${secret.length} bytes; at least 32 are needed` });
  }
  const ca = shared.ca === undefined ? undefined : readCertificates('sharedState.ca', shared.ca, problems);
  return secret === undefined ? undefined : { secret, ca: ca?.pem };
}

/** Every config key that names a file, as [section, key]. */
const FILE_KEYS = [
  ['tls', 'cert'],
  ['tls', 'key'],
  ['tls', 'clientCa'],
  ['introspection', 'ca'],
  ['introspection', 'cert'],
  ['introspection', 'key'],
  ['introspection', 'clientSecretFile'],
  ['sharedState', 'secretFile'],
  ['sharedState', 'ca'],
] as const;

/**
 * Makes every relative file path absolute, in place: against the config file's folder, so a config
 * means the same whatever directory cnfguard starts in. Before 0.2 they were read from the working
 * directory; a file found only there is still read from there, with a warning, so old configs keep
 * working. `cwd` defaults to the process's.
 */
export function resolveFilePaths(config: unknown, baseDir: string, warnings: ConfigProblem[], cwd: string = process.cwd()): void {
  if (config === null || typeof config !== 'object') return;
  for (const [section, key] of FILE_KEYS) {
    const holder = (config as Record<string, unknown>)[section];
    if (holder === null || typeof holder !== 'object') continue;
    const value = (holder as Record<string, unknown>)[key];
    if (typeof value !== 'string' || value === '' || isAbsolute(value)) continue;
    const fromConfig = resolve(baseDir, value);
    const fromCwd = resolve(cwd, value);
    let chosen = fromConfig;
    if (fromCwd !== fromConfig && !existsSync(fromConfig) && existsSync(fromCwd)) {
      chosen = fromCwd;
      warnings.push({
        path: `${section}.${key}`,
        message: `${JSON.stringify(value)} is read from the working directory (${fromCwd}); relative paths are read from the config file's folder (${baseDir}) and the working-directory fallback will go: write ${JSON.stringify(fromCwd)}, or a path relative to the config file`,
      });
    }
    (holder as Record<string, unknown>)[key] = chosen;
  }
}

/** Validates a parsed config object and loads the files it names. Throws {@link ConfigError}. */
export function loadConfigObject(raw: unknown, source: string, preProblems: ConfigProblem[] = [], baseDir?: string): LoadedConfig {
  const problems = [...preProblems];
  const warnings: ConfigProblem[] = [];
  // A copy of the sections that name files, so the caller's object is never changed.
  const input = baseDir === undefined || raw === null || typeof raw !== 'object' ? raw : withFileSectionsCopied(raw as Record<string, unknown>);
  if (baseDir !== undefined) resolveFilePaths(input, baseDir, warnings);
  const parsed = configSchema.safeParse(input ?? {});
  if (!parsed.success) {
    for (const issue of parsed.error.issues) problems.push({ path: formatPath(issue.path), message: issue.message });
  } else {
    for (const [shadowed, earlier] of shadowedRoutes(parsed.data.routes)) {
      problems.push({ path: `routes[${shadowed}]`, message: `unreachable: routes[${earlier}] comes first and matches every request this route would` });
    }
    problems.push(...listenerClashes(parsed.data));
  }
  const paths = filePathsOf(parsed.success ? parsed.data : input);
  const tls = readTlsMaterial(paths.tls, problems);
  const files = readIntrospectionFiles(paths.introspection, problems);
  const sharedState = parsed.success ? readSharedStateFiles(parsed.data, problems) : undefined;
  if (!parsed.success || problems.length > 0 || tls === undefined) throw new ConfigError(source, problems);
  const settings = parsed.data;
  return deepFreeze({
    source,
    file: undefined,
    settings,
    tls,
    introspection: { ...files, clientSecret: files.clientSecret ?? settings.introspection.clientSecret },
    sharedState,
    warnings,
  });
}

function withFileSectionsCopied(raw: Record<string, unknown>): Record<string, unknown> {
  const copy = { ...raw };
  for (const section of new Set(FILE_KEYS.map(([name]) => name))) {
    const value = copy[section];
    if (value !== null && typeof value === 'object' && !Array.isArray(value)) copy[section] = { ...(value as Record<string, unknown>) };
  }
  return copy;
}

/** Reads, interpolates, validates and loads a config file. Throws {@link ConfigError}. */
export function loadConfigFile(file: string, env: Environment = process.env): LoadedConfig {
  const problems: ConfigProblem[] = [];
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(file, [{ path: '', message: `cannot read config file ${JSON.stringify(file)}: ${(err as NodeJS.ErrnoException).code ?? String(err)}` }]);
  }
  const raw = parseConfigText(text, env, problems, file);
  if (raw === undefined) throw new ConfigError(file, problems);
  return Object.freeze({ ...loadConfigObject(raw, file, problems, dirname(resolve(file))), file });
}

/** Every warning about a loaded config, for `check` to print and `run` to log: the loader's notes, then the settings' (checks.ts). */
export function warningsOf(config: LoadedConfig): ConfigProblem[] {
  return [...(config.warnings ?? []), ...configWarnings(config.settings)];
}

const MASK = '********';

/** The effective settings as YAML, with every secret masked (for `cnfguard check`). */
export function effectiveConfigYaml(config: LoadedConfig): string {
  const settings = structuredClone(config.settings) as Settings;
  if (settings.introspection.clientSecret !== undefined) settings.introspection.clientSecret = MASK;
  // redis://user:password@host: the store's password is as secret as the client's.
  if (settings.sharedState !== undefined) settings.sharedState.url = withoutPassword(settings.sharedState.url);
  return stringify(settings);
}

function withoutPassword(value: string): string {
  const url = new URL(value);
  if (url.password === '') return value;
  url.password = MASK;
  return url.toString();
}
