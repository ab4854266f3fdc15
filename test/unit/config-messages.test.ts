/**
 * Config errors in a user's words, one message per problem: each row is a config file as a user
 * writes it (YAML, `${VAR}`s, an environment) and the exact problems `check` reports.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfigFile, type ConfigProblem } from '../../src/config/load.ts';
import { didYouMean } from '../../src/config/did-you-mean.ts';
import { generateDevCertificates } from '../../src/tls/dev-certs.ts';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cnfguard-messages-'));
  const certs = generateDevCertificates();
  await writeFile(join(dir, 'tls.crt'), certs.server.cert);
  await writeFile(join(dir, 'tls.key'), certs.server.key);
  await writeFile(join(dir, 'ca.crt'), certs.ca.cert);
  await writeFile(join(dir, 'client1.crt'), certs.clients.client1.cert);
  await writeFile(join(dir, 'bundle.crt'), certs.ca.cert + certs.clients.client1.cert);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const TLS = 'tls: { cert: tls.crt, key: tls.key }';
const INTROSPECTION = 'introspection: { url: https://as.example/introspect, clientId: rs, clientSecret: s }';
const UPSTREAM = 'upstream: http://127.0.0.1:8080';
const valid = (...lines: string[]) => [TLS, INTROSPECTION, UPSTREAM, ...lines].join('\n');

function problems(text: string, env: Record<string, string> = {}): ConfigProblem[] {
  const file = join(dir, `c-${Math.random().toString(36).slice(2)}.yaml`);
  return (async () => {
    await writeFile(file, text);
    try {
      loadConfigFile(file, env);
    } catch (err) {
      if (err instanceof ConfigError) return [...err.problems];
      throw err;
    }
    return [];
  })() as unknown as ConfigProblem[];
}

describe('config errors in plain words', () => {
  it.each<[string, string, Record<string, string>, ConfigProblem[]]>([
    ['a misspelt key gets "did you mean"', 'tls: { cert: tls.crt, key: tls.key, clientCA: ca.crt }\n' + [INTROSPECTION, UPSTREAM].join('\n'), {}, [{ path: 'tls', message: 'unknown key "clientCA" (did you mean "clientCa"?)' }]],
    ['a misspelt top-level key', valid('bindng: required'), {}, [{ path: '', message: 'unknown key "bindng" (did you mean "binding"?)' }]],
    ['a misspelt required key is one problem, not also "missing"', 'tls: { cert: tls.crt, kye: tls.key }\n' + [INTROSPECTION, UPSTREAM].join('\n'), {}, [{ path: 'tls', message: 'unknown key "kye" (did you mean "key"?)' }]],
    ['an unknown key far from any lists the keys', valid('listen: { bogus: 1 }'), {}, [{ path: 'listen', message: 'unknown key "bogus"; the keys here are host, port, http2' }]],
    ['workers: lots', valid('workers: lots'), {}, [{ path: 'workers', message: 'expected auto or integer 1–64, got "lots"' }]],
    ['a port out of range', valid('listen: { port: 99999 }'), {}, [{ path: 'listen.port', message: '99999 is out of range: expected integer 0–65535' }]],
    ['a port that is not a number', valid('admin: { port: nine }'), {}, [{ path: 'admin.port', message: 'expected integer 0–65535, got "nine"' }]],
    ['a URL whose port is out of range', [TLS, INTROSPECTION, 'upstream: http://127.0.0.1:99999'].join('\n'), {}, [{ path: 'upstream', message: 'port 99999 is out of range (0–65535)' }]],
    ['a missing tls block names it', [INTROSPECTION, UPSTREAM].join('\n'), {}, [{ path: 'tls', message: "missing: this section is required (the listener's certificate, the CA client certificates are checked against, and protocol limits.)" }]],
    ['a missing upstream names it', [TLS, INTROSPECTION].join('\n'), {}, [{ path: 'upstream', message: 'missing: this key is required (the service requests are forwarded to (http:// or https:// URL).)' }]],
    [
      'an unset ${VAR} is named once (not again as an empty value)',
      [TLS, 'introspection: { url: https://as.example/introspect, clientId: rs, clientSecret: "${INTROSPECTION_SECRET}" }', UPSTREAM].join('\n'),
      {},
      [{ path: 'introspection.clientSecret', message: 'environment variable INTROSPECTION_SECRET is not set (use ${INTROSPECTION_SECRET:-default} for a default)' }],
    ],
    [
      'an empty ${VAR} feeding a required secret is named',
      [TLS, 'introspection: { url: https://as.example/introspect, clientId: rs, clientSecret: "${INTROSPECTION_SECRET}" }', UPSTREAM].join('\n'),
      { INTROSPECTION_SECRET: '' },
      [{ path: 'introspection.clientSecret', message: 'INTROSPECTION_SECRET is set but empty, and this value cannot be empty (too small: expected string to have >=1 characters)' }],
    ],
    ['an empty ${VAR} feeding a URL is named', [TLS, INTROSPECTION, 'upstream: "${UPSTREAM_URL}"'].join('\n'), { UPSTREAM_URL: '' }, [{ path: 'upstream', message: 'UPSTREAM_URL is set but empty, and this value cannot be empty (an http:// or https:// URL)' }]],
    ['an unset ${VAR} for a port is one problem', valid('listen: { port: "${PORT}" }'), {}, [{ path: 'listen.port', message: 'environment variable PORT is not set (use ${PORT:-default} for a default)' }]],
    [
      'a leaf certificate as tls.clientCa',
      'tls: { cert: tls.crt, key: tls.key, clientCa: client1.crt }\n' + [INTROSPECTION, UPSTREAM].join('\n'),
      {},
      [{ path: 'tls.clientCa', message: expect.stringMatching(/client1\.crt" holds a certificate without CA rights \(CN=client1.*basicConstraints CA:FALSE or absent\), so no client certificate can chain to it/) as unknown as string }],
    ],
    ['a CA bundle with a leaf in it', 'tls: { cert: tls.crt, key: tls.key, clientCa: bundle.crt }\n' + [INTROSPECTION, UPSTREAM].join('\n'), {}, [{ path: 'tls.clientCa', message: expect.stringContaining('without CA rights') as unknown as string }]],
    ['a cipher list OpenSSL does not know', valid('tls: { cert: tls.crt, key: tls.key, ciphers: NOT-A-CIPHER }').replace(`${TLS}\n`, ''), {}, [{ path: 'tls.ciphers', message: expect.stringContaining('no cipher OpenSSL knows in "NOT-A-CIPHER"') as unknown as string }]],
    ['a misspelt binding mode', valid('binding: requried'), {}, [{ path: 'binding', message: 'expected required or optional or report-only or off, got "requried" (did you mean "required"?)' }]],
    ['an unknown minVersion', valid('tls: { cert: tls.crt, key: tls.key, minVersion: TLSv1.1 }').replace(`${TLS}\n`, ''), {}, [{ path: 'tls.minVersion', message: 'expected TLSv1.2 or TLSv1.3, got "TLSv1.1" (did you mean "TLSv1.2"?)' }]],
  ])('%s', async (_name, text, env, expected) => {
    expect(await problems(text, env)).toEqual(expected);
  });

  it('a CA certificate as tls.clientCa, minVersion and ciphers are accepted', async () => {
    expect(await problems('tls: { cert: tls.crt, key: tls.key, clientCa: ca.crt, minVersion: TLSv1.3, ciphers: "ECDHE-RSA-AES128-GCM-SHA256" }\n' + [INTROSPECTION, UPSTREAM].join('\n'))).toEqual([]);
  });
});

describe('didYouMean', () => {
  it.each([
    ['clientCA', ['clientCa', 'cert', 'key'], 'clientCa'],
    ['chek', ['run', 'check', 'init'], 'check'],
    ['uptream', ['upstream', 'binding'], 'upstream'],
    ['x', ['run', 'check'], undefined],
    ['frobnicate', ['run', 'check', 'init'], undefined],
  ])('%s among %j: %s', (name, known, meant) => {
    expect(didYouMean(name, known)).toBe(meant);
  });
});
