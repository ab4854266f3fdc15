/**
 * The command line as users and scripts drive it: real processes, exit codes, messages.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { createApp } from '../../src/app.ts';
import { usableCpus } from '../../src/cluster.ts';
import { loadConfigObject } from '../../src/config/load.ts';
import { thumbprintS256 } from '../../src/tls/certificates.ts';
import { issueServerCertificate } from '../../src/tls/dev-certs.ts';
import { baseConfig, curl, startDeployment, type Deployment } from '../fixtures/stack.ts';
import { waitFor } from '../fixtures/wait.ts';

const ROOT = join(import.meta.dirname, '..', '..');
const BIN = join(ROOT, 'bin', 'cnfguard.js');

interface Finished {
  code: number | null;
  stdout: string;
  stderr: string;
}

function cnfguard(args: string[], env: NodeJS.ProcessEnv = {}, cwd?: string): Promise<Finished> {
  const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
}

/** Starts `command args` and resolves once it logs `cnfguard started`, with that line; `output()` keeps growing. */
async function untilStarted(command: string, args: string[], env: NodeJS.ProcessEnv): Promise<{ child: ChildProcess; started: Record<string, unknown>; output: () => string }> {
  const child = spawn(command, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  const started = await new Promise<Record<string, unknown>>((resolve, reject) => {
    const exited = (code: number | null) => reject(new Error(`exited ${code} before starting: ${stdout}`));
    const read = () => {
      const line = stdout.split('\n').find((l) => l.includes('cnfguard started'));
      if (line === undefined) return;
      child.off('exit', exited);
      child.stdout.off('data', read);
      resolve(JSON.parse(line) as Record<string, unknown>);
    };
    child.once('exit', exited);
    child.stdout.on('data', read);
  });
  return { child, started, output: () => stdout };
}

let d: Deployment;
let dir: string;
let goodConfig: string;

beforeAll(async () => {
  d = await startDeployment();
  dir = await mkdtemp(join(tmpdir(), 'cnfguard-cli-'));
  goodConfig = join(dir, 'good.yaml');
  const config = baseConfig(d.pki, d.as, d.upstream, {
    introspection: { url: d.as.introspectionUrl, clientId: 'rs', clientSecret: '${RS_SECRET}', ca: d.pki.files.ca },
  });
  await writeFile(goodConfig, stringify(config));
});
afterAll(async () => {
  await d?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('cnfguard version and help', () => {
  const { version } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };

  it.each([['version'], ['--version'], ['-V']])('%s prints the version from package.json, exit 0', async (arg) => {
    const r = await cnfguard([arg]);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe(`cnfguard ${version} (Node.js ${process.version})\n`);
  });

  it.each([
    ['run', '--help'],
    ['check', '--help'],
    ['run', '-h'],
    ['dev-certs', 'help'],
    ['thumbprint', 'help'],
    ['dev-certs', '--help'],
    ['help', 'check'],
  ])('%s %s prints the command\'s usage, exit 0, and creates or reads nothing', async (command, arg) => {
    // An empty folder as cwd and no CNFGUARD_CONFIG: a command that went ahead would fail (no config,
    // no file named help) or leave something behind (dev-certs help used to make ./help/).
    const cwd = await mkdtemp(join(tmpdir(), 'cnfguard-help-'));
    try {
      const r = await cnfguard([command, arg], { CNFGUARD_CONFIG: '' }, cwd);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(new RegExp(`^usage: cnfguard ${command === 'help' ? arg : command}`));
      expect(await readdir(cwd)).toEqual([]);
    } finally {
      await rm(cwd, { recursive: true, force: true });
    }
  });

  it('documents -c in the overview, in run and check help, and in the README', async () => {
    const overview = await cnfguard(['--help']);
    expect(overview.code).toBe(0);
    expect(overview.stdout).toContain('-c FILE');
    for (const command of ['run', 'check']) expect((await cnfguard([command, '--help'])).stdout).toMatch(/-c, --config FILE/);
    expect(readFileSync(join(ROOT, 'README.md'), 'utf8')).toMatch(/-c, --config FILE|`-c FILE`/);
  });

  it('without a command prints the overview and exits 2; an unknown command too', async () => {
    const none = await cnfguard([]);
    expect(none.code).toBe(2);
    expect(none.stdout).toContain('usage: cnfguard COMMAND');
    const unknown = await cnfguard(['serve']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('unknown command "serve"');
  });
});

describe('cnfguard check refuses what run would refuse, and warns', () => {
  async function clashing(name: string, extra: Record<string, unknown>): Promise<string> {
    const file = join(dir, `${name}.yaml`);
    await writeFile(file, stringify(baseConfig(d.pki, d.as, d.upstream, extra)));
    return file;
  }

  it('listen.port == admin.port: check exits 2 with the message run gives', async () => {
    const file = await clashing('clash-admin', { listen: { host: '127.0.0.1', port: 18443 }, admin: { host: '127.0.0.1', port: 18443 } });
    const checked = await cnfguard(['check', '--config', file]);
    expect(checked.code).toBe(2);
    const message = 'admin.port: 127.0.0.1:18443 is also the proxy listener\'s address (listen: 127.0.0.1:18443); each listener needs its own port';
    expect(checked.stderr).toContain(message);
    const ran = await cnfguard(['run', '--config', file]);
    expect(ran.code).toBe(2);
    expect(ran.stderr).toContain(message);
    const line = JSON.parse(ran.stdout.trim().split('\n')[0] ?? '{}') as { problems: { path: string; message: string }[] };
    expect(line.problems).toEqual([{ path: 'admin.port', message: message.slice('admin.port: '.length) }]);
  });

  it('any two listeners on one port clash, a wildcard host with any other; port 0 never does', async () => {
    const decision = await cnfguard(['check', '--config', await clashing('clash-decision', { listen: { host: '0.0.0.0', port: 18444 }, decisionApi: { host: '127.0.0.1', port: 18444 } })]);
    expect(decision.code).toBe(2);
    expect(decision.stderr).toContain("decisionApi.port: 127.0.0.1:18444 is also the proxy listener's address");
    const adminDecision = await cnfguard(['check', '--config', await clashing('clash-admin-decision', { admin: { host: 'localhost', port: 19444 }, decisionApi: { host: '127.0.0.1', port: 19444 } })]);
    expect(adminDecision.code).toBe(2);
    expect(adminDecision.stderr).toContain("decisionApi.port: 127.0.0.1:19444 is also the admin listener's address");
    const apart = await cnfguard(['check', '--config', await clashing('apart', { listen: { host: '127.0.0.2', port: 18445 }, admin: { host: '127.0.0.1', port: 18445 }, decisionApi: { host: '127.0.0.1', port: 0 } })]);
    expect(apart.stderr).toBe('');
    expect(apart.code).toBe(0);
  });

  it('warns on an http:// introspection URL and on binding off on every route (stderr, exit 0)', async () => {
    const file = await clashing('warnings', {
      introspection: { url: 'http://127.0.0.1:1/introspect', clientId: 'rs', clientSecret: 'rs-secret' },
      binding: 'off',
      routes: [{ pathPrefix: '/a' }, { pathPrefix: '/b', binding: 'off' }],
    });
    const r = await cnfguard(['check', '--config', file]);
    expect(r.code).toBe(0);
    expect(r.stderr).toContain('cnfguard: warning: introspection.url: http:// sends the tokens and the client credentials unencrypted; use https://');
    expect(r.stderr).toContain('cnfguard: warning: binding: off on every route (the default and all 2)');
    const oneBound = await cnfguard(['check', '--config', await clashing('one-bound', { binding: 'off', routes: [{ pathPrefix: '/a', binding: 'required' }] })]);
    expect(oneBound.code).toBe(0);
    expect(oneBound.stderr).toBe('');
  });

  it('warns on a server certificate that has expired or is not valid yet, naming the date (stderr, exit 0)', async () => {
    const names = { dns: ['localhost'], ips: ['127.0.0.1'] };
    for (const [name, period, message] of [
      ['expired', { notBefore: new Date('2020-01-01T00:00:00Z'), notAfter: new Date('2021-01-01T00:00:00Z') }, 'the certificate expired on 2021-01-01T00:00:00Z (notAfter)'],
      ['early', { notBefore: new Date('2999-01-01T00:00:00Z'), notAfter: new Date('2999-12-31T00:00:00Z') }, 'the certificate is not valid before 2999-01-01T00:00:00Z (notBefore)'],
    ] as const) {
      const pair = issueServerCertificate(d.pki.certs.ca, names, period);
      await writeFile(join(dir, `${name}.crt`), pair.cert);
      await writeFile(join(dir, `${name}.key`), pair.key);
      const r = await cnfguard(['check', '--config', await clashing(`cert-${name}`, { tls: { cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`) } })]);
      expect(r.code).toBe(0);
      expect(r.stderr).toBe(`cnfguard: warning: tls.cert: ${message}; clients that verify it refuse the connection\n`);
    }
  });

  it('run logs the same warnings as warn lines before it starts', async () => {
    const file = await clashing('warnings-run', {
      introspection: { url: 'http://127.0.0.1:1/introspect', clientId: 'rs', clientSecret: 'rs-secret', probeAtStartup: false },
      binding: 'off',
    });
    const child = spawn(process.execPath, [BIN, 'run', '-c', file], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (c: Buffer) => {
        stdout += c.toString();
        if (stdout.includes('cnfguard started')) resolve();
      });
      child.on('exit', (code) => reject(new Error(`exited ${String(code)}: ${stdout}`)));
    });
    child.kill('SIGTERM');
    await once(child, 'exit');
    const warnings = stdout
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { level: string; path?: string; msg: string })
      .filter((e) => e.level === 'warn');
    expect(warnings.map((w) => w.path)).toEqual(['introspection.url', 'binding']);
    expect(warnings[0]?.msg).toContain('http:// sends the tokens');
  });
});

describe('relative file paths in the config', () => {
  /** A folder with the config in conf/ and the server pair in certs/: the layouts below differ in what the paths are relative to. */
  async function layout(paths: { cert: string; key: string }): Promise<{ root: string; config: string }> {
    const root = await mkdtemp(join(tmpdir(), 'cnfguard-paths-'));
    await mkdir(join(root, 'conf', 'certs'), { recursive: true });
    await mkdir(join(root, 'certs'), { recursive: true });
    const config = join(root, 'conf', 'cnfguard.yaml');
    await writeFile(config, stringify(baseConfig(d.pki, d.as, d.upstream, { tls: paths })));
    return { root, config };
  }

  it('are read from the config file\'s folder, whatever the working directory', async () => {
    const { root, config } = await layout({ cert: 'certs/tls.crt', key: './certs/tls.key' });
    try {
      await copyFile(d.pki.files.server.cert, join(root, 'conf', 'certs', 'tls.crt'));
      await copyFile(d.pki.files.server.key, join(root, 'conf', 'certs', 'tls.key'));
      const r = await cnfguard(['check', '-c', config], {}, tmpdir());
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      expect(r.stdout).toContain(`cert: ${join(root, 'conf', 'certs', 'tls.crt')}`);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  it('found only from the working directory (the old reading) still work, with a warning that names the key', async () => {
    const { root } = await layout({ cert: 'certs/tls.crt', key: 'certs/tls.key' });
    try {
      await copyFile(d.pki.files.server.cert, join(root, 'certs', 'tls.crt'));
      await copyFile(d.pki.files.server.key, join(root, 'certs', 'tls.key'));
      const r = await cnfguard(['check', '-c', 'conf/cnfguard.yaml'], {}, root);
      expect(r.code).toBe(0);
      expect(r.stderr).toContain(`cnfguard: warning: tls.cert: "certs/tls.crt" is read from the working directory (${join(root, 'certs', 'tls.crt')}); relative paths are read from the config file's folder (${join(root, 'conf')})`);
      expect(r.stderr).toContain('cnfguard: warning: tls.key: ');
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  it('found nowhere: the error names the path under the config file\'s folder', async () => {
    const { root, config } = await layout({ cert: 'certs/tls.crt', key: d.pki.files.server.key });
    try {
      const r = await cnfguard(['check', '-c', config], {}, root);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain(`tls.cert: cannot read file "${join(root, 'conf', 'certs', 'tls.crt')}": ENOENT`);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});

describe('cnfguard check', () => {
  it('prints the effective config with the secret masked, exit 0', async () => {
    const r = await cnfguard(['check', '--config', goodConfig], { RS_SECRET: 'rs-secret' });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('clientSecret: "********"');
    expect(r.stdout).not.toContain('rs-secret');
    expect(r.stdout).toMatch(/binding: required/);
    expect(r.stdout).toMatch(/realm: cnfguard/);
  });

  it('refuses an unclosed ${VAR (a missing "}"), naming the path and the reference, never the value', async () => {
    const file = join(dir, 'unclosed-reference.yaml');
    const text = stringify(baseConfig(d.pki, d.as, d.upstream, { introspection: { url: d.as.introspectionUrl, clientId: 'rs', clientSecret: 'PLACEHOLDER', ca: d.pki.files.ca } }));
    await writeFile(file, text.replace('PLACEHOLDER', '${INTROSPECTION_SECRET:-rs-s3cret-default'));
    const r = await cnfguard(['check', '-c', file]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('introspection.clientSecret: unclosed reference "${INTROSPECTION_SECRET:-…"');
    expect(`${r.stdout}${r.stderr}`).not.toContain('rs-s3cret-default');
  });

  it('shows no secret in a problem: not the line of a YAML error, not a value of the wrong type; check and run alike', async () => {
    const file = join(dir, 'secret-problems.yaml');
    const text = stringify(baseConfig(d.pki, d.as, d.upstream, { introspection: { url: d.as.introspectionUrl, clientId: 'rs', clientSecret: 'PLACEHOLDER', ca: d.pki.files.ca } }));
    // A generated secret that starts with a character YAML reserves: a syntax error on the secret's line.
    await writeFile(file, text.replace('PLACEHOLDER', '@Gen3ratedS3cret%%'));
    for (const command of ['check', 'run']) {
      const r = await cnfguard([command, '-c', file]);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain('clientSecret: ********');
      expect(`${r.stdout}${r.stderr}`).not.toContain('Gen3ratedS3cret');
    }
    // A secret of digits only is a number, not a string: its kind is named, not its value.
    await writeFile(file, text.replace('PLACEHOLDER', '9876543210'));
    for (const command of ['check', 'run']) {
      const r = await cnfguard([command, '-c', file]);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain('introspection.clientSecret: expected string, got a number');
      expect(`${r.stdout}${r.stderr}`).not.toContain('9876543210');
    }
  });

  it('masks the password of every URL it prints', async () => {
    const file = join(dir, 'url-passwords.yaml');
    const introspectionUrl = d.as.introspectionUrl.replace('https://', 'https://user:UrlPw42@');
    await writeFile(file, stringify(baseConfig(d.pki, d.as, d.upstream, { upstream: d.upstream.url.replace('http://', 'http://bob:UpPw31@'), introspection: { url: introspectionUrl, clientId: 'rs', clientSecret: 'rs-secret', ca: d.pki.files.ca } })));
    const r = await cnfguard(['check', '-c', file]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('https://user:********@');
    expect(r.stdout).toContain('http://bob:********@');
    expect(r.stdout).not.toMatch(/UrlPw42|UpPw31/);
  });

  it('names every problem by its YAML path and exits 2', async () => {
    const bad = join(dir, 'bad.yaml');
    await writeFile(
      bad,
      stringify({
        tls: { cert: join(dir, 'missing.crt'), key: join(dir, 'missing.key') },
        introspection: { url: 'not a url', clientId: 'rs' },
        upstream: 'http://127.0.0.1:1',
        binding: 'sometimes',
        routes: [{ pathPrefix: 'no-slash' }],
        errors: { missingCertificate: { code: 'bad code', status: 200 } },
        surprise: true,
      }),
    );
    const r = await cnfguard(['check', '--config', bad]);
    expect(r.code).toBe(2);
    for (const path of ['introspection.url', 'introspection.clientSecret', 'binding', 'routes[0].pathPrefix', 'errors.missingCertificate.code', 'errors.missingCertificate.status']) {
      expect(r.stderr).toContain(`${path}: `);
    }
    expect(r.stderr).toMatch(/surprise/);
    expect(r.stderr).toContain(bad);
  });

  it('explains route problems by path: shadowed routes, host patterns, claim mappings', async () => {
    const file = join(dir, 'routes.yaml');
    await writeFile(
      file,
      stringify(
        baseConfig(d.pki, d.as, d.upstream, {
          routes: [
            { pathPrefix: '/api' },
            { pathPrefix: '/api/v2', binding: 'optional' },
            { host: '*.example.com' },
            { host: 'a.example.com', pathPrefix: '/x' },
            { host: 'bad host!' },
            { pathPrefix: '/t', claimHeaders: { 'x-tenant': 'tenant_id' } },
          ],
        }),
      ),
    );
    const r = await cnfguard(['check', '--config', file]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('routes[4].host: a host name, *.suffix, or [IPv6]');
    expect(r.stderr).toContain('routes[5].claimHeaders.x-tenant: claims.<member>');
    const fixed = join(dir, 'routes-fixed.yaml');
    await writeFile(
      fixed,
      stringify(baseConfig(d.pki, d.as, d.upstream, { routes: [{ pathPrefix: '/api' }, { pathPrefix: '/api/v2' }, { host: '*.example.com' }, { host: 'a.example.com', pathPrefix: '/x' }] })),
    );
    const shadowed = await cnfguard(['check', '--config', fixed]);
    expect(shadowed.code).toBe(2);
    expect(shadowed.stderr).toContain('routes[1]: unreachable: routes[0] comes first');
    expect(shadowed.stderr).toContain('routes[3]: unreachable: routes[2] comes first');
  });

  it('names the key and the file when a file it points to is unreadable', async () => {
    const config = baseConfig(d.pki, d.as, d.upstream, { tls: { cert: join(dir, 'nope.crt'), key: d.pki.files.server.key } });
    const file = join(dir, 'unreadable.yaml');
    await writeFile(file, stringify(config));
    const r = await cnfguard(['check', '--config', file]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`tls.cert: cannot read file "${join(dir, 'nope.crt')}": ENOENT`);
  });

  it('reports an unset environment variable at its path', async () => {
    const r = await cnfguard(['check', '--config', goodConfig], { RS_SECRET: undefined });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('introspection.clientSecret: environment variable RS_SECRET is not set');
  });

  it('${PORT:-8443} inside a { … } flow map works; a YAML error is short and points at the line', async () => {
    const flow = join(dir, 'flow.yaml');
    const c = baseConfig(d.pki, d.as, d.upstream) as { tls: { cert: string; key: string } };
    const yaml = `listen: { host: 127.0.0.1, port: \${CNFGUARD_TEST_PORT:-8443} }\ntls: { cert: ${c.tls.cert}, key: ${c.tls.key} }\nintrospection: { url: ${d.as.introspectionUrl}, clientId: rs, clientSecret: \${RS_SECRET} }\nupstream: ${d.upstream.url}\nadmin: { host: 127.0.0.1, port: \${ADMIN_PORT:-0} }\n`;
    await writeFile(flow, yaml);
    const r = await cnfguard(['check', '-c', flow], { RS_SECRET: 'rs-secret', CNFGUARD_TEST_PORT: '9443' });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/listen:\n {2}host: 127\.0\.0\.1\n {2}port: 9443\n/);
    const broken = join(dir, 'broken.yaml');
    await writeFile(broken, yaml.replace('${CNFGUARD_TEST_PORT:-8443} }', '${CNFGUARD_TEST_PORT:-8443 }'));
    const bad = await cnfguard(['check', '-c', broken], { RS_SECRET: 'rs-secret' });
    expect(bad.code).toBe(2);
    const lines = bad.stderr.trimEnd().split('\n');
    expect(lines.length).toBeLessThanOrEqual(6);
    expect(lines[1]).toMatch(new RegExp(`^  - YAML: ${broken.replaceAll('.', '\\.')}:2:1: `));
    expect(bad.stderr).toContain('line 1 has a "${"');
  });

  it('a missing --config is a usage error', async () => {
    const r = await cnfguard(['check'], { CNFGUARD_CONFIG: '' });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--config FILE');
  });
});

describe('cnfguard thumbprint and dev-certs', () => {
  it('dev-certs writes a CA, a server pair and two client pairs; thumbprint prints x5t#S256', async () => {
    const out = join(dir, 'certs');
    const made = await cnfguard(['dev-certs', out]);
    expect(made.code).toBe(0);
    expect((await readdir(out)).sort()).toEqual(['ca.crt', 'ca.key', 'client1.crt', 'client1.key', 'client2.crt', 'client2.key', 'tls.crt', 'tls.key']);
    expect((await stat(join(out, 'client1.key'))).mode & 0o077).toBe(0);
    expect(made.stdout).toContain(join(out, 'tls.key'));
    const readable = join(dir, 'readable-certs');
    expect((await cnfguard(['dev-certs', readable, '--key-mode', '0644'])).code).toBe(0);
    expect((await stat(join(readable, 'tls.key'))).mode & 0o777).toBe(0o644);
    const bad = await cnfguard(['dev-certs', join(dir, 'never'), '--key-mode', '0666']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--key-mode');
    const r = await cnfguard(['thumbprint', join(out, 'client1.crt')]);
    expect(r.code).toBe(0);
    const expected = thumbprintS256(new X509Certificate(await readFile(join(out, 'client1.crt'))).raw);
    expect(r.stdout).toBe(`${expected}\n`);
    expect(r.stdout).toMatch(/^[A-Za-z0-9_-]{43}\n$/);
  });

  it('thumbprint of a missing or non-certificate file exits 2', async () => {
    expect((await cnfguard(['thumbprint', join(dir, 'absent.pem')])).code).toBe(2);
    const r = await cnfguard(['thumbprint', goodConfig]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('no PEM certificate');
  });
});

describe('cnfguard run', () => {
  it('refuses a bad config with exit 2 and a JSON log line naming the key and the file', async () => {
    const r = await cnfguard(['run', '--config', goodConfig], { RS_SECRET: undefined });
    expect(r.code).toBe(2);
    const line = JSON.parse(r.stdout.trim().split('\n')[0] ?? '{}') as { msg: string; problems: { path: string }[] };
    expect(line.msg).toContain(goodConfig);
    expect(line.problems[0]?.path).toBe('introspection.clientSecret');
  });

  it('serves from CNFGUARD_CONFIG, then exits 0 on SIGTERM', async () => {
    const { child, started, output } = await untilStarted(process.execPath, [BIN, 'run'], { CNFGUARD_CONFIG: goodConfig, RS_SECRET: 'rs-secret' });
    const { listen, admin } = started as { listen: string; admin: string };
    const token = await d.tokenFor('client1');
    expect((await curl(d.pki, `${listen}/x`, { cert: d.pki.files.client1, token })).status).toBe(200);
    expect((await fetch(`${admin}/readyz`)).status).toBe(200);
    child.kill('SIGTERM');
    const [code] = (await once(child, 'exit')) as [number];
    expect(code).toBe(0);
    expect(output()).not.toContain(token);
    expect(output()).not.toContain('rs-secret');
  });

  it('says in its start-up line where DPoP signatures are checked: on the threadpool with a CPU to spare, inline on one', async () => {
    const signaturesOf = async (command: string, args: string[]) => {
      const { child, started } = await untilStarted(command, args, { RS_SECRET: 'rs-secret' });
      child.kill('SIGTERM');
      await once(child, 'exit');
      return started.dpopSignatures;
    };
    const run = [BIN, 'run', '--config', goodConfig];
    expect(await signaturesOf('taskset', ['-c', '0', process.execPath, ...run])).toBe('event-loop');
    // Here as in the child: the same CPUs (and cgroup) as this process, and `workers: 1`.
    expect(await signaturesOf(process.execPath, run)).toBe(usableCpus() > 1 ? 'threadpool' : 'event-loop');
  });

  it('exits 2 when the port is taken', async () => {
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const port = (blocker.address() as { port: number }).port;
    const file = join(dir, 'taken.yaml');
    await writeFile(file, stringify(baseConfig(d.pki, d.as, d.upstream, { listen: { host: '127.0.0.1', port } })));
    const r = await cnfguard(['run', '--config', file]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`cnfguard: cannot start: the proxy listener (listen) cannot listen on 127.0.0.1:${port}: EADDRINUSE: the address is already in use`);
    // The admin listener's turn: the message names it and its address.
    const adminFile = join(dir, 'taken-admin.yaml');
    await writeFile(adminFile, stringify(baseConfig(d.pki, d.as, d.upstream, { admin: { host: '127.0.0.1', port }, introspection: { url: d.as.introspectionUrl, clientId: 'rs', clientSecret: 'rs-secret', ca: d.pki.files.ca, probeAtStartup: false } })));
    const admin = await cnfguard(['run', '--config', adminFile]);
    blocker.close();
    expect(admin.code).toBe(2);
    expect(admin.stderr).toContain(`the admin listener (admin) cannot listen on 127.0.0.1:${port}: EADDRINUSE`);
    const fatal = admin.stdout.split('\n').find((l) => l.includes('"level":"fatal"'));
    expect(JSON.parse(fatal ?? '{}')).toMatchObject({ code: 'EADDRINUSE', msg: expect.stringContaining('the admin listener (admin)') as unknown });
  });

  it('nothing half-started: when the admin port is taken, the proxy listener is released again', async () => {
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const adminPort = (blocker.address() as { port: number }).port;
    const probe = createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const port = (probe.address() as { port: number }).port;
    await new Promise((resolve) => probe.close(resolve));
    const config = loadConfigObject(baseConfig(d.pki, d.as, d.upstream, { listen: { host: '127.0.0.1', port }, admin: { host: '127.0.0.1', port: adminPort } }), 'test');
    const app = createApp(config, { logger: pino({ level: 'silent' }), defaultMetrics: false });
    await expect(app.start()).rejects.toMatchObject({ code: 'EADDRINUSE' });
    blocker.close();
    // The proxy port was bound before the admin port failed: it must be free again.
    const again = createServer();
    await new Promise<void>((resolve, reject) => {
      again.once('error', reject);
      again.listen(port, '127.0.0.1', resolve);
    });
    again.close();
  });
});

/** A `node` on PATH older than 24 (a machine's system Node), for the launcher's relay path. */
function olderNode(): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    const candidate = join(dir, 'node');
    try {
      const major = Number(execFileSync(candidate, ['-p', 'process.versions.node.split(".")[0]'], { encoding: 'utf8' }).trim());
      if (major < 24) return candidate;
    } catch {
      // not there, or not a node
    }
  }
  return undefined;
}
const OLDER_NODE = olderNode();

describe.skipIf(OLDER_NODE === undefined)(`bin/cnfguard.js on an older Node (${OLDER_NODE ?? 'none found'}) relays to the pinned Node 24`, () => {
  /** The launcher under the older Node, and the server it started (its pid is in the log lines). */
  async function launch(configFile: string, { detached = false } = {}) {
    // detached: the launcher leads a process group of its own, as a shell's job does (Ctrl-C goes to that group).
    const launcher = spawn(OLDER_NODE as string, [BIN, 'run', '--config', configFile], { env: { ...process.env, RS_SECRET: 'rs-secret' }, stdio: ['ignore', 'pipe', 'pipe'], detached });
    const exited = once(launcher, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
    let out = '';
    launcher.stdout.on('data', (c: Buffer) => (out += c.toString()));
    launcher.stderr.on('data', (c: Buffer) => (out += c.toString()));
    const line = (msg: string) => out.split('\n').find((l) => l.startsWith('{') && (JSON.parse(l) as { msg?: string }).msg === msg);
    const waitForLine = async (msg: string): Promise<Record<string, unknown>> =>
      JSON.parse(await waitFor(() => line(msg), () => `a "${msg}" line; output so far:\n${out}`, { timeoutMs: 20_000, intervalMs: 50 })) as Record<string, unknown>;
    const started = await waitForLine('cnfguard started');
    expect(started.pid).not.toBe(launcher.pid); // the server runs in the launcher's child
    return { launcher, exited, started, waitForLine };
  }

  it('a server killed by SIGKILL takes the launcher down by SIGKILL (systemd Restart=on-failure sees it)', async () => {
    const { launcher, exited, started } = await launch(goodConfig);
    try {
      process.kill(started.pid as number, 'SIGKILL');
      expect(await exited).toEqual([null, 'SIGKILL']);
    } finally {
      launcher.kill('SIGKILL');
    }
  });

  /**
   * A stop signal that reaches the server directly as well as through the launcher's relay must
   * still drain it: the second copy would be the server's "end at once". `send` delivers the signal
   * the way a terminal or a supervisor does.
   */
  async function drainsOnce(name: string, send: (launcher: ChildProcess, server: number) => void) {
    const file = join(dir, `launcher-${name}.yaml`);
    await writeFile(file, stringify(baseConfig(d.pki, d.as, d.upstream, { shutdownGraceSeconds: 30 })));
    const { launcher, exited, started, waitForLine } = await launch(file, { detached: true });
    try {
      const token = await d.tokenFor('client1');
      const slow = curl(d.pki, `${started.listen as string}/launcher-${name}`, { cert: d.pki.files.client1, token, headers: ['x-echo-delay-ms: 2500'] });
      await waitFor(() => d.upstream.requests.some((r) => r.url === `/launcher-${name}`), 'the slow request to reach the upstream', { timeoutMs: 10_000, intervalMs: 50 });
      send(launcher, started.pid as number);
      await waitForLine('shutting down');
      await waitForLine('draining');
      expect((await slow).status).toBe(200);
      await waitForLine('cnfguard stopped');
      expect(await exited).toEqual([0, null]);
    } finally {
      try {
        process.kill(-(launcher.pid as number), 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }

  it("Ctrl-C (SIGINT to the launcher's process group) drains the server: the in-flight request completes", async () => {
    await drainsOnce('group-int', (launcher) => process.kill(-(launcher.pid as number), 'SIGINT'));
  });

  it('SIGTERM to the launcher and the server one by one (systemd KillMode=control-group) drains the server', async () => {
    await drainsOnce('each-term', (launcher, server) => {
      process.kill(server, 'SIGTERM');
      launcher.kill('SIGTERM');
    });
  });

  it('a second SIGTERM while draining ends the server by SIGTERM, and the launcher dies the same way', async () => {
    const file = join(dir, 'launcher-drain.yaml');
    await writeFile(file, stringify(baseConfig(d.pki, d.as, d.upstream, { shutdownGraceSeconds: 30 })));
    const { launcher, exited, started, waitForLine } = await launch(file);
    try {
      const token = await d.tokenFor('client1');
      const slow = curl(d.pki, `${started.listen as string}/launcher-slow`, { cert: d.pki.files.client1, token, headers: ['x-echo-delay-ms: 10000'] }).catch(() => undefined);
      await waitFor(() => d.upstream.requests.some((r) => r.url === '/launcher-slow'), 'the slow request to reach the upstream', { timeoutMs: 10_000, intervalMs: 50 });
      launcher.kill('SIGTERM');
      await waitForLine('draining');
      launcher.kill('SIGTERM');
      expect(await exited).toEqual([null, 'SIGTERM']);
      await slow;
    } finally {
      launcher.kill('SIGKILL');
    }
  });
});

it('npm run demo walks through accept, replay and no-certificate (--once)', async () => {
  const cwd = await mkdtemp(join(tmpdir(), 'cnfguard-demo-'));
  const child = spawn(process.execPath, [join(ROOT, 'cmd', 'demo.ts'), '--once'], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr.on('data', (c: Buffer) => (out += c.toString()));
  const [code] = (await once(child, 'exit')) as [number];
  await rm(cwd, { recursive: true, force: true });
  expect(out).toMatch(/client1 calls cnfguard with its own certificate\s*: HTTP 200/);
  expect(out).toMatch(/replayed with client2's certificate: HTTP 401/);
  expect(out).toMatch(/no certificate at all\s*: HTTP 401/);
  expect(code).toBe(0);
});
