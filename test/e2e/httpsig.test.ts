/**
 * Issue 30 end to end: HTTP message signatures made by two client libraries nobody here wrote
 * (test/fixtures/httpsig-clients.ts), with both key forms (cnf.jwk Ed25519 and ES256, cnf.htsk
 * ecdsa-p256-sha256), over HTTP/1.1 and HTTP/2 to a real guard, with bodies and their
 * Content-Digest. The tokens come from the introspection stub: oidc-provider cannot bind a token
 * to an httpsig key. The decision table's rows (every refusal, every edge) are in
 * edge-contract-rows.ts; here what the table cannot send: bodies, and the decision API's withheld one.
 */
import { X509Certificate } from 'node:crypto';
import http from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEchoUpstream, type EchoUpstream } from '../../demo/echo-upstream.ts';
import { thumbprintS256 } from '../../src/tls/certificates.ts';
import { CLIENT_LIBRARIES, contentDigest, httpsigKey, signRequest, type HttpsigKey } from '../fixtures/httpsig-clients.ts';
import { startIntrospectionStub, type IntrospectionStub } from '../fixtures/introspection-stub.ts';
import { createPki, startGuard, type Guard, type Pki } from '../fixtures/stack.ts';
import { waitFor } from '../fixtures/wait.ts';

const ORIGIN = 'https://api.test';
const MAX_BODY = 4096;

let pki: Pki;
let stub: IntrospectionStub;
let upstream: EchoUpstream;
let guard: Guard;
const keys: Record<'ed25519' | 'es256' | 'htsk', HttpsigKey> = { ed25519: httpsigKey('ed25519'), es256: httpsigKey('ecdsa-p256-sha256'), htsk: httpsigKey('ecdsa-p256-sha256', 'htsk') };
const token = (name: keyof typeof keys) => `tok-httpsig-${name}`;

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

function h1(path: string, o: { method?: string; headers: Record<string, string>; body?: Buffer; port?: number; decision?: boolean }): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const options = { host: '127.0.0.1', port: o.port ?? guard.started.port, method: o.method ?? 'GET', path, headers: { host: 'api.test', ...o.headers }, agent: false };
    const done = (res: http.IncomingMessage) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    };
    const req = o.decision === true ? http.request({ ...options, localAddress: '127.0.0.9' }, done) : https.request({ ...options, ca: pki.certs.ca.cert, servername: 'localhost' }, done);
    req.on('error', reject);
    req.end(o.body);
  });
}

async function h2(path: string, o: { method?: string; headers: Record<string, string>; body?: Buffer }): Promise<Answer> {
  const session = http2.connect(`https://127.0.0.1:${guard.started.port}`, { ca: pki.certs.ca.cert, servername: 'localhost' });
  session.on('error', () => {});
  try {
    const stream = session.request({ ':method': o.method ?? 'GET', ':path': path, ':authority': 'api.test', ...o.headers });
    stream.end(o.body);
    const headers = await new Promise<http2.IncomingHttpHeaders>((resolve) => stream.once('response', (h) => resolve(h)));
    let body = '';
    stream.setEncoding('utf8').on('data', (c: string) => (body += c));
    await new Promise((resolve) => stream.once('end', resolve));
    return { status: Number(headers[':status']), headers, body };
  } finally {
    session.close();
  }
}

const reasonOf = async (path: string): Promise<unknown> => (await waitFor(() => guard.logs.entries().find((e) => e.path === path && e.reqId !== undefined), `access line of ${path}`)).reason;
const forwarded = (path: string) => upstream.requests.filter((r) => r.url === path);

beforeAll(async () => {
  pki = await createPki();
  stub = await startIntrospectionStub(pki.certs.server);
  upstream = await startEchoUpstream();
  const exp = Math.floor(Date.now() / 1000) + 3600;
  for (const name of Object.keys(keys) as (keyof typeof keys)[]) stub.answers.set(token(name), { active: true, sub: 'sig-user', client_id: 'sig-app', scope: 'read', exp, token_type: 'httpsig', cnf: keys[name].cnf });
  const client1 = thumbprintS256(new X509Certificate(pki.certs.clients.client1.cert).raw);
  stub.answers.set('tok-mtls-and-sig', { active: true, sub: 'sig-user', client_id: 'sig-app', exp, cnf: { 'x5t#S256': client1, ...keys.ed25519.cnf } });
  guard = await startGuard(pki, {
    listen: { host: '127.0.0.1', port: 0, http2: true },
    tls: { cert: pki.files.server.cert, key: pki.files.server.key },
    introspection: { url: stub.url, clientId: 'rs', clientSecret: 'rs-secret', ca: pki.files.ca, timeoutMs: 1500, budget: { perPeerPerSecond: 0, totalPerSecond: 0 } },
    upstream: upstream.url,
    admin: { host: '127.0.0.1', port: 0 },
    publicOrigin: ORIGIN,
    methods: ['httpsig'],
    httpsig: { maxBufferedBodyBytes: MAX_BODY },
    trustedProxies: [{ cidrs: ['127.0.0.9/32'], header: 'x-client-cert', format: 'pem-urlencoded' }],
    decisionApi: { host: '127.0.0.1', port: 0 },
  });
}, 60_000);

afterAll(async () => {
  await guard?.stop();
  await upstream?.stop();
  await stub?.stop();
  await pki?.cleanup();
});

describe('two client libraries, both key forms, HTTP/1.1 and HTTP/2', () => {
  const cases = CLIENT_LIBRARIES.flatMap((library) => (['ed25519', 'es256', 'htsk'] as const).flatMap((key) => (['h1', 'h2'] as const).map((edge) => ({ library, key, edge }))));
  it.each(cases)('$library signs with the $key key over $edge: forwarded, and the same request again is a replay', async ({ library, key, edge }) => {
    const path = `/lib/${library}/${key}/${edge}?q=1`;
    const headers = await signRequest(library, { method: 'GET', url: `${ORIGIN}${path}`, headers: { authorization: `HTTPSig ${token(key)}` }, key: keys[key] });
    const send = edge === 'h1' ? h1 : h2;
    const first = await send(path, { headers });
    expect(first.status, first.body).toBe(200);
    expect(forwarded(path)).toHaveLength(1);
    const again = await send(path, { headers });
    expect(again.status).toBe(401);
    expect(JSON.parse(again.body)).toEqual({ error: 'invalid_token', error_description: 'the HTTP message signature nonce was already used' });
    expect(forwarded(path)).toHaveLength(1);
  });

  it.each(CLIENT_LIBRARIES)('%s: a POST body covered by its Content-Digest is checked and forwarded as sent; another body is refused', async (library) => {
    const body = Buffer.from(JSON.stringify({ hello: 'world', library }));
    const path = `/body/${library}`;
    const headers = await signRequest(library, { method: 'POST', url: `${ORIGIN}${path}`, headers: { authorization: `HTTPSig ${token('ed25519')}`, 'content-type': 'application/json', 'content-digest': contentDigest(body) }, key: keys.ed25519 });
    const ok = await h1(path, { method: 'POST', headers, body });
    expect(ok.status, ok.body).toBe(200);
    expect(forwarded(path)[0]?.bodyBytes).toBe(body.length);
    const tampered = Buffer.from(body.toString().replace('world', 'earth'));
    const bad = await h2(`${path}/tampered`, { method: 'POST', headers: await signRequest(library, { method: 'POST', url: `${ORIGIN}${path}/tampered`, headers: { authorization: `HTTPSig ${token('ed25519')}`, 'content-digest': contentDigest(body) }, key: keys.ed25519 }), body: tampered });
    expect(bad.status).toBe(401);
    expect(await reasonOf(`${path}/tampered`)).toBe('httpsig_digest_mismatch');
    expect(forwarded(`${path}/tampered`)).toHaveLength(0);
  });
});

describe('bodies', () => {
  it('a body the signature does not cover (no content-digest) is refused', async () => {
    const path = '/body/uncovered';
    const headers = await signRequest('http-message-signatures', { method: 'POST', url: `${ORIGIN}${path}`, headers: { authorization: `HTTPSig ${token('es256')}` }, key: keys.es256 });
    const answer = await h1(path, { method: 'POST', headers, body: Buffer.from('unsigned') });
    expect(answer.status).toBe(401);
    expect(await reasonOf(path)).toBe('httpsig_components_missing');
    expect(forwarded(path)).toHaveLength(0);
  });

  it('a body over httpsig.maxBufferedBodyBytes is refused with 413 before anything is forwarded (declared or chunked)', async () => {
    const body = Buffer.alloc(MAX_BODY + 1, 'a');
    for (const [path, send] of [['/body/large-h1', h1], ['/body/large-h2', h2]] as const) {
      const headers = await signRequest('http-message-sig', { method: 'POST', url: `${ORIGIN}${path}`, headers: { authorization: `HTTPSig ${token('ed25519')}`, 'content-digest': contentDigest(body) }, key: keys.ed25519 });
      const answer = await send(path, { method: 'POST', headers, body });
      expect(answer.status).toBe(413);
      expect(await reasonOf(path)).toBe('httpsig_body_too_large');
      expect(forwarded(path)).toHaveLength(0);
    }
  });

  it('the decision API: a request with a body the front keeps is refused with its own reason', async () => {
    const path = '/body/decision';
    const body = Buffer.from('kept by the front');
    const headers = await signRequest('http-message-signatures', { method: 'POST', url: `${ORIGIN}${path}`, headers: { authorization: `HTTPSig ${token('ed25519')}`, 'content-digest': contentDigest(body) }, key: keys.ed25519 });
    const answer = await h1('/nginx', { port: guard.started.decisionPort as number, decision: true, headers: { ...headers, 'x-original-method': 'POST', 'x-original-uri': path } });
    expect(answer.status).toBe(401);
    expect(JSON.parse(answer.body).error_description).toBe('a signed request body cannot be checked on this path: the front does not pass bodies');
    // Without a body, the same front lets a signed request through.
    const plain = await signRequest('http-message-signatures', { method: 'GET', url: `${ORIGIN}/nobody`, headers: { authorization: `HTTPSig ${token('ed25519')}` }, key: keys.ed25519 });
    expect((await h1('/nginx', { port: guard.started.decisionPort as number, decision: true, headers: { ...plain, 'x-original-method': 'GET', 'x-original-uri': '/nobody' } })).status).toBe(200);
  });
});

describe('challenges', () => {
  it('a 401 carries the HTTPSig challenge with the error and Accept-Signature naming what to sign', async () => {
    const answer = await h1('/challenge', { headers: { authorization: `HTTPSig ${token('ed25519')}` } });
    expect(answer.status).toBe(401);
    expect(answer.headers['www-authenticate']).toBe(
      'Bearer realm="cnfguard", supported_cnf_methods="httpsig", HTTPSig realm="cnfguard", error="invalid_token", error_description="an HTTP message signature tagged httpsig-oauth is required"',
    );
    expect(answer.headers['accept-signature']).toBe('httpsig=("@method" "@target-uri" "authorization");created;nonce;tag="httpsig-oauth"');
  });
});
