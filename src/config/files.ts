/**
 * The files a config names: PEMs parsed (certificate and key checked to belong together), secrets
 * read, relative paths resolved against the config file's folder. Problems are collected with the
 * key that named the file; key material never appears in a message.
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { ConfigError, type ConfigProblem } from './problems.ts';
import type { Settings } from './schema.ts';
import { splitPemCertificates } from '../tls/certificates.ts';
import { assertionKeyFrom, type AssertionKey } from '../assertion/keys.ts';

/** PEM material read from the files the settings name. */
export interface TlsMaterial {
  cert: string;
  key: string;
  clientCa: string | undefined;
  /** tls.minVersion and tls.ciphers (absent: TLSv1.2 and Node's default list). */
  minVersion?: 'TLSv1.2' | 'TLSv1.3' | undefined;
  ciphers?: string | undefined;
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
  /** The data nodes' password (`sharedState.passwordFile`), trimmed. */
  password?: string | undefined;
  /** The sentinels' password (`sharedState.sentinel.passwordFile`), trimmed. */
  sentinelPassword?: string | undefined;
}

/**
 * The files a config names, as read (base64, by config path: `assertion.keyFile`), so that a
 * cluster primary can hand its workers what it read. Secret: keys and passwords are among them.
 */
export type ConfigFiles = Record<string, string>;

/**
 * Where the files come from while a config loads: the disk, or (a cluster worker) what the primary
 * read. `tls.*` files always come from the disk: each process follows those files live.
 */
let readFile = (_path: string, file: string): Buffer => readFileSync(file);

/**
 * Runs `load` (synchronous) reading the config's files through `given` first (what a primary
 * read), the disk for the rest, and says what was read, `tls.*` left out.
 */
export function readingConfigFiles<T>(given: ConfigFiles | undefined, load: () => T): { loaded: T; files: ConfigFiles } {
  const files: ConfigFiles = {};
  const previous = readFile;
  readFile = (path, file) => {
    const known = path.startsWith('tls.') ? undefined : given?.[path];
    const content = known === undefined ? readFileSync(file) : Buffer.from(known, 'base64');
    if (!path.startsWith('tls.')) files[path] = content.toString('base64');
    return content;
  };
  try {
    return { loaded: load(), files };
  } finally {
    readFile = previous;
  }
}

function readText(path: string, file: string, problems: ConfigProblem[]): string | undefined {
  try {
    return readFile(path, file).toString('utf8');
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

/**
 * A client CA file must hold CA certificates (basicConstraints CA:TRUE): a leaf there verifies
 * nothing (OpenSSL will not chain a client certificate to it), so every client would be refused
 * as untrusted while the config looked right.
 */
function notCaCertificates(file: string, certs: X509Certificate[], problems: ConfigProblem[]): void {
  for (const cert of certs) {
    if (cert.ca) continue;
    const subject = cert.subject.replaceAll('\n', ', ');
    problems.push({
      path: 'tls.clientCa',
      message: `${JSON.stringify(file)} holds a certificate without CA rights (${subject}: basicConstraints CA:FALSE or absent), so no client certificate can chain to it; name the CA that issues your client certificates (dev-certs and init: ca.crt), or remove clientCa to rest the binding on the thumbprint alone`,
    });
  }
}

/** The listener's certificate, key and client CA, checked to belong together; undefined when a problem was recorded. */
export function readTlsMaterial(tls: FilePaths['tls'], problems: ConfigProblem[]): TlsMaterial | undefined {
  const before = problems.length;
  // A missing path is the schema's to report.
  if (tls.cert === undefined || tls.key === undefined) return undefined;
  const pair = readKeyPair('tls.cert', tls.cert, 'tls.key', tls.key, problems);
  const clientCa = tls.clientCa === undefined ? undefined : readCertificates('tls.clientCa', tls.clientCa, problems);
  if (clientCa !== undefined) notCaCertificates(tls.clientCa as string, clientCa.certs, problems);
  if (problems.length > before) return undefined;
  return { cert: pair.cert as string, key: pair.key as string, clientCa: clientCa?.pem };
}

/** Reads the TLS files again (certificate rotation). Throws {@link ConfigError}; never returns half a set. */
export function loadTlsMaterial(tls: Settings['tls'], source: string): TlsMaterial {
  const problems: ConfigProblem[] = [];
  const material = readTlsMaterial(tls, problems);
  if (material === undefined) throw new ConfigError(source, problems);
  return Object.freeze({ ...material, minVersion: tls.minVersion, ciphers: tls.ciphers });
}

export interface FilePaths {
  tls: { cert?: string | undefined; key?: string | undefined; clientCa?: string | undefined };
  introspection: { ca?: string | undefined; cert?: string | undefined; key?: string | undefined; clientSecretFile?: string | undefined };
}

/**
 * The file paths a config names, from validated settings or from a raw object that failed
 * validation elsewhere (so one `cnfguard check` reports unreadable files alongside schema errors).
 */
export function filePathsOf(config: unknown): FilePaths {
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

export function readIntrospectionFiles(paths: FilePaths['introspection'], problems: ConfigProblem[]) {
  const ca = paths.ca === undefined ? undefined : readCertificates('introspection.ca', paths.ca, problems);
  const pair = paths.cert !== undefined && paths.key !== undefined ? readKeyPair('introspection.cert', paths.cert, 'introspection.key', paths.key, problems) : undefined;
  let clientSecret: string | undefined;
  if (paths.clientSecretFile !== undefined) {
    clientSecret = readText('introspection.clientSecretFile', paths.clientSecretFile, problems)?.trim();
    if (clientSecret === '') problems.push({ path: 'introspection.clientSecretFile', message: `${JSON.stringify(paths.clientSecretFile)} is empty` });
  }
  return { clientSecret, ca: ca?.pem, cert: pair?.cert, key: pair?.key };
}

export function readSharedStateFiles(settings: Settings, problems: ConfigProblem[]): SharedStateMaterial | undefined {
  const shared = settings.sharedState;
  if (shared === undefined) return undefined;
  let secret: Buffer | undefined;
  try {
    secret = readFile('sharedState.secretFile', shared.secretFile);
  } catch (err) {
    problems.push({ path: 'sharedState.secretFile', message: `cannot read file ${JSON.stringify(shared.secretFile)}: ${(err as NodeJS.ErrnoException).code ?? String(err)}` });
  }
  if (secret !== undefined && secret.length < 32) {
    problems.push({ path: 'sharedState.secretFile', message: `${JSON.stringify(shared.secretFile)} holds ${secret.length} bytes; at least 32 are needed` });
  }
  const ca = shared.ca === undefined ? undefined : readCertificates('sharedState.ca', shared.ca, problems);
  const password = shared.passwordFile === undefined ? undefined : readPassword('sharedState.passwordFile', shared.passwordFile, problems);
  const sentinelFile = shared.sentinel?.passwordFile;
  const sentinelPassword = sentinelFile === undefined ? undefined : readPassword('sharedState.sentinel.passwordFile', sentinelFile, problems);
  return secret === undefined ? undefined : { secret, ca: ca?.pem, password, sentinelPassword };
}

/** A password file's text without its line end; an empty file is a problem (no password is no file). */
function readPassword(path: string, file: string, problems: ConfigProblem[]): string | undefined {
  const text = readText(path, file, problems)?.replace(/\r?\n$/, '');
  if (text === '') problems.push({ path, message: `${JSON.stringify(file)} is empty` });
  return text === '' ? undefined : text;
}

/** Every config key that names a file, as [section, key]. */
export const FILE_KEYS = [
  ['tls', 'cert'],
  ['tls', 'key'],
  ['tls', 'clientCa'],
  ['introspection', 'ca'],
  ['introspection', 'cert'],
  ['introspection', 'key'],
  ['introspection', 'clientSecretFile'],
  ['sharedState', 'secretFile'],
  ['sharedState', 'ca'],
  ['assertion', 'keyFile'],
  ['sharedState', 'passwordFile'],
] as const;

/** File keys one object deeper, as [section, object, key]. */
export const NESTED_FILE_KEYS = [['sharedState', 'sentinel', 'passwordFile']] as const;

/**
 * Makes every relative file path absolute, in place: against the config file's folder, so a config
 * means the same whatever directory cnfguard starts in. Before 0.2 they were read from the working
 * directory; a file found only there is still read from there, with a warning, so old configs keep
 * working. `cwd` defaults to the process's.
 */
export function resolveFilePaths(config: unknown, baseDir: string, warnings: ConfigProblem[], cwd: string = process.cwd()): void {
  if (config === null || typeof config !== 'object') return;
  const objectAt = (holder: unknown, key: string): Record<string, unknown> | undefined => {
    const value = (holder as Record<string, unknown>)[key];
    return value !== null && typeof value === 'object' ? (value as Record<string, unknown>) : undefined;
  };
  for (const [section, key] of FILE_KEYS) {
    const holder = objectAt(config, section);
    if (holder !== undefined) resolveOne(holder, key, `${section}.${key}`, baseDir, warnings, cwd);
  }
  // One level deeper: the section is a copy (load.ts), its sub-object is copied before it is written.
  for (const [section, sub, key] of NESTED_FILE_KEYS) {
    const holder = objectAt(config, section);
    const inner = holder === undefined ? undefined : objectAt(holder, sub);
    if (holder === undefined || inner === undefined) continue;
    holder[sub] = { ...inner };
    resolveOne(holder[sub] as Record<string, unknown>, key, `${section}.${sub}.${key}`, baseDir, warnings, cwd);
  }
}

function resolveOne(holder: Record<string, unknown>, key: string, path: string, baseDir: string, warnings: ConfigProblem[], cwd: string): void {
  const value = holder[key];
  if (typeof value !== 'string' || value === '' || isAbsolute(value)) return;
  const fromConfig = resolve(baseDir, value);
  const fromCwd = resolve(cwd, value);
  let chosen = fromConfig;
  if (fromCwd !== fromConfig && !existsSync(fromConfig) && existsSync(fromCwd)) {
    chosen = fromCwd;
    warnings.push({
      path,
      message: `${JSON.stringify(value)} is read from the working directory (${fromCwd}); relative paths are read from the config file's folder (${baseDir}) and the working-directory fallback will go: write ${JSON.stringify(fromCwd)}, or a path relative to the config file`,
    });
  }
  holder[key] = chosen;
}

/** `assertion.keyFile`: the signing key, checked against `assertion.algorithm` (a mismatch is a config error). */
export function readAssertionKey(settings: Settings, problems: ConfigProblem[]): AssertionKey | undefined {
  const assertion = settings.assertion;
  if (assertion === undefined) return undefined;
  const pem = readText('assertion.keyFile', assertion.keyFile, problems);
  if (pem === undefined) return undefined;
  try {
    return assertionKeyFrom(pem, assertion.algorithm);
  } catch (err) {
    problems.push({ path: 'assertion.keyFile', message: `${JSON.stringify(assertion.keyFile)}: ${(err as Error).message}` });
    return undefined;
  }
}
