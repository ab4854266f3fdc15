/**
 * DPoP (RFC 9449) end to end: oidc-provider issues DPoP-bound tokens, panva's `dpop` client makes
 * the proofs, and cnfguard is the resource server. Every row of the contract's DPoP table is a
 * test here. Proofs the client library will not make (an old `iat`, a private `jwk`, `alg: none`)
 * are signed with jose, the way an attacker would.
 */
import { X509Certificate } from 'node:crypto';
import http2 from 'node:http2';
import { calculateJwkThumbprint, exportJWK, SignJWT, type JWK } from 'jose';
import { generateKeyPair, generateProof, type KeyPair } from 'dpop';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { accessTokenHash } from '../../src/proof/dpop.ts';
import { thumbprintS256 } from '../../src/tls/certificates.ts';
import { startIntrospectionStub, type IntrospectionStub } from '../fixtures/introspection-stub.ts';
import { manualClock } from '../fixtures/clock.ts';
import { baseConfig, startDeployment, startGuard, type CertificateFiles, type Deployment, type Guard } from '../fixtures/stack.ts';

let d: Deployment;
let stub: IntrospectionStub;
/** Routes: default mTLS, /dpop DPoP only, /both either or both, /origin DPoP behind a public origin. */
let guard: Guard;
/** `dpop.nonce: true`, DPoP everywhere. */
let nonceGuard: Guard;
const NONCE_ROTATION_SECONDS = 60;
/** The nonce guard's clock: real time, put just past a rotation boundary where a test needs a whole period. */
const nonceClock = manualClock({ followRealTime: true });
/** Moves the nonce guard's clock to 1 s into the next rotation period (less than a proof's allowed age ahead). */
function startOfNoncePeriod(): void {
  const period = NONCE_ROTATION_SECONDS * 1000;
  nonceClock.advance(period - (nonceClock.now() % period) + 1000);
}
/** The stub AS (it can answer with a token bound to a certificate and a key at once). */
let stubGuard: Guard;
/** `errors.advertiseMethods: false`. */
let quiet: Guard;
let key: KeyPair;
let jkt: string;
/** A token bound to `key`. */
let token: string;

const agents: Agent[] = [];
function agentFor(cert?: CertificateFiles): Agent {
  const pair = cert === undefined ? undefined : cert === d.pki.files.client1 ? d.pki.certs.clients.client1 : d.pki.certs.clients.client2;
  const agent = new Agent({ connect: { ca: d.pki.certs.ca.cert, ...(pair !== undefined && { cert: pair.cert, key: pair.key }) } });
  agents.push(agent);
  return agent;
}

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Record<string, unknown>;
}

/** One request with undici (a real HTTP client), any Authorization and DPoP lines. */
async function call(base: string, path: string, options: { authorization?: string; dpop?: string | string[]; method?: string; cert?: CertificateFiles; headers?: Record<string, string> } = {}): Promise<Answer> {
  const headers: Record<string, string | string[]> = { ...options.headers };
  if (options.authorization !== undefined) headers.authorization = options.authorization;
  if (options.dpop !== undefined) headers.dpop = options.dpop;
  const res = await request(`${base}${path}`, { method: (options.method ?? 'GET') as 'GET', headers, dispatcher: agentFor(options.cert) });
  const text = await res.body.text();
  return { status: res.statusCode, headers: res.headers, body: text.length === 0 ? {} : (JSON.parse(text) as Record<string, unknown>) };
}

const challenges = (answer: Answer): string => [answer.headers['www-authenticate'] ?? ''].flat().join(', ');

/** A DPoP request as a conforming client sends it. */
async function dpopCall(base: string, path: string, options: { key?: KeyPair; token?: string; method?: string; nonce?: string; htu?: string; cert?: CertificateFiles } = {}): Promise<Answer> {
  const method = options.method ?? 'GET';
  const accessToken = options.token ?? token;
  const proof = await generateProof(options.key ?? key, options.htu ?? `${base}${path}`, method, options.nonce, accessToken);
  return call(base, path, { authorization: `DPoP ${accessToken}`, dpop: proof, method, ...(options.cert !== undefined && { cert: options.cert }) });
}

/** A proof signed with jose, with any header and claims (what the client library refuses to make). */
async function craftedProof(claims: Record<string, unknown>, header: Record<string, unknown> = {}): Promise<string> {
  const jwk = await exportJWK(key.publicKey);
  const protectedHeader = { typ: 'dpop+jwt', alg: 'ES256', jwk, ...header } as { alg: string };
  // A MAC "signed" with the public key's JSON: the key-confusion attack.
  const signingKey = protectedHeader.alg.startsWith('HS') ? new TextEncoder().encode(JSON.stringify(jwk)) : key.privateKey;
  return new SignJWT({ jti: crypto.randomUUID(), iat: Math.floor(Date.now() / 1000), ath: accessTokenHash(token), ...claims }).setProtectedHeader(protectedHeader).sign(signingKey);
}

/** A proof signed by hand (ES256 with `key`): for headers jose refuses to sign, such as a crit it does not know. */
async function handSignedProof(claims: Record<string, unknown>, header: Record<string, unknown>): Promise<string> {
  const part = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const signed = `${part({ typ: 'dpop+jwt', alg: 'ES256', jwk: await exportJWK(key.publicKey), ...header })}.${part({ jti: crypto.randomUUID(), iat: Math.floor(Date.now() / 1000), ath: accessTokenHash(token), ...claims })}`;
  const signature = await crypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, key.privateKey, new TextEncoder().encode(signed));
  return `${signed}.${Buffer.from(signature).toString('base64url')}`;
}

const dpopTokenFor = (pair: KeyPair) => d.as.issueToken({ clientId: 'plain-app', caCert: d.pki.certs.ca.cert, dpopProof: (htu, htm) => generateProof(pair, htu, htm) });

/**
 * Runs `action`, then waits for its access line: the line is written when the response has closed,
 * which may be just after the client has read it.
 */
async function withLine<T>(g: Guard, path: string, action: () => Promise<T>): Promise<[T, Record<string, unknown>]> {
  const linesFor = () => g.logs.entries().filter((e) => e.path === path && e.msg !== undefined && e.reqId !== undefined);
  const before = linesFor().length;
  const result = await action();
  for (let waited = 0; linesFor().length === before && waited < 2000; waited += 5) await new Promise((resolve) => setTimeout(resolve, 5));
  return [result, linesFor().at(-1) ?? {}];
}

function metric(text: string, name: string, labels: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}}`));
  return line === undefined ? 0 : Number(line.split(' ').pop());
}

beforeAll(async () => {
  d = await startDeployment();
  stub = await startIntrospectionStub(d.pki.certs.server);
  key = await generateKeyPair('ES256');
  jkt = await calculateJwkThumbprint((await exportJWK(key.publicKey)) as JWK, 'sha256');
  token = await dpopTokenFor(key);
  const routes = [
    { pathPrefix: '/dpop', methods: ['dpop'] },
    { pathPrefix: '/both', methods: ['mtls', 'dpop'] },
    { pathPrefix: '/origin', methods: ['dpop'], publicOrigin: 'https://api.example' },
    { pathPrefix: '/trial', methods: ['mtls', 'dpop'], binding: 'report-only' },
    { host: 'routed.test', pathPrefix: '/routed', methods: ['dpop'] },
  ];
  [guard, nonceGuard, stubGuard, quiet] = await Promise.all([
    startGuard(d.pki, baseConfig(d.pki, d.as, d.upstream, { routes })),
    startGuard(d.pki, baseConfig(d.pki, d.as, d.upstream, { methods: ['dpop'], dpop: { nonce: true, nonceRotationSeconds: NONCE_ROTATION_SECONDS } }), { now: nonceClock.now }),
    startGuard(d.pki, baseConfig(d.pki, d.as, d.upstream, { introspection: { url: stub.url, clientId: 'rs', clientSecret: 'rs-secret', ca: d.pki.files.ca }, methods: ['mtls', 'dpop'] })),
    startGuard(d.pki, baseConfig(d.pki, d.as, d.upstream, { routes, errors: { advertiseMethods: false } })),
  ]);
});

afterAll(async () => {
  await Promise.all(agents.map((agent) => agent.close()));
  for (const g of [guard, nonceGuard, stubGuard, quiet]) await g?.stop();
  await stub?.stop();
  await d?.stop();
});

describe('the token the AS issued', () => {
  it('is DPoP-bound: introspection says cnf.jkt is the client key and token_type DPoP', async () => {
    const res = await request(d.as.introspectionUrl, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from('rs:rs-secret').toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token }).toString(),
      dispatcher: agentFor(),
    });
    expect(await res.body.json()).toMatchObject({ active: true, token_type: 'DPoP', cnf: { jkt } });
  });
});

describe('DPoP requests (the contract table)', () => {
  it('a valid proof for the token key: forwarded with x-auth-dpop-jkt; a client copy of it is dropped', async () => {
    const before = d.upstream.requests.length;
    const proof = await generateProof(key, `${guard.started.url}/dpop/orders`, 'GET', undefined, token);
    const [r, line] = await withLine(guard, '/dpop/orders', () => call(guard.started.url, '/dpop/orders', { authorization: `DPoP ${token}`, dpop: proof, headers: { 'x-auth-dpop-jkt': 'forged' } }));
    expect(r.status).toBe(200);
    const seen = d.upstream.requests.slice(before).find((req) => req.url === '/dpop/orders');
    expect(seen?.headers['x-auth-dpop-jkt']).toBe(jkt);
    expect(seen?.headers['x-auth-client-id']).toBe('plain-app');
    expect(seen?.headers['x-auth-binding']).toBe('bound');
    // The access line names the method that verified the request, and holds neither token nor proof.
    expect(line).toMatchObject({ decision: 'allow', proof: 'dpop', reason: 'bound' });
    expect(guard.logs.text()).not.toContain(token);
    expect(guard.logs.text()).not.toContain(proof);
  });

  it('POST with a proof for POST, and a path whose unreserved characters are escaped, still match', async () => {
    expect((await dpopCall(guard.started.url, '/dpop/a', { method: 'POST' })).status).toBe(200);
    expect((await dpopCall(guard.started.url, '/dpop/%7Euser', { htu: `${guard.started.url}/dpop/~user` })).status).toBe(200);
  });

  const refusedProofs: [string, () => Promise<{ dpop?: string | string[]; method?: string; path?: string }>, string][] = [
    ['missing', () => Promise.resolve({}), 'dpop_proof_missing'],
    ['repeated', async () => ({ dpop: [await generateProof(key, `${guard.started.url}/dpop/r`, 'GET', undefined, token), await generateProof(key, `${guard.started.url}/dpop/r`, 'GET', undefined, token)] }), 'dpop_proof_repeated'],
    ['not a JWS', () => Promise.resolve({ dpop: 'not-a-proof' }), 'dpop_proof_invalid'],
    [
      'badly signed',
      async () => {
        const [h, p] = (await generateProof(key, `${guard.started.url}/dpop/r`, 'GET', undefined, token)).split('.');
        return { dpop: `${h}.${p}.${Buffer.alloc(64, 1).toString('base64url')}` };
      },
      'dpop_signature_invalid',
    ],
    ['for another method', async () => ({ dpop: await generateProof(key, `${guard.started.url}/dpop/r`, 'POST', undefined, token) }), 'dpop_htm_mismatch'],
    ['for another URI', async () => ({ dpop: await generateProof(key, `${guard.started.url}/dpop/other`, 'GET', undefined, token) }), 'dpop_htu_mismatch'],
    ['for another access token', async () => ({ dpop: await generateProof(key, `${guard.started.url}/dpop/r`, 'GET', undefined, 'another-token') }), 'dpop_ath_mismatch'],
    ['too old (iat)', async () => ({ dpop: await craftedProof({ htm: 'GET', htu: `${guard.started.url}/dpop/r`, iat: Math.floor(Date.now() / 1000) - 3600 }) }), 'dpop_iat_window'],
    ['from the future (iat)', async () => ({ dpop: await craftedProof({ htm: 'GET', htu: `${guard.started.url}/dpop/r`, iat: Math.floor(Date.now() / 1000) + 600 }) }), 'dpop_iat_window'],
    ['typ JWT', async () => ({ dpop: await craftedProof({ htm: 'GET', htu: `${guard.started.url}/dpop/r` }, { typ: 'JWT' }) }), 'dpop_proof_invalid'],
    ['with a MAC algorithm', async () => ({ dpop: await craftedProof({ htm: 'GET', htu: `${guard.started.url}/dpop/r` }, { alg: 'HS256' }) }), 'dpop_alg_unsupported'],
    [
      'with a private key in its jwk',
      async () => ({ dpop: await craftedProof({ htm: 'GET', htu: `${guard.started.url}/dpop/r` }, { jwk: { ...(await exportJWK(key.publicKey)), d: 'AAAA' } }) }),
      'dpop_key_invalid',
    ],
    ['over the size limit', () => Promise.resolve({ dpop: `${'a'.repeat(5000)}.b.c` }), 'dpop_proof_invalid'],
    // RFC 7515 §4.1.11: an unknown critical extension makes the JWS invalid (and b64 would change what is signed).
    ['with crit naming an unknown extension', async () => ({ dpop: await handSignedProof({ htm: 'GET', htu: `${guard.started.url}/dpop/r` }, { crit: ['foo'], foo: 1 }) }), 'dpop_proof_invalid'],
    ['with crit b64 and b64 false', async () => ({ dpop: await handSignedProof({ htm: 'GET', htu: `${guard.started.url}/dpop/r` }, { crit: ['b64'], b64: false }) }), 'dpop_proof_invalid'],
  ];

  it.each(refusedProofs)('proof %s: 401 DPoP error="invalid_dpop_proof" with algs, the Bearer challenge without an error', async (_name, make, reason) => {
    const { dpop } = await make();
    const [r, line] = await withLine(guard, '/dpop/r', () => call(guard.started.url, '/dpop/r', { authorization: `DPoP ${token}`, ...(dpop !== undefined && { dpop }) }));
    expect(r.status).toBe(401);
    expect(challenges(r)).toMatch(/^Bearer realm="cnfguard", supported_cnf_methods="dpop", DPoP error="invalid_dpop_proof", algs="ES256 EdDSA PS256", error_description="[^"]+"$/);
    expect(r.body.error).toBe('invalid_dpop_proof');
    expect(line).toMatchObject({ decision: 'deny', reason });
  });

  it('the hand-signed proof without crit passes (so the crit rows above are refused for crit alone)', async () => {
    expect((await call(guard.started.url, '/dpop/r', { authorization: `DPoP ${token}`, dpop: await handSignedProof({ htm: 'GET', htu: `${guard.started.url}/dpop/r` }, {}) })).status).toBe(200);
  });

  it('a proof replayed byte for byte is refused (dpop_proof_replayed); the first use passed', async () => {
    const proof = await generateProof(key, `${guard.started.url}/dpop/once`, 'GET', undefined, token);
    const first = await call(guard.started.url, '/dpop/once', { authorization: `DPoP ${token}`, dpop: proof });
    const [again, line] = await withLine(guard, '/dpop/once', () => call(guard.started.url, '/dpop/once', { authorization: `DPoP ${token}`, dpop: proof }));
    expect([first.status, again.status]).toEqual([200, 401]);
    expect(challenges(again)).toContain('DPoP error="invalid_dpop_proof"');
    expect(line).toMatchObject({ reason: 'dpop_proof_replayed' });
  });

  it('a valid proof of another key than cnf.jkt names: 401 DPoP error="invalid_token"', async () => {
    const thief = await generateKeyPair('ES256');
    const [r, line] = await withLine(guard, '/dpop/stolen', () => dpopCall(guard.started.url, '/dpop/stolen', { key: thief }));
    expect(r.status).toBe(401);
    expect(challenges(r)).toContain('DPoP error="invalid_token", algs="ES256 EdDSA PS256"');
    expect(line).toMatchObject({ reason: 'dpop_key_mismatch' });
  });

  it('the DPoP scheme on a route without dpop: 401 as for missing credentials, and no AS call', async () => {
    const calls = d.as.introspectionCalls();
    const r = await dpopCall(guard.started.url, '/mtls-only');
    expect(r.status).toBe(401);
    expect(challenges(r)).toBe('Bearer realm="cnfguard", supported_cnf_methods="mtls"');
    expect(r.body).not.toHaveProperty('error');
    expect(d.as.introspectionCalls()).toBe(calls);
  });

  it('a DPoP-bound token sent as Bearer: 401 invalid_token, even with a valid proof beside it', async () => {
    const proof = await generateProof(key, `${guard.started.url}/dpop/downgrade`, 'GET', undefined, token);
    const r = await call(guard.started.url, '/dpop/downgrade', { authorization: `Bearer ${token}`, dpop: proof });
    expect(r.status).toBe(401);
    expect(challenges(r)).toMatch(/^Bearer realm="cnfguard", error="invalid_token", .*supported_cnf_methods="dpop", DPoP algs="ES256 EdDSA PS256"$/);
  });

  it('a certificate-bound token with the DPoP scheme is refused (dpop_token_unbound)', async () => {
    const bound = await d.tokenFor('client1');
    const r = await dpopCall(guard.started.url, '/both/x', { token: bound, cert: d.pki.files.client1 });
    expect(r.status).toBe(401);
    expect(challenges(r)).toContain('DPoP error="invalid_token"');
    // …while the same token with Bearer and its certificate passes on the route that takes both methods.
    expect((await call(guard.started.url, '/both/x', { authorization: `Bearer ${bound}`, cert: d.pki.files.client1 })).status).toBe(200);
  });

  it('publicOrigin: the proof is for the URI the client called, not the listener', async () => {
    expect((await dpopCall(guard.started.url, '/origin/x', { htu: 'https://api.example/origin/x' })).status).toBe(200);
    const [direct, line] = await withLine(guard, '/origin/x', () => dpopCall(guard.started.url, '/origin/x'));
    expect(direct.status).toBe(401);
    expect(line).toMatchObject({ reason: 'dpop_htu_mismatch' });
  });

  it('without publicOrigin, htu may name only hosts the server certificate or a route names, on the listener port or 443', async () => {
    const port = guard.started.port;
    // undici checks the certificate against the Host sent: here that is the point of the test.
    const anyName = new Agent({ connect: { ca: d.pki.certs.ca.cert, checkServerIdentity: () => undefined } });
    agents.push(anyName);
    /** A proof for `origin` + path, sent with that origin's host as Host. */
    const named = async (origin: string, path: string) => {
      const proof = await generateProof(key, `${origin}${path}`, 'GET', undefined, token);
      return withLine(guard, path, async () => {
        const res = await request(`${guard.started.url}${path}`, { headers: { authorization: `DPoP ${token}`, dpop: proof, host: new URL(origin).host }, dispatcher: anyName });
        const body = (await res.body.json()) as Record<string, unknown>;
        return { status: res.statusCode, body };
      });
    };
    // Another resource server's proof, replayed here under its own Host: refused.
    for (const origin of ['https://other-rs.example', `https://other-rs.example:${port}`, 'https://127.0.0.1:9443', `https://localhost:${port + 1}`, 'https://routed.test.evil']) {
      const [r, line] = await named(origin, '/dpop/elsewhere');
      expect([origin, r.status, r.body.error]).toEqual([origin, 401, 'invalid_dpop_proof']);
      expect(line).toMatchObject({ reason: 'dpop_htu_mismatch' });
    }
    // The names of the server certificate (localhost, 127.0.0.1), with this port or none, and a route's host.
    for (const [origin, path] of [[`https://localhost:${port}`, '/dpop/here'], ['https://127.0.0.1', '/dpop/here'], ['https://LOCALHOST', '/dpop/here'], [`https://routed.test:${port}`, '/routed/x']] as const) {
      const [r] = await named(origin, path);
      expect([origin, r.status]).toEqual([origin, 200]);
    }
  });

  it('report-only: a refused proof is forwarded and reported as would_deny with its reason; a good one is verified', async () => {
    const [bad, line] = await withLine(guard, '/trial/x', () => dpopCall(guard.started.url, '/trial/x', { htu: `${guard.started.url}/elsewhere` }));
    expect(bad.status).toBe(200);
    expect(line).toMatchObject({ decision: 'would_deny', reason: 'dpop_htu_mismatch' });
    const [good, verified] = await withLine(guard, '/trial/x', () => dpopCall(guard.started.url, '/trial/x'));
    expect(good.status).toBe(200);
    expect(verified).toMatchObject({ decision: 'allow', reason: 'bound', proof: 'dpop' });
  });

  it('a proof that is refused costs no AS call (the proof is checked first)', async () => {
    const fresh = await dpopTokenFor(key);
    const calls = d.as.introspectionCalls();
    const r = await call(guard.started.url, '/dpop/cold', { authorization: `DPoP ${fresh}`, dpop: await generateProof(key, `${guard.started.url}/dpop/cold`, 'GET', undefined, token) });
    expect(r.status).toBe(401);
    expect(d.as.introspectionCalls()).toBe(calls);
  });

  it('metrics count requests by the method that verified them, and DPoP refusals by reason', async () => {
    const text = await (await fetch(`${guard.started.adminUrl}/metrics`)).text();
    expect(metric(text, 'cnfguard_verified_requests_total', 'route="routes[0]",method="dpop"')).toBeGreaterThan(0);
    expect(metric(text, 'cnfguard_requests_total', 'decision="deny",reason="dpop_proof_replayed",route="routes[0]"')).toBe(1);
  });
});

describe('over HTTP/2', () => {
  it('the same proof check: valid passes with x-auth-dpop-jkt, a replay is refused', async () => {
    const session = http2.connect(guard.started.url, { ca: d.pki.certs.ca.cert });
    const send = (proof: string) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const stream = session.request({ ':path': '/dpop/h2', authorization: `DPoP ${token}`, dpop: proof });
        let status = 0;
        let body = '';
        stream.on('response', (headers) => (status = Number(headers[':status'])));
        stream.on('data', (chunk: Buffer) => (body += chunk.toString()));
        stream.on('end', () => resolve({ status, body }));
        stream.on('error', reject);
      });
    try {
      const proof = await generateProof(key, `${guard.started.url}/dpop/h2`, 'GET', undefined, token);
      const first = await send(proof);
      expect(first.status).toBe(200);
      expect((JSON.parse(first.body) as { headers: Record<string, string> }).headers['x-auth-dpop-jkt']).toBe(jkt);
      expect((await send(proof)).status).toBe(401);
      // An :authority naming another resource server: its proof is refused here too.
      const elsewhere = await generateProof(key, 'https://other-rs.example/dpop/h2', 'GET', undefined, token);
      const other = await new Promise<number>((resolve, reject) => {
        const stream = session.request({ ':path': '/dpop/h2', ':authority': 'other-rs.example', authorization: `DPoP ${token}`, dpop: elsewhere });
        stream.on('response', (headers) => resolve(Number(headers[':status'])));
        stream.on('error', reject);
        stream.resume();
      });
      expect(other).toBe(401);
    } finally {
      session.close();
    }
  });
});

describe('nonces (dpop.nonce: true)', () => {
  it('a proof without a nonce: 401 use_dpop_nonce with DPoP-Nonce; the retry with it passes', async () => {
    // Both calls in one rotation period, so that the success needs no fresh nonce.
    startOfNoncePeriod();
    const first = await dpopCall(nonceGuard.started.url, '/n');
    expect(first.status).toBe(401);
    expect(challenges(first)).toContain('DPoP error="use_dpop_nonce"');
    const nonce = first.headers['dpop-nonce'];
    expect(nonce).toMatch(/^[A-Za-z0-9_-]{22}$/);
    const retry = await dpopCall(nonceGuard.started.url, '/n', { nonce: nonce as string });
    expect(retry.status).toBe(200);
    // The nonce is still current: no fresh one on the success.
    expect(retry.headers['dpop-nonce']).toBeUndefined();
  });

  it('a nonce this server never issued is refused the same way', async () => {
    const r = await dpopCall(nonceGuard.started.url, '/n', { nonce: 'AAAAAAAAAAAAAAAAAAAAAA' });
    expect(r.status).toBe(401);
    expect(challenges(r)).toContain('DPoP error="use_dpop_nonce"');
  });
});

describe('a token bound to a certificate and a DPoP key at once (stub AS: oidc-provider binds one method per token)', () => {
  it('passes only with both the certificate and the proof', async () => {
    const client1 = thumbprintS256(new X509Certificate(d.pki.certs.clients.client1.cert).raw);
    stub.answers.set(token, { active: true, client_id: 'both-app', token_type: 'DPoP', cnf: { 'x5t#S256': client1, jkt } });
    const url = stubGuard.started.url;
    const [both, line] = await withLine(stubGuard, '/x', () => dpopCall(url, '/x', { cert: d.pki.files.client1 }));
    expect(both.status).toBe(200);
    expect(line).toMatchObject({ decision: 'allow', proof: 'dpop+mtls' });
    const noCert = await dpopCall(url, '/x');
    expect(noCert.status).toBe(401);
    expect(noCert.body.error).toBe('invalid_token');
    expect((await dpopCall(url, '/x', { cert: d.pki.files.client2 })).status).toBe(401);
    expect((await call(url, '/x', { authorization: `DPoP ${token}`, cert: d.pki.files.client1 })).status).toBe(401);
  });
});

describe('advertising', () => {
  it('errors.advertiseMethods: false keeps the Bearer challenge exactly as before methods existed', async () => {
    const r = await call(quiet.started.url, '/x');
    expect(challenges(r)).toBe('Bearer realm="cnfguard"');
    const dpopRoute = await call(quiet.started.url, '/dpop/x');
    expect(challenges(dpopRoute)).toBe('Bearer realm="cnfguard", DPoP algs="ES256 EdDSA PS256"');
  });
});
