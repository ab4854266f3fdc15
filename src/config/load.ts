/**
 * Reading the config: YAML, `${VAR}` / `${VAR:-default}` from the environment, the schema, then the
 * files it names (PEMs are parsed here). Every problem is collected with its YAML path, so one
 * `cnfguard check` lists them all; nothing is returned half-loaded, and the result is frozen.
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { isMap, isScalar, isSeq, parseDocument, stringify } from 'yaml';
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

export interface LoadedConfig {
  /** Where the config came from (a file path, or a label for embedded configs). */
  source: string;
  settings: Settings;
  tls: TlsMaterial;
  introspection: IntrospectionMaterial;
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
const WHOLE_REFERENCE = /^\$\{[A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\}$/;

/**
 * Replaces `${VAR}` and `${VAR:-default}` in one string; `$$` is a literal `$`. A value that is
 * one reference and nothing else is read as a YAML scalar, so `port: ${PORT:-8443}` is a number.
 */
export function interpolate(value: string, env: Environment, path: string, problems: ConfigProblem[]): unknown {
  let missing = false;
  const replaced = value.replace(REFERENCE, (match, name: string | undefined, fallback: string | undefined) => {
    if (match === '$$') return '$';
    const fromEnv = env[name as string];
    if (fromEnv !== undefined && (fromEnv !== '' || fallback === undefined)) return fromEnv;
    if (fallback !== undefined) return fallback;
    problems.push({ path, message: `environment variable ${name} is not set (use \${${name}:-default} for a default)` });
    missing = true;
    return '';
  });
  if (missing || replaced === value) return replaced;
  if (WHOLE_REFERENCE.test(value)) {
    const doc = parseDocument(replaced);
    if (doc.errors.length === 0 && isScalar(doc.contents)) return doc.contents.value;
  }
  return replaced;
}

function interpolateTree(node: unknown, env: Environment, path: (string | number)[], problems: ConfigProblem[]): unknown {
  if (typeof node === 'string') return interpolate(node, env, formatPath(path), problems);
  if (Array.isArray(node)) return node.map((item, index) => interpolateTree(item, env, [...path, index], problems));
  if (node !== null && typeof node === 'object') {
    return Object.fromEntries(Object.entries(node).map(([key, value]) => [key, interpolateTree(value, env, [...path, key], problems)]));
  }
  return node;
}

/** Parses YAML text and interpolates the environment; problems are collected, not thrown. */
export function parseConfigText(text: string, env: Environment, problems: ConfigProblem[]): unknown {
  // uniqueKeys: a key given twice is an error, not a silent override.
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  for (const error of doc.errors) {
    problems.push({ path: '', message: `YAML: ${error.message.split('\n')[0] ?? error.message}` });
  }
  if (doc.errors.length > 0) return undefined;
  if (!isMap(doc.contents) && !(doc.contents === null)) {
    problems.push({ path: '', message: isSeq(doc.contents) ? 'the config must be a mapping, not a list' : 'the config must be a mapping' });
    return undefined;
  }
  return interpolateTree(doc.toJS() ?? {}, env, [], problems);
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

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}

/** Validates a parsed config object and loads the files it names. Throws {@link ConfigError}. */
export function loadConfigObject(raw: unknown, source: string, preProblems: ConfigProblem[] = []): LoadedConfig {
  const problems = [...preProblems];
  const parsed = configSchema.safeParse(raw ?? {});
  if (!parsed.success) {
    for (const issue of parsed.error.issues) problems.push({ path: formatPath(issue.path), message: issue.message });
  }
  if (!parsed.success || problems.length > 0) throw new ConfigError(source, problems);
  const settings = parsed.data;
  for (const [shadowed, earlier] of shadowedRoutes(settings.routes)) {
    problems.push({ path: `routes[${shadowed}]`, message: `unreachable: routes[${earlier}] comes first and matches every request this route would` });
  }

  const serverPair = readKeyPair('tls.cert', settings.tls.cert, 'tls.key', settings.tls.key, problems);
  const clientCa = settings.tls.clientCa === undefined ? undefined : readCertificates('tls.clientCa', settings.tls.clientCa, problems);

  const introspection = settings.introspection;
  const asCa = introspection.ca === undefined ? undefined : readCertificates('introspection.ca', introspection.ca, problems);
  const asPair =
    introspection.cert !== undefined && introspection.key !== undefined
      ? readKeyPair('introspection.cert', introspection.cert, 'introspection.key', introspection.key, problems)
      : undefined;
  let clientSecret = introspection.clientSecret;
  if (introspection.clientSecretFile !== undefined) {
    clientSecret = readText('introspection.clientSecretFile', introspection.clientSecretFile, problems)?.trim();
    if (clientSecret === '') problems.push({ path: 'introspection.clientSecretFile', message: `${JSON.stringify(introspection.clientSecretFile)} is empty` });
  }

  if (problems.length > 0) throw new ConfigError(source, problems);
  return deepFreeze({
    source,
    settings,
    tls: { cert: serverPair.cert as string, key: serverPair.key as string, clientCa: clientCa?.pem },
    introspection: { clientSecret, ca: asCa?.pem, cert: asPair?.cert, key: asPair?.key },
  });
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
  const raw = parseConfigText(text, env, problems);
  if (raw === undefined) throw new ConfigError(file, problems);
  return loadConfigObject(raw, file, problems);
}

const MASK = '********';

/** The effective settings as YAML, with every secret masked (for `cnfguard check`). */
export function effectiveConfigYaml(config: LoadedConfig): string {
  const settings = structuredClone(config.settings) as Settings;
  if (settings.introspection.clientSecret !== undefined) settings.introspection.clientSecret = MASK;
  return stringify(settings);
}
