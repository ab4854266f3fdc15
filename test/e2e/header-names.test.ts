/**
 * The names of the headers cnfguard sets on the upstream request (`headers.*`, `claimHeaders`,
 * `routes[]`'s, `assertion.header`), judged by `cnfguard check` as a user runs it: a name that is
 * the request's framing, a credential, one cnfguard sets itself, has an underscore, is a front's
 * certificate header, or names another managed header of the same route is refused with its path,
 * exit 2. At run time such a name broke every request (content-length: 502), sent the JWT as the
 * Host, or overwrote the subject header.
 */
import { spawn } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RESERVED_HEADER_NAMES } from '../../src/config/header-names-schema.ts';
import { FORWARDING_HEADERS, HOP_BY_HOP } from '../../src/pipeline/upstream-headers.ts';
import { PROOF_HEADERS } from '../../src/proof/registry.ts';
import { createPki, type Pki } from '../fixtures/stack.ts';

const BIN = join(import.meta.dirname, '..', '..', 'bin', 'cnfguard.js');

let pki: Pki;
let keyFile: string;
let serial = 0;

beforeAll(async () => {
  pki = await createPki();
  keyFile = join(pki.dir, 'assertion.key');
  await writeFile(keyFile, generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, { mode: 0o600 });
});
afterAll(async () => {
  await pki?.cleanup();
});

async function check(extra: Record<string, unknown>): Promise<{ code: number | null; out: string }> {
  const file = join(pki.dir, `headers-${serial++}.yaml`);
  const config = {
    listen: { host: '127.0.0.1', port: 0 },
    tls: { cert: pki.files.server.cert, key: pki.files.server.key },
    introspection: { url: 'https://127.0.0.1:9/introspect', clientId: 'rs', clientSecret: 'rs-secret' },
    upstream: 'http://127.0.0.1:8080',
    ...extra,
  };
  await writeFile(file, stringify(config));
  const child = spawn(process.execPath, [BIN, 'check', '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr.on('data', (c: Buffer) => (out += c.toString()));
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  return { code, out };
}

const assertion = (header: string) => ({ assertion: { header, keyFile, issuer: 'https://cnfguard.test' } });

describe('cnfguard check refuses managed header names that break requests or overwrite a header', () => {
  it.each([
    ['host', /assertion\.header: host is a framing or connection header/],
    ['content-length', /assertion\.header: content-length is a framing or connection header/],
    ['authorization', /assertion\.header: authorization is a credential of the client's request/],
    ['dpop', /assertion\.header: dpop is a credential/],
    ['x-auth-subject', /assertion\.header: x-auth-subject is also headers\.subject/],
  ])('assertion.header: %s', async (name, problem) => {
    const r = await check(assertion(name));
    expect(r.code, r.out).toBe(2);
    expect(r.out).toMatch(problem);
  });

  it('identity and claim header names, at the top level and in routes: every problem with its path', async () => {
    const r = await check({
      headers: { subject: 'Cookie', scope: 'x_scope', clientId: 'x-request-id', certThumbprint: 'x-client-cert' },
      claimHeaders: { 'Signature-Input': 'claims.a', 'X-Tenant': 'claims.t', 'x-tenant': 'claims.u', 'x-auth-client-id': 'claims.c', 'Transfer-Encoding': 'claims.te' },
      trustedProxies: [{ cidrs: ['127.0.0.1/32'], header: 'x-client-cert', format: 'pem-urlencoded' }],
      routes: [
        { pathPrefix: '/a', headers: { dpopThumbprint: 'traceparent', binding: 'x-tenant' } },
        { pathPrefix: '/b', claimHeaders: { 'x-auth-scope': 'claims.s' }, headers: { scope: 'x-b-scope' } },
      ],
    });
    expect(r.code, r.out).toBe(2);
    for (const problem of [
      'headers.subject: cookie is a credential',
      'headers.clientId: x-request-id is a header cnfguard sets itself',
      'headers.certThumbprint: x-client-cert is trustedProxies[0].header',
      'claimHeaders.Signature-Input: signature-input is a credential',
      'claimHeaders.Transfer-Encoding: transfer-encoding is a framing or connection header',
      'claimHeaders.x-tenant: x-tenant is also claimHeaders.X-Tenant',
      'routes[0].headers.dpopThumbprint: traceparent is a header cnfguard sets itself',
      'routes[0].headers.binding: x-tenant is also claimHeaders.X-Tenant',
    ]) {
      expect(r.out).toContain(problem);
    }
    // The top level's clientId is x-request-id here: the claim header x-auth-client-id clashes with nothing.
    expect(r.out).not.toContain('claimHeaders.x-auth-client-id');
    // routes[1] renames its scope header, so its own claim header x-auth-scope is free there.
    expect(r.out).not.toContain('routes[1]');
  });

  it('an underscore in a managed name is a warning, not an error: the config runs, and client copies of either spelling are removed', async () => {
    const r = await check({ claimHeaders: { x_tenant: 'claims.t' } });
    expect(r.code, r.out).toBe(0);
    expect(r.out).toContain('claimHeaders.x_tenant: x_tenant has an underscore');
  });

  it('a claim header with the default name of an identity header is reported at the claim header', async () => {
    const r = await check({ claimHeaders: { 'x-auth-client-id': 'claims.c' } });
    expect(r.code, r.out).toBe(2);
    expect(r.out).toContain('claimHeaders.x-auth-client-id: x-auth-client-id is also headers.clientId');
  });

  it('accepts renamed headers that clash with nothing, and a front\'s certificate header as clientCert (Envoy: XFCC replaced)', async () => {
    const r = await check({
      ...assertion('x-cnfguard-assertion'),
      headers: { subject: 'X-User', clientCert: 'x-forwarded-client-cert' },
      claimHeaders: { 'x-tenant': 'claims.tenant' },
      trustedProxies: [{ cidrs: ['127.0.0.1/32'], header: 'x-forwarded-client-cert', format: 'xfcc' }],
      routes: [{ pathPrefix: '/a', claimHeaders: { 'x-auth-subject': 'claims.sub' }, headers: { subject: 'x-a-user' } }],
    });
    expect(r.out).not.toMatch(/invalid config/);
    expect(r.code, r.out).toBe(0);
  });

  it('the reserved names cover every hop-by-hop, proof and forwarding header the edges know', () => {
    for (const name of [...HOP_BY_HOP, ...PROOF_HEADERS, ...FORWARDING_HEADERS, 'host', 'content-length', 'authorization', 'cookie', 'content-digest']) {
      expect(RESERVED_HEADER_NAMES.has(name), name).toBe(true);
    }
  });
});
