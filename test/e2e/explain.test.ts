/**
 * `cnfguard explain` (issue 28) as a user runs it: a real process, a real authorization server
 * (oidc-provider) introspected live, certificate-bound and DPoP-bound tokens it issued, and the exit
 * codes 0 allowed, 1 refused, 2 could not evaluate. The token never appears in any output.
 */
import { spawn } from 'node:child_process';
import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { generateKeyPair, generateProof, type KeyPair } from 'dpop';
import { calculateJwkThumbprint, type JWK } from 'jose';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { thumbprintS256 } from '../../src/tls/certificates.ts';
import { startIntrospectionStub, type IntrospectionStub } from '../fixtures/introspection-stub.ts';
import { freePort } from '../fixtures/processes.ts';
import { baseConfig, startDeployment, type Deployment } from '../fixtures/stack.ts';

const BIN = join(import.meta.dirname, '..', '..', 'bin', 'cnfguard.js');

interface Finished {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Every output of every run, to check that no token ever appears in any. */
const outputs: string[] = [];
const tokens: string[] = [];

function explain(args: string[]): Promise<Finished> {
  const child = spawn(process.execPath, [BIN, 'explain', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  return new Promise((resolve) =>
    child.on('close', (code) => {
      outputs.push(stdout, stderr);
      resolve({ code, stdout, stderr });
    }),
  );
}

let d: Deployment;
let config: string;
let unreachable: string;
let mtlsToken: string;
let tokenFile: string;
let key: KeyPair;
let dpopToken: string;
const DPOP_URL = 'https://localhost:8443/dpop/orders?id=1';

beforeAll(async () => {
  d = await startDeployment();
  config = join(d.pki.dir, 'explain.yaml');
  await writeFile(config, stringify(baseConfig(d.pki, d.as, d.upstream, { routes: [{ pathPrefix: '/dpop', methods: ['dpop'] }] })));
  unreachable = join(d.pki.dir, 'explain-unreachable.yaml');
  const port = await freePort();
  const base = baseConfig(d.pki, d.as, d.upstream);
  await writeFile(unreachable, stringify({ ...base, introspection: { ...(base.introspection as object), url: `https://127.0.0.1:${port}/introspect`, timeoutMs: 500 } }));
  mtlsToken = await d.tokenFor('client1');
  tokenFile = join(d.pki.dir, 'token');
  await writeFile(tokenFile, `${mtlsToken}\n`);
  key = await generateKeyPair('ES256');
  dpopToken = await d.as.issueToken({ clientId: 'plain-app', caCert: d.pki.certs.ca.cert, dpopProof: (htu, htm) => generateProof(key, htu, htm) });
  tokens.push(mtlsToken, dpopToken);
}, 60_000);

afterAll(async () => {
  await d?.stop();
});

describe('cnfguard explain', () => {
  it('an mTLS-bound token with its certificate: allowed, exit 0, the thumbprints match', async () => {
    const run = await explain(['-c', config, '--token-file', tokenFile, '--cert', d.pki.files.client1.cert, '--url', 'https://localhost:8443/orders']);
    expect(run.stderr).toBe('');
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/ok +validation +source=introspection active=true/);
    expect(run.stdout).toMatch(/x5t#S256 +MATCH \(mtls\)/);
    expect(run.stdout).toContain(`presented ${thumbprintS256(new X509Certificate(d.pki.certs.clients.client1.cert).raw)}`);
    expect(run.stdout).toMatch(/decision +allow \(bound\)/);
    expect(run.stdout).toMatch(/forwarded to http:\/\/127\.0\.0\.1:\d+\//);
  });

  it('with another certificate: refused, exit 1, both thumbprints and the 401 a client gets', async () => {
    const run = await explain(['-c', config, '--token', mtlsToken, '--cert', d.pki.files.client2.cert]);
    expect(run.code, run.stderr).toBe(1);
    const json = await explain(['-c', config, '--token', mtlsToken, '--cert', d.pki.files.client2.cert, '--json']);
    const report = JSON.parse(json.stdout) as Record<string, unknown> & { cnf: { member: string; bound: string; presented: string; result: string }[] };
    const [x5t] = report.cnf;
    expect(x5t).toMatchObject({ member: 'x5t#S256', result: 'mismatch' });
    expect(x5t?.bound).not.toBe(x5t?.presented);
    // Both thumbprints in the text output too.
    expect(run.stdout).toContain(x5t?.bound);
    expect(run.stdout).toContain(x5t?.presented);
    expect(run.stdout).toMatch(/x5t#S256 +MISMATCH/);
    expect(run.stdout).toMatch(/REFUSED decision +reason=certificate_mismatch/);
    expect(run.stdout).toContain('answer    401');
    expect(run.stdout).toMatch(/www-authenticate: Bearer realm="[^"]*", error="invalid_token"/);
  });

  it('--json: the report as one object (steps, route, cnf, answer, exit)', async () => {
    const run = await explain(['-c', config, '--token', mtlsToken, '--cert', d.pki.files.client2.cert, '--json']);
    const report = JSON.parse(run.stdout) as Record<string, unknown>;
    expect(Object.keys(report).sort()).toEqual(['answer', 'cnf', 'decision', 'exit', 'reason', 'request', 'route', 'steps', 'token']);
    expect(report).toMatchObject({ decision: 'deny', reason: 'certificate_mismatch', exit: 1, route: expect.any(String), request: { method: 'GET', scheme: 'bearer' } });
    expect(report.token).toEqual({ sha256Prefix: expect.stringMatching(/^[A-Za-z0-9_-]{12}$/) });
    const steps = report.steps as { step: string; outcome: string }[];
    expect(steps.map((s) => s.step)).toEqual(['shape', 'route', 'certificate', 'token', 'validation', 'decision']);
    expect(steps.at(-1)).toMatchObject({ outcome: 'refused' });
    expect(report.answer).toMatchObject({ status: 401, headers: { 'www-authenticate': expect.stringContaining('error="invalid_token"'), 'cache-control': 'no-store' }, body: expect.stringContaining('invalid_token') });
  });

  it('a DPoP-bound token with a proof: allowed, exit 0, proof jkt against cnf.jkt', async () => {
    const proof = await generateProof(key, DPOP_URL.split('?')[0] as string, 'POST', undefined, dpopToken);
    const run = await explain(['-c', config, '--token', dpopToken, '--dpop', proof, '--method', 'post', '--url', DPOP_URL, '--json']);
    expect(run.code, run.stderr).toBe(0);
    const report = JSON.parse(run.stdout) as { cnf: { member: string; result: string; bound: string; presented: string }[]; steps: { step: string; facts: Record<string, unknown> }[] };
    expect(report.cnf).toEqual([expect.objectContaining({ member: 'jkt', method: 'dpop', result: 'match' })]);
    expect(report.steps.find((s) => s.step === 'proof')?.facts).toMatchObject({ method: 'dpop', jkt: report.cnf[0]?.bound });
  });

  it('the DPoP-bound token without a proof: refused, exit 1', async () => {
    const run = await explain(['-c', config, '--token', dpopToken, '--method', 'POST', '--url', DPOP_URL]);
    expect(run.code, run.stderr).toBe(1);
    expect(run.stdout).toMatch(/decision +deny/);
    expect(run.stdout).toContain('answer    401');
  });

  it('an unreachable AS: could not evaluate, exit 2, the 503 a client would get', async () => {
    const run = await explain(['-c', unreachable, '--token', mtlsToken, '--cert', d.pki.files.client1.cert]);
    expect(run.code, run.stderr).toBe(2);
    expect(run.stdout).toMatch(/REFUSED validation +reason=introspection_unavailable/);
    expect(run.stdout).toContain('answer    503');
  });

  it('bad usage: exit 2 with the usage', async () => {
    const run = await explain(['-c', config]);
    expect(run.code, run.stderr).toBe(2);
    expect(run.stderr).toContain('exactly one of --token and --token-file');
  });

  it('never prints a token, in any output of any run above', () => {
    expect(outputs.length).toBeGreaterThanOrEqual(14);
    for (const output of outputs) for (const token of tokens) expect(output.includes(token)).toBe(false);
  });
});

/** A compact JWS or JWE: what an upstream could take as a credential. No output may hold one. */
const COMPACT_JOSE = /[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}/;

describe('cnfguard explain with assertion and stepUp (an AS whose answers the test writes)', () => {
  let stub: IntrospectionStub;
  let trustConfig: string;
  const assertionKey = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  let assertionKid: string;
  /** A JWT the AS put in a claim (an id_token, say) that a claim header forwards. */
  const claimJwt = `${Buffer.from(JSON.stringify({ alg: 'ES256', typ: 'JWT' })).toString('base64url')}.${Buffer.from(JSON.stringify({ sub: 'alice', iss: 'https://as.test' })).toString('base64url')}.${'s'.repeat(86)}`;
  const bound = 'explain-trust-bound-token-0123456789';
  const weak = 'explain-trust-weak-token-0123456789';

  beforeAll(async () => {
    stub = await startIntrospectionStub(d.pki.certs.server);
    assertionKid = await calculateJwkThumbprint(assertionKey.publicKey.export({ format: 'jwk' }) as JWK, 'sha256');
    const x5t = thumbprintS256(new X509Certificate(d.pki.certs.clients.client1.cert).raw);
    const exp = Math.floor(Date.now() / 1000) + 3600;
    const base = { active: true, sub: 'alice', client_id: 'app', scope: 'read', exp, cnf: { 'x5t#S256': x5t }, id_token: claimJwt };
    stub.answers.set(bound, { ...base, acr: 'urn:example:mfa', auth_time: exp - 3700 });
    stub.answers.set(weak, { ...base, acr: 'urn:example:pwd', auth_time: exp - 3650 });
    const keyFile = join(d.pki.dir, 'explain-assertion.key');
    await writeFile(keyFile, assertionKey.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, { mode: 0o600 });
    trustConfig = join(d.pki.dir, 'explain-trust.yaml');
    const config = baseConfig(d.pki, d.as, d.upstream, {
      claimHeaders: { 'x-id-token': 'claims.id_token' },
      assertion: { keyFile, issuer: 'https://cnfguard.test' },
      routes: [{ pathPrefix: '/billing', stepUp: { acrValues: ['urn:example:mfa'], maxAgeSeconds: 600 } }],
    });
    await writeFile(trustConfig, stringify({ ...config, introspection: { ...(config.introspection as object), url: stub.url } }));
  }, 60_000);

  afterAll(async () => {
    await stub?.stop();
  });

  it('shows the assertion without its signature: a placeholder, its header and claims, in text and --json', async () => {
    const args = ['-c', trustConfig, '--token', bound, '--cert', d.pki.files.client1.cert, '--url', 'https://localhost:8443/billing'];
    const text = await explain(args);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toMatch(new RegExp(`upstream gets x-auth-assertion: <signed JWT, signature withheld: alg=ES256 kid=${assertionKid} exp=\\d{4}-`));
    expect(text.stdout).toMatch(/^ {4}claims \{"iss":"https:\/\/cnfguard\.test"/m);
    const json = await explain([...args, '--json']);
    expect(json.code, json.stderr).toBe(0);
    const { answer } = JSON.parse(json.stdout) as { answer: { identityHeaders: Record<string, string>; signedHeaders: Record<string, { header: Record<string, unknown>; claims: Record<string, unknown> }> } };
    expect(answer.identityHeaders['x-auth-assertion']).toMatch(/^<signed JWT, signature withheld: /);
    expect(answer.signedHeaders['x-auth-assertion']).toEqual({
      header: { alg: 'ES256', kid: assertionKid, typ: 'JWT' },
      claims: expect.objectContaining({ iss: 'https://cnfguard.test', sub: 'alice', client_id: 'app', cnf_method: 'mtls', exp: expect.any(Number) }),
    });
    // A JWT a claim header carries is a credential too: withheld alike.
    expect(answer.identityHeaders['x-id-token']).toMatch(/^<signed JWT, signature withheld: alg=ES256>$/);
    expect(answer.signedHeaders['x-id-token']?.claims).toEqual({ sub: 'alice', iss: 'https://as.test' });
    expect(answer.identityHeaders['x-auth-subject']).toBe('alice');
    for (const output of [text.stdout, text.stderr, json.stdout, json.stderr]) {
      expect(output).not.toMatch(COMPACT_JOSE);
      expect(output).not.toContain(bound);
    }
  });

  it('step_up_required: the validation step shows the acr and auth_time the token has, the decision what the route requires', async () => {
    const run = await explain(['-c', trustConfig, '--token', weak, '--cert', d.pki.files.client1.cert, '--url', 'https://localhost:8443/billing', '--json']);
    expect(run.code, run.stderr).toBe(1);
    const report = JSON.parse(run.stdout) as { reason: string; steps: { step: string; facts: Record<string, unknown> }[] };
    expect(report.reason).toBe('step_up_required');
    const answered = stub.answers.get(weak) as { auth_time: number };
    expect(report.steps.find((s) => s.step === 'validation')?.facts).toMatchObject({ acr: 'urn:example:pwd', authTime: answered.auth_time });
    expect(report.steps.find((s) => s.step === 'decision')?.facts).toMatchObject({ reason: 'step_up_required', acrValues: 'urn:example:mfa', maxAge: 600 });
    const text = await explain(['-c', trustConfig, '--token', weak, '--cert', d.pki.files.client1.cert, '--url', 'https://localhost:8443/billing']);
    expect(text.stdout).toMatch(/ok +validation .* acr=urn:example:pwd authTime=\d+/);
    expect(text.stdout).not.toContain(weak);
  });
});
