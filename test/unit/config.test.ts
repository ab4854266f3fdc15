import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml, stringify } from 'yaml';
import {
  ConfigError,
  effectiveConfigYaml,
  formatPath,
  interpolate,
  loadConfigFile,
  loadConfigObject,
  parseConfigText,
  type ConfigProblem,
  type Environment,
  type LoadedConfig,
} from '../../src/config/load.ts';
import { configWarnings } from '../../src/config/checks.ts';
import { generateDevCertificates } from '../../src/tls/dev-certs.ts';

let dir: string;
const files = { serverCert: '', serverKey: '', clientKey: '', caCert: '', secret: '', emptySecret: '', garbage: '' };
const SECRET = 'hunter2-the-introspection-secret';

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cnfguard-config-'));
  const certs = generateDevCertificates();
  const write = async (name: string, text: string) => {
    const path = join(dir, name);
    await writeFile(path, text);
    return path;
  };
  files.serverCert = await write('server.crt', certs.server.cert + certs.ca.cert);
  files.serverKey = await write('server.key', certs.server.key);
  files.clientKey = await write('client1.key', certs.clients.client1.key);
  files.caCert = await write('ca.crt', certs.ca.cert);
  files.secret = await write('secret.txt', 'file-secret\n');
  files.emptySecret = await write('empty.txt', '\n');
  files.garbage = await write('garbage.pem', 'not a pem file\n');
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** The smallest valid config, with overrides merged in one level deep. */
function minimal(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  const base: Record<string, unknown> = {
    tls: { cert: files.serverCert, key: files.serverKey },
    introspection: { url: 'https://as.example/oauth2/introspect', clientId: 'cnfguard', clientSecret: SECRET },
    upstream: 'http://127.0.0.1:8080',
  };
  for (const [key, value] of Object.entries(overrides)) {
    const current = base[key];
    base[key] =
      value !== null && typeof value === 'object' && !Array.isArray(value) && current !== null && typeof current === 'object'
        ? { ...current, ...value }
        : value;
  }
  return base;
}

function problemsOf(load: () => unknown): ConfigProblem[] {
  try {
    load();
  } catch (err) {
    if (err instanceof ConfigError) return [...err.problems];
    throw err;
  }
  throw new Error('expected a ConfigError');
}

async function writeConfig(name: string, text: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, text);
  return path;
}

describe('interpolate', () => {
  type Row = [string, string, Environment, unknown];
  it.each<Row>([
    ['a whole reference', '${VAR}', { VAR: 'value' }, 'value'],
    ['a reference inside text', 'a-${VAR}-b', { VAR: 'x' }, 'a-x-b'],
    ['two references', '${A}:${B}', { A: 'h', B: 'p' }, 'h:p'],
    ['a default, variable unset', '${VAR:-fallback}', {}, 'fallback'],
    ['a default, variable set', '${VAR:-fallback}', { VAR: 'set' }, 'set'],
    ['a default, variable empty', '${VAR:-fallback}', { VAR: '' }, 'fallback'],
    ['an empty default', 'x${VAR:-}y', {}, 'xy'],
    ['an empty variable, no default', 'x${VAR}y', { VAR: '' }, 'xy'],
    ['$$ is a literal $', 'pa$$word', {}, 'pa$word'],
    ['$$ before a reference', '$${VAR}', { VAR: 'no' }, '${VAR}'],
    ['a lone $', 'cost $5', {}, 'cost $5'],
    ['no reference', 'plain', {}, 'plain'],
    ['a value is not interpolated again', '${A}', { A: '${B}', B: 'no' }, '${B}'],
    ['a default with spaces and colons', '${URL:-http://a b:1}', {}, 'http://a b:1'],
    // Interpolation yields text; the schema reads numbers and booleans where it expects them.
    ['a whole reference stays text', '${PORT:-8443}', {}, '8443'],
    ['a whole reference from the environment stays text', '${PORT}', { PORT: '9443' }, '9443'],
    ['a boolean-looking reference stays text', '${FLAG}', { FLAG: 'true' }, 'true'],
    ['a number inside text stays text', 'port-${PORT:-8443}', {}, 'port-8443'],
    ['a mapping-looking value stays text', '${V}', { V: 'a: b' }, 'a: b'],
    ['a list-looking value stays text', '${V}', { V: '[1, 2]' }, '[1, 2]'],
  ])('%s', (_name, value, env, expected) => {
    const problems: ConfigProblem[] = [];
    expect(interpolate(value, env, 'some.path', problems)).toEqual(expected);
    expect(problems).toEqual([]);
  });

  it('reports a missing variable with the YAML path, and names the variable', () => {
    const problems: ConfigProblem[] = [];
    interpolate('${INTROSPECTION_SECRET}', {}, 'introspection.clientSecret', problems);
    expect(problems).toHaveLength(1);
    expect(problems[0]?.path).toBe('introspection.clientSecret');
    expect(problems[0]?.message).toContain('INTROSPECTION_SECRET');
  });

  it.each<[string, string, string]>([
    ['an unclosed reference with a default', '${INTROSPECTION_SECRET:-rs-secret', '"${INTROSPECTION_SECRET:-…"'],
    ['an unclosed reference', 'https://${HOST/introspect', '"${HOST"'],
    ['an unclosed reference after a closed one', '${A:-a}-${B', '"${B"'],
    ['a lone ${', 'x${', '"${"'],
  ])('reports %s with the YAML path, never the default', (_name, value, shown) => {
    const problems: ConfigProblem[] = [];
    interpolate(value, {}, 'introspection.clientSecret', problems);
    expect(problems).toHaveLength(1);
    expect(problems[0]?.path).toBe('introspection.clientSecret');
    expect(problems[0]?.message).toContain(`unclosed reference ${shown}`);
    expect(problems[0]?.message).not.toContain('rs-secret');
  });

  it.each(['$${NOT_A_REFERENCE', 'a ${A:-{x}} b', '${A}}', '$$$${B:-b}'])('%j has no unclosed reference', (value) => {
    const problems: ConfigProblem[] = [];
    interpolate(value, { A: 'a' }, 'x', problems);
    expect(problems).toEqual([]);
  });

  it('reports every missing variable of one value', () => {
    const problems: ConfigProblem[] = [];
    interpolate('${A}-${B}-${C:-c}', {}, 'x', problems);
    expect(problems).toHaveLength(2);
    expect(problems.every((p) => p.path === 'x')).toBe(true);
    expect(problems[0]?.message).toMatch(/variable A /);
    expect(problems[1]?.message).toMatch(/variable B /);
  });
});

describe('formatPath', () => {
  it.each<[PropertyKey[], string]>([
    [[], ''],
    [['introspection', 'url'], 'introspection.url'],
    [['routes', 0, 'upstream'], 'routes[0].upstream'],
    [['routes', 1, 'scopes', 2], 'routes[1].scopes[2]'],
  ])('%j -> %s', (path, text) => {
    expect(formatPath(path)).toBe(text);
  });
});

describe('parseConfigText', () => {
  it('parses YAML and interpolates the environment, with the YAML path of every reference', () => {
    const problems: ConfigProblem[] = [];
    const raw = parseConfigText('listen:\n  port: ${PORT:-8443}\nroutes:\n  - upstream: ${UP}\n', {}, problems);
    expect(raw).toEqual({ listen: { port: '8443' }, routes: [{ upstream: '' }] });
    expect(problems.map((p) => p.path)).toEqual(['routes[0].upstream']);
  });

  it('reads an empty document as an empty mapping', () => {
    const problems: ConfigProblem[] = [];
    expect(parseConfigText('', {}, problems)).toEqual({});
    expect(problems).toEqual([]);
  });

  it.each([
    ['a list', '- a\n- b\n'],
    ['a scalar', 'just text\n'],
  ])('refuses %s at the top level', (_name, text) => {
    const problems: ConfigProblem[] = [];
    expect(parseConfigText(text, {}, problems)).toBeUndefined();
    expect(problems).toHaveLength(1);
    expect(problems[0]?.message).toMatch(/mapping/);
  });

  it('refuses a YAML syntax error', () => {
    const problems: ConfigProblem[] = [];
    expect(parseConfigText('listen: { host: a\n', {}, problems)).toBeUndefined();
    expect(problems.length).toBeGreaterThan(0);
    expect(problems[0]?.message).toMatch(/^YAML: /);
  });

  it('a reference inside a flow map or sequence is a plain value (issue 18: the README\'s own { … } maps)', () => {
    const problems: ConfigProblem[] = [];
    const text = 'listen: { host: 127.0.0.1, port: ${PORT:-8443} }\nscopes: [${S1}, "${S2:-b}", \'${S3:-c}\']\nadmin: {port: ${ADMIN:-9090}}\n';
    expect(parseConfigText(text, { S1: 'a' }, problems)).toEqual({ listen: { host: '127.0.0.1', port: '8443' }, scopes: ['a', 'b', 'c'], admin: { port: '9090' } });
    expect(parseConfigText(text, { PORT: '9443', S1: 'a' }, problems)).toMatchObject({ listen: { port: '9443' } });
    expect(problems).toEqual([]);
  });

  it('an environment value is text, never YAML; $$ stays a literal $; keys are not interpolated', () => {
    const problems: ConfigProblem[] = [];
    const raw = parseConfigText('a: { b: ${X} }\nc: "$${X}"\n${K}: 1\nd: pre-${X}-post # ${IN_COMMENT}\n', { X: '{ evil: [1] }' }, problems);
    expect(raw).toEqual({ a: { b: '{ evil: [1] }' }, c: '${X}', '${K}': 1, d: 'pre-{ evil: [1] }-post' });
    expect(problems).toEqual([]);
  });

  it('a YAML syntax error is a few lines: file:line:col, the message, the line with a caret, a hint on ${', () => {
    const problems: ConfigProblem[] = [];
    const text = 'upstream: http://a\nlisten: { port: ${PORT:-8443}, host: a b: c }\nadmin: { port: 1 }\n';
    expect(parseConfigText(text, {}, problems, '/etc/cnfguard.yaml')).toBeUndefined();
    expect(problems).toHaveLength(1);
    const lines = (problems[0]?.message ?? '').split('\n');
    expect(lines.length).toBeLessThanOrEqual(5);
    expect(lines[0]).toMatch(/^YAML: \/etc\/cnfguard\.yaml:2:\d+: \S/);
    expect(lines[1]).toBe('      listen: { port: ${PORT:-8443}, host: a b: c }');
    expect(lines[2]).toMatch(/^ {6} +\^$/);
    expect(lines[3]).toContain('this line has a "${"');
    // A reference that swallowed the map's closing brace: the hint points at the line before.
    const swallowed: ConfigProblem[] = [];
    expect(parseConfigText('listen: { port: ${PORT:-8443 }\nupstream: x\n', {}, swallowed, 'c.yaml')).toBeUndefined();
    expect(swallowed[0]?.message).toMatch(/^YAML: c\.yaml:2:1: /);
    expect(swallowed[0]?.message).toContain('line 1 has a "${"');
    // No ${ near: no hint.
    const plain: ConfigProblem[] = [];
    parseConfigText('listen: { host: a\n', {}, plain);
    expect(plain[0]?.message).toMatch(/^YAML: line \d+, column \d+: /);
    expect(plain[0]?.message).not.toContain('${');
  });

  it('refuses a duplicate key, naming the key', () => {
    const problems: ConfigProblem[] = [];
    expect(parseConfigText('upstream: http://a\nupstream: http://b\n', {}, problems)).toBeUndefined();
    expect(problems).toHaveLength(1);
    const problem = problems[0];
    // The contract: every problem is reported "with its YAML path".
    expect(`${problem?.path} ${problem?.message}`).toContain('upstream');
  });
});

describe('loadConfigObject', () => {
  it('applies the documented defaults', () => {
    const { settings } = loadConfigObject(minimal(), 'test');
    expect(settings.listen).toEqual({ host: '0.0.0.0', port: 8443, http2: true });
    expect(settings.admin).toEqual({ host: '127.0.0.1', port: 9090, upstreamCheck: { timeoutMs: 1000 }, deprecatedMetrics: true });
    expect(settings.introspection.cache).toEqual({ maxEntries: 100_000, maxTtlSeconds: 300, negativeTtlSeconds: 5, negativeMaxEntries: 10_000 });
    expect(settings.introspection.budget).toEqual({ perPeerPerSecond: 50, perPeerBurst: 100, totalPerSecond: 500, totalBurst: 1000, maxPeers: 10_000 });
    expect(settings.introspection.authMethod).toBe('client_secret_basic');
    expect(settings.introspection.timeoutMs).toBe(2000);
    expect(settings.binding).toBe('required');
    expect(settings.routes).toEqual([]);
    expect(settings.errors).toEqual({ realm: 'cnfguard', missingCertificate: { code: 'invalid_token', status: 401 }, advertiseMethods: true });
    expect(settings.scopes).toEqual([]);
    expect(settings.audience).toBeUndefined();
    expect(settings.stripAuthorization).toBe(false);
    expect(settings.claimHeaders).toEqual({});
    expect(settings.cnf).toEqual({ unknownMethods: 'reject' });
    expect(settings.upstreamTimeoutMs).toBe(30_000);
    expect(settings.headers).toEqual({
      subject: 'x-auth-subject',
      clientId: 'x-auth-client-id',
      scope: 'x-auth-scope',
      certThumbprint: 'x-auth-cert-thumbprint',
      clientCert: 'x-forwarded-client-cert',
      binding: 'x-auth-binding',
      dpopThumbprint: 'x-auth-dpop-jkt',
    });
    expect(settings.methods).toEqual(['mtls']);
    expect(settings.dpop).toEqual({ algorithms: ['ES256', 'EdDSA', 'PS256'], proofMaxAgeSeconds: 300, clockSkewSeconds: 5, nonce: false, nonceRotationSeconds: 60, replayStoreMaxEntries: 200_000 });
    expect(settings.publicOrigin).toBeUndefined();
  });

  it('loads the PEM files it names', () => {
    const config = loadConfigObject(minimal({ tls: { clientCa: files.caCert } }), 'test');
    expect(config.source).toBe('test');
    expect(config.tls.cert).toMatch(/^-----BEGIN CERTIFICATE-----/);
    expect(config.tls.key).toMatch(/^-----BEGIN PRIVATE KEY-----/);
    expect(config.tls.clientCa).toMatch(/^-----BEGIN CERTIFICATE-----/);
    expect(config.introspection.clientSecret).toBe(SECRET);
  });

  it('reads clientSecretFile, trimmed', () => {
    const config = loadConfigObject(minimal({ introspection: { clientSecret: undefined, clientSecretFile: files.secret } }), 'test');
    expect(config.introspection.clientSecret).toBe('file-secret');
  });

  it('lower-cases configured header names and route hosts', () => {
    const { settings } = loadConfigObject(minimal({ headers: { subject: 'X-User' }, routes: [{ host: 'API.Example', upstream: 'http://127.0.0.1:1' }] }), 'test');
    expect(settings.headers.subject).toBe('x-user');
    expect(settings.routes[0]?.host).toBe('api.example');
  });

  it('returns a deep-frozen result', () => {
    const config = loadConfigObject(minimal({ routes: [{ pathPrefix: '/admin', scopes: ['admin'] }] }), 'test');
    for (const value of [config, config.settings, config.settings.listen, config.settings.introspection, config.settings.introspection.cache, config.settings.routes, config.settings.routes[0], config.settings.routes[0]?.scopes, config.settings.errors.missingCertificate, config.tls, config.introspection]) {
      expect(Object.isFrozen(value)).toBe(true);
    }
    expect(() => {
      (config.settings.listen as { port: number }).port = 1;
    }).toThrow(TypeError);
    expect(() => {
      (config.settings.routes[0]?.scopes as string[]).push('x');
    }).toThrow(TypeError);
    expect(config.settings.listen.port).toBe(8443);
  });

  type ProblemRow = [string, Record<string, unknown>, string, RegExp | undefined];
  it.each<ProblemRow>([
    ['a non-http introspection URL', { introspection: { url: 'ftp://as.example/introspect' } }, 'introspection.url', undefined],
    ['a relative introspection URL', { introspection: { url: '/introspect' } }, 'introspection.url', undefined],
    ['a bad route upstream', { routes: [{ pathPrefix: '/a', upstream: 'not a url' }] }, 'routes[0].upstream', undefined],
    ['a bad second route', { routes: [{ pathPrefix: '/a' }, { pathPrefix: 'b' }] }, 'routes[1].pathPrefix', undefined],
    ['a route matching nothing', { routes: [{ upstream: 'http://127.0.0.1:1' }] }, 'routes[0]', /pathPrefix|host/],
    ['a route scope with a space', { routes: [{ pathPrefix: '/a', scopes: ['a b'] }] }, 'routes[0].scopes[0]', undefined],
    ['a bad default upstream', { upstream: 'localhost:8080' }, 'upstream', undefined],
    ['an unknown binding mode', { binding: 'maybe' }, 'binding', undefined],
    ['a listen port out of range', { listen: { port: 70000 } }, 'listen.port', undefined],
    ['an admin port that is not a number', { admin: { port: 'nine' } }, 'admin.port', undefined],
    ['an unknown key', { listen: { prot: 1 } }, 'listen', /prot/],
    ['an unknown key in the cache', { introspection: { cache: { ttl: 1 } } }, 'introspection.cache', /ttl/],
    ['a negative negativeMaxEntries', { introspection: { cache: { negativeMaxEntries: -1 } } }, 'introspection.cache.negativeMaxEntries', undefined],
    ['a budget burst of 0', { introspection: { budget: { perPeerBurst: 0 } } }, 'introspection.budget.perPeerBurst', undefined],
    ['a negative budget rate', { introspection: { budget: { totalPerSecond: -1 } } }, 'introspection.budget.totalPerSecond', undefined],
    ['an unknown budget key', { introspection: { budget: { perIpPerSecond: 1 } } }, 'introspection.budget', /perIpPerSecond/],
    ['an unknown top-level key', { upstreams: 'http://a' }, '', /upstreams/],
    ['no clientSecret for client_secret_basic', { introspection: { clientSecret: undefined } }, 'introspection.clientSecret', /client_secret_basic/],
    ['no clientSecret for client_secret_post', { introspection: { clientSecret: undefined, authMethod: 'client_secret_post' } }, 'introspection.clientSecret', /client_secret_post/],
    ['clientSecret and clientSecretFile together', { introspection: { clientSecretFile: '/run/secret' } }, 'introspection.clientSecretFile', undefined],
    ['an empty clientSecret', { introspection: { clientSecret: '' } }, 'introspection.clientSecret', undefined],
    ['an unknown auth method', { introspection: { authMethod: 'private_key_jwt' } }, 'introspection.authMethod', undefined],
    ['cert without key', { introspection: { cert: files.serverCert } }, 'introspection.key', undefined],
    ['missingCertificate.status 500', { errors: { missingCertificate: { status: 500 } } }, 'errors.missingCertificate.status', undefined],
    ['missingCertificate.status 399', { errors: { missingCertificate: { status: 399 } } }, 'errors.missingCertificate.status', undefined],
    ['missingCertificate.status not an integer', { errors: { missingCertificate: { status: 401.5 } } }, 'errors.missingCertificate.status', undefined],
    ['missingCertificate.code with a space', { errors: { missingCertificate: { code: 'invalid token' } } }, 'errors.missingCertificate.code', undefined],
    ['missingCertificate.code with a quote', { errors: { missingCertificate: { code: 'a"b' } } }, 'errors.missingCertificate.code', undefined],
    ['a header name with a space', { headers: { subject: 'x auth' } }, 'headers.subject', undefined],
    ['a header name with a colon', { headers: { clientCert: 'x-cert:' } }, 'headers.clientCert', undefined],
    ['an empty realm', { errors: { realm: '' } }, 'errors.realm', undefined],
    ['a negative cache size', { introspection: { cache: { maxEntries: -1 } } }, 'introspection.cache.maxEntries', undefined],
    ['a zero timeout', { introspection: { timeoutMs: 0 } }, 'introspection.timeoutMs', undefined],
    ['a route shadowed by an earlier one', { routes: [{ pathPrefix: '/api' }, { pathPrefix: '/api/admin', scopes: ['admin'] }] }, 'routes[1]', /routes\[0\]/],
    ['a route host that is not a host name', { routes: [{ host: 'api.example/x' }] }, 'routes[0].host', undefined],
    ['a wildcard in the middle of a host', { routes: [{ host: 'api.*.example' }] }, 'routes[0].host', undefined],
    ['a claim header that is not claims.<member>', { claimHeaders: { 'x-tenant': 'tenant_id' } }, 'claimHeaders.x-tenant', undefined],
    ['an unknown cnf policy', { cnf: { unknownMethods: 'accept' } }, 'cnf.unknownMethods', undefined],
    ['a route header name with a space', { routes: [{ pathPrefix: '/a', headers: { subject: 'x user' } }] }, 'routes[0].headers.subject', undefined],
    ['a route name with a space', { routes: [{ name: 'my api', pathPrefix: '/a' }] }, 'routes[0].name', undefined],
    ['a route name with a quote', { routes: [{ name: 'a"b', pathPrefix: '/a' }] }, 'routes[0].name', undefined],
    ['an empty route name', { routes: [{ name: '', pathPrefix: '/a' }] }, 'routes[0].name', undefined],
    ['a route name of 64 characters', { routes: [{ name: 'a'.repeat(64), pathPrefix: '/a' }] }, 'routes[0].name', undefined],
    ['the route name default', { routes: [{ name: 'default', pathPrefix: '/a' }] }, 'routes[0].name', /reserved/],
    ['a positional route id as a name', { routes: [{ name: 'routes[1]', pathPrefix: '/a' }] }, 'routes[0].name', undefined],
    ['two routes of one name', { routes: [{ name: 'api', pathPrefix: '/a' }, { name: 'api', pathPrefix: '/b' }] }, 'routes[1].name', /routes\[0\]/],
    ['a jwt route without an audience', { jwt: { issuer: 'https://as.example', jwksUri: 'https://as.example/jwks' }, routes: [{ pathPrefix: '/a', validation: 'jwt' }] }, 'routes[0].audience', /RFC 9068 §4/],
    ['the default route validating JWTs without an audience', { jwt: { issuer: 'https://as.example', jwksUri: 'https://as.example/jwks' }, validation: 'jwt-then-introspection' }, 'audience', /RFC 9068 §4/],
    ['a route missingCertificate status out of range', { routes: [{ pathPrefix: '/a', errors: { missingCertificate: { status: 200 } } }] }, 'routes[0].errors.missingCertificate.status', undefined],
  ])('reports %s at its YAML path', (_name, overrides, path, message) => {
    const problems = problemsOf(() => loadConfigObject(minimal(overrides), 'test'));
    expect(problems.map((p) => p.path)).toContain(path);
    if (message !== undefined) expect(problems.find((p) => p.path === path)?.message).toMatch(message);
  });

  it('requires cert and key for tls_client_auth', () => {
    const problems = problemsOf(() => loadConfigObject(minimal({ introspection: { clientSecret: undefined, authMethod: 'tls_client_auth' } }), 'test'));
    expect(problems.map((p) => p.path).sort()).toEqual(['introspection.cert', 'introspection.key']);
  });

  it('accepts tls_client_auth with cert and key and no secret', () => {
    const config = loadConfigObject(
      minimal({ introspection: { clientSecret: undefined, authMethod: 'tls_client_auth', cert: files.serverCert, key: files.serverKey } }),
      'test',
    );
    expect(config.introspection.cert).toMatch(/BEGIN CERTIFICATE/);
    expect(config.introspection.key).toMatch(/BEGIN PRIVATE KEY/);
    expect(config.introspection.clientSecret).toBeUndefined();
  });

  it('reports the required sections together', () => {
    const problems = problemsOf(() => loadConfigObject({}, 'test'));
    expect(problems.map((p) => p.path).sort()).toEqual(['introspection', 'tls', 'upstream']);
  });

  it('reports several schema problems together', () => {
    const problems = problemsOf(() =>
      loadConfigObject(
        minimal({ introspection: { url: 'nope' }, routes: [{ pathPrefix: '/a', upstream: 'nope' }], errors: { missingCertificate: { status: 600 } }, headers: { scope: 'a b' } }),
        'test',
      ),
    );
    expect(problems.map((p) => p.path).sort()).toEqual(['errors.missingCertificate.status', 'headers.scope', 'introspection.url', 'routes[0].upstream']);
  });

  it('decisionApi: a port, a Unix socket or both; a socket path is absolute and fits sun_path; a trusted proxy is CIDRs or the socket', () => {
    const pem = { header: 'x-client-cert', format: 'pem-urlencoded' };
    const problems = (extra: Record<string, unknown>) => problemsOf(() => loadConfigObject(minimal(extra), 'test')).map((p) => `${p.path}: ${p.message}`);
    expect(problems({ decisionApi: {} })).toEqual(['decisionApi.port: set port, socket or both']);
    expect(problems({ decisionApi: { socket: 'run/decision.sock' } })).toEqual(['decisionApi.socket: an absolute path, e.g. /run/cnfguard/decision.sock']);
    expect(problems({ decisionApi: { socket: `/${'d'.repeat(107)}` } })).toEqual(["decisionApi.socket: at most 107 bytes (the kernel's limit for a Unix socket path)"]);
    expect(problems({ decisionApi: { socket: '/run/d.sock', socketMode: '666x' } })).toEqual(['decisionApi.socketMode: octal permissions, e.g. "0660"']);
    const both = 'trustedProxies[0].cidrs: set either cidrs (peers by address) or unixSocket: true (peers of decisionApi.socket), not both or neither';
    expect(problems({ trustedProxies: [{ ...pem, cidrs: ['127.0.0.1'], unixSocket: true }] })).toEqual([both]);
    expect(problems({ trustedProxies: [pem] })).toEqual([both]);
    const loaded = loadConfigObject(minimal({ decisionApi: { socket: '/run/d.sock', port: 9191 }, trustedProxies: [{ ...pem, unixSocket: true }] }), 'test');
    expect(loaded.settings.decisionApi).toEqual({ host: '127.0.0.1', port: 9191, socket: '/run/d.sock', socketMode: '0660' });
    expect(loaded.settings.trustedProxies[0]).toMatchObject({ unixSocket: true, header: 'x-client-cert' });
    const warned = (extra: Record<string, unknown>) => configWarnings(loadConfigObject(minimal(extra), 'test').settings).filter((w) => /unixSocket|socket/.test(w.path)).map((w) => w.path);
    expect(warned({ decisionApi: { socket: '/run/d.sock' }, trustedProxies: [{ ...pem, cidrs: ['127.0.0.1'] }] })).toEqual(['decisionApi.socket']);
    expect(warned({ decisionApi: { port: 9191 }, trustedProxies: [{ ...pem, cidrs: ['127.0.0.1'] }, { ...pem, unixSocket: true }] })).toEqual(['trustedProxies[1].unixSocket']);
    expect(warned({ decisionApi: { socket: '/run/d.sock' }, trustedProxies: [{ ...pem, unixSocket: true }] })).toEqual([]);
  });

  it('names an unreadable certificate file at tls.cert', () => {
    const missing = join(dir, 'does-not-exist.crt');
    const problems = problemsOf(() => loadConfigObject(minimal({ tls: { cert: missing } }), 'test'));
    expect(problems).toHaveLength(1);
    expect(problems[0]?.path).toBe('tls.cert');
    expect(problems[0]?.message).toContain(missing);
  });

  it.each([
    ['a file that is not PEM', 'tls.cert', () => ({ tls: { cert: files.garbage } }), /no PEM certificate/],
    ['a key file as certificate', 'tls.cert', () => ({ tls: { cert: files.serverKey } }), /no PEM certificate/],
    ['a certificate as key', 'tls.key', () => ({ tls: { key: files.serverCert } }), /private key/],
    ['an unreadable client CA', 'tls.clientCa', () => ({ tls: { clientCa: join(dir, 'nope-ca.crt') } }), /nope-ca\.crt/],
    ['an unreadable introspection CA', 'introspection.ca', () => ({ introspection: { ca: join(dir, 'nope-as.crt') } }), /nope-as\.crt/],
    ['an unreadable secret file', 'introspection.clientSecretFile', () => ({ introspection: { clientSecret: undefined, clientSecretFile: join(dir, 'nope.txt') } }), /nope\.txt/],
    ['an empty secret file', 'introspection.clientSecretFile', () => ({ introspection: { clientSecret: undefined, clientSecretFile: files.emptySecret } }), /empty/],
  ])('reports %s at %s', (_name, path, overrides, message) => {
    const problems = problemsOf(() => loadConfigObject(minimal(overrides()), 'test'));
    expect(problems.map((p) => p.path)).toEqual([path]);
    expect(problems[0]?.message).toMatch(message);
  });

  it('reports a key that does not match the certificate, naming both files', () => {
    const problems = problemsOf(() => loadConfigObject(minimal({ tls: { key: files.clientKey } }), 'test'));
    expect(problems).toHaveLength(1);
    expect(problems[0]?.path).toBe('tls.key');
    expect(problems[0]?.message).toContain(files.clientKey);
    expect(problems[0]?.message).toContain(files.serverCert);
  });

  it('reports several file problems together', () => {
    const problems = problemsOf(() =>
      loadConfigObject(minimal({ tls: { cert: join(dir, 'a.crt'), clientCa: join(dir, 'b.crt') }, introspection: { ca: join(dir, 'c.crt') } }), 'test'),
    );
    expect(problems.map((p) => p.path).sort()).toEqual(['introspection.ca', 'tls.cert', 'tls.clientCa']);
  });

  it('never puts the client secret into a problem', () => {
    try {
      loadConfigObject(minimal({ upstream: 'nope', introspection: { url: SECRET }, tls: { key: files.clientKey } }), 'test');
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as Error).message).not.toContain(SECRET.slice(0, 12));
    }
  });

  it('puts every problem in the error message', () => {
    try {
      loadConfigObject(minimal({ upstream: 'nope', binding: 'maybe' }), 'my.yaml');
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as Error).message).toContain('my.yaml');
      expect((err as Error).message).toContain('upstream: ');
      expect((err as Error).message).toContain('binding: ');
    }
  });
});

describe('loadConfigFile', () => {
  function yamlOf(object: Record<string, unknown>): string {
    return stringify(object);
  }

  it('loads a file with environment references', async () => {
    const text = [
      // Block style: `{` and `}` are flow indicators, so a reference cannot sit unquoted in a flow mapping.
      'listen:',
      '  port: ${PORT:-8443}',
      `tls: { cert: ${files.serverCert}, key: ${files.serverKey} }`,
      'introspection:',
      '  url: ${AS_URL}',
      '  clientId: cnfguard',
      '  clientSecret: ${INTROSPECTION_SECRET}',
      'upstream: http://127.0.0.1:${UPSTREAM_PORT:-8080}',
      '',
    ].join('\n');
    const file = await writeConfig('env.yaml', text);
    const config = loadConfigFile(file, { AS_URL: 'https://as.example/introspect', INTROSPECTION_SECRET: SECRET });
    expect(config.source).toBe(file);
    expect(config.settings.listen.port).toBe(8443);
    expect(config.settings.introspection.url).toBe('https://as.example/introspect');
    expect(config.settings.upstream).toBe('http://127.0.0.1:8080');
    expect(config.introspection.clientSecret).toBe(SECRET);
  });

  it('reports a missing environment variable at its YAML path, together with schema problems', async () => {
    const file = await writeConfig('missing-env.yaml', yamlOf(minimal({ introspection: { clientSecret: '${INTROSPECTION_SECRET}' }, binding: 'maybe' })));
    const problems = problemsOf(() => loadConfigFile(file, {}));
    const paths = problems.map((p) => p.path);
    expect(paths).toContain('introspection.clientSecret');
    expect(paths).toContain('binding');
    expect(problems.find((p) => p.path === 'introspection.clientSecret')?.message).toContain('INTROSPECTION_SECRET');
  });

  it('names an unreadable config file', () => {
    const missing = join(dir, 'nope.yaml');
    const problems = problemsOf(() => loadConfigFile(missing, {}));
    expect(problems).toHaveLength(1);
    expect(problems[0]?.message).toContain(missing);
  });

  it('refuses a duplicate key in the file', async () => {
    const file = await writeConfig('dup.yaml', `${yamlOf(minimal())}upstream: http://127.0.0.1:9999\n`);
    const problems = problemsOf(() => loadConfigFile(file, {}));
    expect(problems).toEqual([{ path: 'upstream', message: expect.stringMatching(/^duplicate key \(line \d+\)$/) as string }]);
  });

  // An environment value is text. A string setting must get that text, whatever it looks like; the
  // user cannot quote it, since `"${VAR}"` is interpolated after YAML parsing.
  it.each([
    ['a numeric client id', 'clientId: ${CLIENT_ID}', { CLIENT_ID: '12345' }, (c: LoadedConfig) => c.settings.introspection.clientId, '12345'],
    ['a numeric client id, quoted in YAML', 'clientId: "${CLIENT_ID}"', { CLIENT_ID: '12345' }, (c: LoadedConfig) => c.settings.introspection.clientId, '12345'],
    ['a secret that reads as YAML null', 'clientSecret: ${S}', { S: 'null' }, (c: LoadedConfig) => c.introspection.clientSecret, 'null'],
    ['a secret that reads as a YAML boolean', 'clientSecret: ${S}', { S: 'true' }, (c: LoadedConfig) => c.introspection.clientSecret, 'true'],
    ['a secret that reads as a YAML number', 'clientSecret: ${S}', { S: '0123' }, (c: LoadedConfig) => c.introspection.clientSecret, '0123'],
  ])('keeps %s from the environment as a string', async (_name, line, env, read, expected) => {
    const lines = [
      `tls: { cert: ${files.serverCert}, key: ${files.serverKey} }`,
      'introspection:',
      '  url: https://as.example/introspect',
      line.startsWith('clientId') ? '  clientSecret: s' : '  clientId: cnfguard',
      `  ${line}`,
      'upstream: http://127.0.0.1:8080',
      '',
    ];
    const file = await writeConfig('string-env.yaml', lines.join('\n'));
    expect(read(loadConfigFile(file, env))).toBe(expected);
  });
});

describe('effectiveConfigYaml', () => {
  it('masks the client secret and never contains it', () => {
    const config = loadConfigObject(minimal(), 'test');
    const yaml = effectiveConfigYaml(config);
    expect(yaml).not.toContain(SECRET);
    const parsed = parseYaml(yaml) as { introspection: { clientSecret: string; clientId: string }; listen: { port: number } };
    expect(parsed.introspection.clientSecret).toMatch(/^\*+$/);
    expect(parsed.introspection.clientId).toBe('cnfguard');
    expect(parsed.listen.port).toBe(8443);
    // The loaded config itself is untouched.
    expect(config.introspection.clientSecret).toBe(SECRET);
    expect(config.settings.introspection.clientSecret).toBe(SECRET);
  });

  it('does not contain a secret that came from the environment', async () => {
    const file = await writeConfig('effective.yaml', stringify(minimal({ introspection: { clientSecret: '${INTROSPECTION_SECRET}' } })));
    const yaml = effectiveConfigYaml(loadConfigFile(file, { INTROSPECTION_SECRET: 'from-the-env-0001' }));
    expect(yaml).not.toContain('from-the-env-0001');
  });

  it('does not contain a secret read from clientSecretFile, nor any PEM', () => {
    const config = loadConfigObject(minimal({ introspection: { clientSecret: undefined, clientSecretFile: files.secret } }), 'test');
    const yaml = effectiveConfigYaml(config);
    expect(yaml).not.toContain('file-secret\n');
    expect(yaml).not.toMatch(/file-secret$/m);
    expect(yaml).not.toContain('BEGIN');
    expect(yaml).toContain(files.secret);
  });
});
