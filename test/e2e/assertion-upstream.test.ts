/**
 * A signed identity for the upstream, checked by an upstream in another language: a Python server
 * (Debian's python3-jwt, test/fixtures/python/assertion_upstream.py) believes a request only when
 * its x-auth-assertion verifies with the JWKS cnfguard publishes. Across a key rotation (the key
 * file rewritten, then the reload SIGHUP runs): new assertions are signed by the new key, an
 * assertion signed before still verifies while the old key stays published (one lifetime, on the
 * injected clock), and no longer after.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAuthorizationServer, type AuthorizationServer } from '../../demo/authorization-server.ts';
import { manualClock } from '../fixtures/clock.ts';
import { freePort } from '../fixtures/processes.ts';
import { createPki, curl, startGuard, type Guard, type Pki } from '../fixtures/stack.ts';

const PYTHON = '/usr/bin/python3';
const AUDIENCE = 'https://legacy.internal';
const ISSUER = 'https://cnfguard.test';
const pythonReady = existsSync(PYTHON);

const newKey = () => generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;

async function startPythonUpstream(jwksUrl: string): Promise<{ url: string; child: ChildProcess }> {
  const child = spawn(PYTHON, [join(import.meta.dirname, '..', 'fixtures', 'python', 'assertion_upstream.py')], {
    env: { PATH: '/usr/bin:/bin', JWKS_URL: jwksUrl, AUDIENCE, ISSUER, LEEWAY: '300' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const port = await new Promise<string>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`python upstream exited (${code})`)));
    child.stdout?.once('data', (chunk: Buffer) => resolve(chunk.toString().trim().split('\n')[0] as string));
  });
  return { url: `http://127.0.0.1:${port}`, child };
}

describe.skipIf(!pythonReady)('a Python upstream verifies the assertion with the published JWKS, across a key rotation', () => {
  const clock = manualClock({ followRealTime: true });
  let pki: Pki;
  let as: AuthorizationServer;
  let python: { url: string; child: ChildProcess };
  let guard: Guard;
  let keyFile: string;

  beforeAll(async () => {
    pki = await createPki();
    as = await startAuthorizationServer({ tls: pki.certs.server });
    const adminPort = await freePort();
    python = await startPythonUpstream(`http://127.0.0.1:${adminPort}/jwks.json`);
    keyFile = join(pki.dir, 'assertion.key');
    await writeFile(keyFile, newKey(), { mode: 0o600 });
    guard = await startGuard(
      pki,
      {
        listen: { host: '127.0.0.1', port: 0 },
        tls: { cert: pki.files.server.cert, key: pki.files.server.key },
        introspection: { url: as.introspectionUrl, clientId: 'rs', clientSecret: 'rs-secret', ca: pki.files.ca, timeoutMs: 3000 },
        upstream: python.url,
        admin: { host: '127.0.0.1', port: adminPort },
        assertion: { keyFile, issuer: ISSUER, audience: AUDIENCE, lifetimeSeconds: 60 },
      },
      { now: clock.now },
    );
  }, 60_000);

  afterAll(async () => {
    await guard?.stop();
    python?.child.kill();
    await as?.stop();
    await pki?.cleanup();
  });

  const call = async (headers: string[] = []) => {
    const token = await as.issueToken({ clientCert: pki.certs.clients.client1, caCert: pki.certs.ca.cert });
    const answer = await curl(pki, `${guard.started.url}/who`, { token, cert: pki.files.client1, headers });
    return { status: answer.status, body: JSON.parse(answer.body) as { kid?: string; claims?: Record<string, unknown>; jwt?: string; error?: string } };
  };
  const verifyLate = async (jwt: string) => {
    const answer = await fetch(`${python.url}/verify`, { method: 'POST', body: jwt });
    return (await answer.json()) as { kid?: string; error?: string };
  };
  const kids = async () => ((await (await fetch(`${guard.started.adminUrl}/jwks.json`)).json()) as { keys: { kid: string }[] }).keys.map((k) => k.kid);

  it('verifies: who was let in, by which proof; a forged header from the client never arrives', async () => {
    const forged = 'eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.';
    const { status, body } = await call([`x-auth-assertion: ${forged}`]);
    expect(status, JSON.stringify(body)).toBe(200);
    expect(body.claims).toMatchObject({ iss: ISSUER, aud: AUDIENCE, client_id: 'app', scope: 'read write', cnf_method: 'mtls' });
    expect(Object.keys(body.claims?.cnf as object)).toEqual(['x5t#S256']);
    expect(body.kid).toBe((await kids())[0]);
    // Reaching the upstream directly with a made-up assertion gets nowhere.
    expect((await verifyLate(forged)).error).toBeDefined();
  });

  it('after a key change (SIGHUP): new assertions by the new key; the old one verifies during the overlap, not after', async () => {
    // An assertion signed by the old key, as the upstream received it (kept to be checked again late).
    const before = await call();
    const [oldKid] = await kids();
    expect(before.body.kid).toBe(oldKid);
    const old = before.body.jwt as string;

    await writeFile(keyFile, newKey(), { mode: 0o600 });
    const report = await guard.app.reload();
    expect(report.config).toBe('applied');
    const published = await kids();
    expect(published).toHaveLength(2);
    expect(published[1]).toBe(oldKid);

    const after = await call();
    expect(after.status, JSON.stringify(after.body)).toBe(200);
    expect(after.body.kid).toBe(published[0]);
    expect(after.body.kid).not.toBe(oldKid);

    // The old key's assertion, checked late: still good during the overlap…
    expect((await verifyLate(old)).kid).toBe(oldKid);
    // …and refused once one lifetime has passed (the key is no longer published).
    clock.advance(60_000);
    expect(await kids()).toEqual([published[0]]);
    expect((await verifyLate(old)).error).toMatch(/PyJWKClientError|signing key/i);
  });
});
