/**
 * Reading the config: YAML with `${VAR}` (yaml.ts), the schema, then the files it names
 * (files.ts). Every problem is collected with its YAML path, so one `cnfguard check` lists them
 * all; nothing is returned half-loaded, and the result is frozen.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { configWarnings, listenerClashes } from './checks.ts';
import { FILE_KEYS, filePathsOf, readAssertionKey, readingConfigFiles, readIntrospectionFiles, readSharedStateFiles, readTlsMaterial, resolveFilePaths, type ConfigFiles, type IntrospectionMaterial, type SharedStateMaterial, type TlsMaterial } from './files.ts';
import { humanProblems, type EmptyVariables } from './messages.ts';
import { ConfigError, type ConfigProblem } from './problems.ts';
import { buildConfigSchema, type Settings } from './schema.ts';
import { parseConfigText, type Environment } from './yaml.ts';
import { shadowedRoutes } from '../routing/match.ts';
import type { AssertionKey } from '../assertion/keys.ts';

export { ConfigError, formatPath, type ConfigProblem } from './problems.ts';
export { interpolate, parseConfigText, type Environment } from './yaml.ts';
export { loadTlsMaterial, resolveFilePaths, type IntrospectionMaterial, type SharedStateMaterial, type TlsMaterial } from './files.ts';
export { effectiveConfigYaml } from './effective.ts';

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
  /** The SHA-256 (hex) of the file as read, for /status; undefined for a config built in code. */
  sha256?: string | undefined;
  /** The file's text as read: what a cluster primary hands its workers, so that all judge by the same config. */
  text?: string | undefined;
  /** The files it names as read (`tls.*` left out), for the same hand-over. Secret. */
  files?: ConfigFiles | undefined;
  /** Present when `assertion` is set: the signing key read from `assertion.keyFile`. */
  assertionKey?: AssertionKey | undefined;
  /** Notes from loading, beside {@link configWarnings}: relative paths found only from the working directory. */
  warnings?: readonly ConfigProblem[];
}

function deepFreeze<T>(value: T): T {
  // A Buffer (the shared-state secret) cannot be frozen; it is never handed out for writing.
  if (value !== null && typeof value === 'object' && !Buffer.isBuffer(value) && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}

/** Validates a parsed config object and loads the files it names. Throws {@link ConfigError}. */
export function loadConfigObject(raw: unknown, source: string, preProblems: ConfigProblem[] = [], baseDir?: string, empty?: EmptyVariables): LoadedConfig {
  const problems = [...preProblems];
  const warnings: ConfigProblem[] = [];
  // A copy of the sections that name files, so the caller's object is never changed.
  const input = baseDir === undefined || raw === null || typeof raw !== 'object' ? raw : withFileSectionsCopied(raw as Record<string, unknown>);
  if (baseDir !== undefined) resolveFilePaths(input, baseDir, warnings);
  // Built for this load and let go with it: an idle server keeps no schema (issue 32).
  const parsed = buildConfigSchema().safeParse(input ?? {});
  if (!parsed.success) {
    problems.push(...humanProblems(parsed.error.issues, input, preProblems, empty));
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
  const assertionKey = parsed.success ? readAssertionKey(parsed.data, problems) : undefined;
  if (!parsed.success || problems.length > 0 || tls === undefined) throw new ConfigError(source, problems);
  const settings = parsed.data;
  return deepFreeze({
    source,
    file: undefined,
    settings,
    tls: { ...tls, minVersion: settings.tls.minVersion, ciphers: settings.tls.ciphers },
    introspection: { ...files, clientSecret: files.clientSecret ?? settings.introspection.clientSecret },
    sharedState,
    assertionKey,
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

/** A config as a cluster primary read it: the file's text and the files it names (`tls.*` aside). */
export interface ConfigAsRead {
  text: string;
  files?: ConfigFiles | undefined;
}

/**
 * Reads, interpolates, validates and loads a config file. Throws {@link ConfigError}. `read`: the
 * file and its files as read before (a cluster worker gets its primary's), instead of reading them now.
 */
export function loadConfigFile(file: string, env: Environment = process.env, read?: ConfigAsRead): LoadedConfig {
  const { loaded, files } = readingConfigFiles(read?.files, () => loadConfigText(file, env, read?.text));
  return Object.freeze({ ...loaded, files });
}

function loadConfigText(file: string, env: Environment, read: string | undefined): LoadedConfig {
  const problems: ConfigProblem[] = [];
  let text: string;
  try {
    text = read ?? readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(file, [{ path: '', message: `cannot read config file ${JSON.stringify(file)}: ${(err as NodeJS.ErrnoException).code ?? String(err)}` }]);
  }
  const empty: EmptyVariables = new Map();
  const raw = parseConfigText(text, env, problems, file, empty);
  if (raw === undefined) throw new ConfigError(file, problems);
  return Object.freeze({ ...loadConfigObject(raw, file, problems, dirname(resolve(file)), empty), file, sha256: createHash('sha256').update(text).digest('hex'), text });
}

/** Every warning about a loaded config, for `check` to print and `run` to log: the loader's notes, then the settings' (checks.ts). */
export function warningsOf(config: LoadedConfig): ConfigProblem[] {
  return [...(config.warnings ?? []), ...configWarnings(config.settings)];
}
