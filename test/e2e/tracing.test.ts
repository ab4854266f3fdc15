/**
 * OpenTelemetry traces (issue 28) against a real OTLP/HTTP receiver process: a `cnfguard.request`
 * span per request on every edge (HTTP/1.1, HTTP/2, gRPC, the decision API), children for
 * introspection and the upstream call, W3C traceparent followed only from `trustedProxies` peers,
 * the upstream given this trace's traceparent, export headers sent, and no token anywhere.
 */
import { execFile } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import http from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';
import tls from 'node:tls';
import { Agent, request } from 'undici';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createOtelTracer } from '../../src/observe/otel.ts';
import { startOtlpReceiver, type OtlpReceiver, type ReceivedSpan } from '../fixtures/otlp.ts';
import { baseConfig, startDeployment, startGuard, type Deployment, type Guard } from '../fixtures/stack.ts';
import { waitFor } from '../fixtures/wait.ts';

const TRUSTED = '127.0.0.2';
const CERT_HEADER = 'x-client-cert-hash';
let d: Deployment;
let receiver: OtlpReceiver;
let guard: Guard;
const tokens: string[] = [];
const agents: Agent[] = [];

function agent(options: { cert?: boolean } = {}): Agent {
  const pair = d.pki.certs.clients.client1;
  const a = new Agent({ connect: { ca: d.pki.certs.ca.cert, ...(options.cert === true && { cert: pair.cert, key: pair.key }) } });
  agents.push(a);
  return a;
}

/** A GET from the trusted proxy's address (undici cannot choose the local address). */
function fromTrusted(url: string, headers: Record<string, string>): Promise<{ statusCode: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const get = url.startsWith('https:') ? https.request : http.request;
    const r = get(url, { localAddress: TRUSTED, headers, agent: false, ca: d.pki.certs.ca.cert }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ statusCode: res.statusCode ?? 0, headers: res.headers, body }));
    });
    r.on('error', reject);
    r.end();
  });
}

async function token(): Promise<string> {
  const t = await d.tokenFor('client1');
  tokens.push(t);
  return t;
}

const hex = (bytes: number) => createHash('sha256').update(Math.random().toString()).digest('hex').slice(0, bytes * 2);

/** The spans of one trace, once `names` are all among them. */
function traceOf(traceId: string, names: readonly string[]): Promise<ReceivedSpan[]> {
  return waitFor(
    () => {
      const spans = receiver.spans().filter((s) => s.traceId === traceId);
      return names.every((name) => spans.some((s) => s.name === name)) && spans;
    },
    () => `spans ${names.join(', ')} of trace ${traceId}; received: ${JSON.stringify(receiver.spans().map((s) => [s.traceId, s.name]))}`,
    { timeoutMs: 15_000 },
  );
}

/** The request span whose request id is `requestId`. */
function requestSpan(requestId: string): Promise<ReceivedSpan> {
  return waitFor(() => receiver.spans().find((s) => s.name === 'cnfguard.request' && s.attributes['cnfguard.request_id'] === requestId), `the span of request ${requestId}`, { timeoutMs: 15_000 });
}

function upstreamTraceparent(path: string): { traceId: string; parentId: string } {
  const seen = d.upstream.requests.filter((r) => r.url === path).at(-1);
  const [, traceId, parentId] = String(seen?.headers.traceparent ?? '').split('-');
  return { traceId: traceId ?? '', parentId: parentId ?? '' };
}

beforeAll(async () => {
  d = await startDeployment();
  receiver = await startOtlpReceiver(d.pki.dir);
  guard = await startGuard(
    d.pki,
    baseConfig(d.pki, d.as, d.upstream, {
      tracing: { otlpEndpoint: receiver.url, serviceName: 'cnfguard-under-test', headers: { 'x-collector-key': 'collector-secret' } },
      trustedProxies: [{ cidrs: [`${TRUSTED}/32`], header: CERT_HEADER, format: 'sha256-hex' }],
      decisionApi: { host: '127.0.0.1', port: 0 },
    }),
  );
}, 60_000);

afterAll(async () => {
  await Promise.all(agents.map((a) => a.close()));
  await guard?.stop();
  await receiver?.stop();
  await d?.stop();
});

describe('tracing', () => {
  it('an allowed request (introspection miss): the request span, its introspection and upstream children, the upstream told this trace', async () => {
    const res = await request(`${guard.started.url}/allowed`, { headers: { authorization: `Bearer ${await token()}` }, dispatcher: agent({ cert: true }) });
    await res.body.text();
    expect(res.statusCode).toBe(200);
    const seen = upstreamTraceparent('/allowed');
    expect(seen.traceId).toMatch(/^[0-9a-f]{32}$/);
    const spans = await traceOf(seen.traceId, ['cnfguard.request', 'cnfguard.introspection', 'cnfguard.upstream']);
    const root = spans.find((s) => s.name === 'cnfguard.request') as ReceivedSpan;
    expect(root.parentSpanId).toBe('');
    expect(root.serviceName).toBe('cnfguard-under-test');
    expect(root.attributes).toMatchObject({ 'cnfguard.route': 'default', 'cnfguard.decision': 'allow', 'cnfguard.reason': 'bound', 'cnfguard.proof_method': 'mtls', 'http.response.status_code': 200, 'cnfguard.edge': 'http1', 'http.request.method': 'GET' });
    expect(root.attributes['cnfguard.request_id']).toBe(res.headers['x-request-id']);
    for (const name of ['cnfguard.introspection', 'cnfguard.upstream']) expect(spans.find((s) => s.name === name)?.parentSpanId).toBe(root.spanId);
    // The upstream's traceparent names the upstream call's span.
    expect(seen.parentId).toBe(spans.find((s) => s.name === 'cnfguard.upstream')?.spanId);
  });

  it('a refused request: its reason id and status on the span', async () => {
    const client2 = d.pki.certs.clients.client2;
    const a = new Agent({ connect: { ca: d.pki.certs.ca.cert, cert: client2.cert, key: client2.key } });
    agents.push(a);
    const res = await request(`${guard.started.url}/refused`, { headers: { authorization: `Bearer ${await token()}` }, dispatcher: a });
    await res.body.text();
    expect(res.statusCode).toBe(401);
    const span = await requestSpan(String(res.headers['x-request-id']));
    expect(span.attributes).toMatchObject({ 'cnfguard.decision': 'deny', 'cnfguard.reason': 'certificate_mismatch', 'http.response.status_code': 401, 'cnfguard.proof_method': 'none' });
  });

  it('a client that leaves before the upstream answers: the upstream call\'s span says so, not that the upstream was unreachable', async () => {
    const leaving = new AbortController();
    const answered = request(`${guard.started.url}/gone`, { headers: { authorization: `Bearer ${await token()}`, 'x-echo-delay-ms': '2000' }, dispatcher: agent({ cert: true }), signal: leaving.signal }).catch(() => undefined);
    await waitFor(() => d.upstream.requests.some((r) => r.url === '/gone') || undefined, 'the request to reach the upstream', { timeoutMs: 5000, intervalMs: 20 });
    leaving.abort();
    await answered;
    const spans = await traceOf(upstreamTraceparent('/gone').traceId, ['cnfguard.request', 'cnfguard.upstream']);
    expect(spans.find((s) => s.name === 'cnfguard.upstream')?.status).toEqual({ code: 2, message: 'client_aborted' });
    expect(spans.find((s) => s.name === 'cnfguard.request')?.attributes['cnfguard.reason']).toBe('client_aborted');
  });

  it('the AS unreachable: the introspection span\'s error names the failure by its reason id', async () => {
    const down = await startGuard(
      d.pki,
      baseConfig(d.pki, d.as, d.upstream, {
        // The same export headers as the main guard's: every export to this receiver is checked for them.
        tracing: { otlpEndpoint: receiver.url, serviceName: 'cnfguard-as-down', headers: { 'x-collector-key': 'collector-secret' } },
        introspection: { url: 'https://127.0.0.1:1/introspect', clientId: 'rs', clientSecret: 'rs-secret', ca: d.pki.files.ca, timeoutMs: 500, probeAtStartup: false },
      }),
    );
    try {
      const res = await request(`${down.started.url}/as-down`, { headers: { authorization: `Bearer ${await token()}` }, dispatcher: agent({ cert: true }) });
      await res.body.text();
      expect(res.statusCode).toBe(503);
      const root = await requestSpan(String(res.headers['x-request-id']));
      const introspection = await waitFor(() => receiver.spans().find((s) => s.name === 'cnfguard.introspection' && s.traceId === root.traceId), 'the introspection span', { timeoutMs: 15_000 });
      expect(introspection.status.code).toBe(2);
      expect(introspection.status.message).toMatch(/^[a-z_]+$|^E[A-Z]+$/);
      expect(introspection.status.message).not.toBe('GuardError');
    } finally {
      await down.stop();
    }
  });

  it("an untrusted client's traceparent starts nothing: a new trace, and the upstream gets cnfguard's, not the client's", async () => {
    const theirs = hex(16);
    const res = await request(`${guard.started.url}/untrusted`, { headers: { authorization: `Bearer ${await token()}`, traceparent: `00-${theirs}-${hex(8)}-01`, tracestate: 'vendor=client' }, dispatcher: agent({ cert: true }) });
    await res.body.text();
    expect(res.statusCode).toBe(200);
    const span = await requestSpan(String(res.headers['x-request-id']));
    expect(span.traceId).not.toBe(theirs);
    expect(span.parentSpanId).toBe('');
    const seen = d.upstream.requests.filter((r) => r.url === '/untrusted').at(-1);
    expect(seen?.headers.traceparent).toMatch(new RegExp(`^00-${span.traceId}-[0-9a-f]{16}-01$`));
    expect(seen?.headers.tracestate).toBeUndefined();
  });

  it("a trusted proxy's traceparent is followed: same trace, its span as the parent, passed on upstream", async () => {
    const traceId = hex(16);
    const parent = hex(8);
    const thumbHex = createHash('sha256').update(new X509Certificate(d.pki.certs.clients.client1.cert).raw).digest('hex');
    const res = await fromTrusted(`${guard.started.url}/trusted`, { authorization: `Bearer ${await token()}`, traceparent: `00-${traceId}-${parent}-01`, [CERT_HEADER]: thumbHex });
    expect(res.statusCode).toBe(200);
    const spans = await traceOf(traceId, ['cnfguard.request', 'cnfguard.upstream']);
    expect(spans.find((s) => s.name === 'cnfguard.request')?.parentSpanId).toBe(parent);
    expect(upstreamTraceparent('/trusted').traceId).toBe(traceId);
  });

  it('HTTP/2 and gRPC requests get their spans', async () => {
    const pair = d.pki.certs.clients.client1;
    const session = http2.connect(guard.started.url, { ca: d.pki.certs.ca.cert, cert: pair.cert, key: pair.key });
    const call = (headers: http2.OutgoingHttpHeaders) =>
      new Promise<http2.IncomingHttpHeaders>((resolve, reject) => {
        const stream = session.request(headers);
        let answer: http2.IncomingHttpHeaders = {};
        stream.on('response', (h) => (answer = h));
        stream.on('error', reject);
        stream.resume();
        stream.on('close', () => resolve(answer));
        stream.end();
      });
    try {
      const h2 = await call({ ':path': '/h2', authorization: `Bearer ${await token()}` });
      expect(h2[':status']).toBe(200);
      const grpc = await call({ ':method': 'POST', ':path': '/pkg.Service/Method', 'content-type': 'application/grpc', te: 'trailers' });
      expect(grpc['grpc-status']).toBe('16');
      expect((await requestSpan(String(h2['x-request-id']))).attributes).toMatchObject({ 'cnfguard.edge': 'http2', 'cnfguard.decision': 'allow' });
      expect((await requestSpan(String(grpc['x-request-id']))).attributes).toMatchObject({ 'cnfguard.edge': 'grpc', 'cnfguard.reason': 'credentials_missing', 'http.response.status_code': 401 });
    } finally {
      session.close();
    }
  });

  it('a WebSocket upgrade: its span, and the upstream told this trace', async () => {
    const pair = d.pki.certs.clients.client1;
    const port = Number(new URL(guard.started.url).port);
    const socket = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ca: d.pki.certs.ca.cert, cert: pair.cert, key: pair.key, ALPNProtocols: ['http/1.1'] });
    let answer = '';
    socket.setEncoding('utf8').on('data', (chunk: string) => (answer += chunk));
    socket.write(`GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer ${await token()}\r\n\r\n`);
    await waitFor(() => answer.includes('\r\n\r\n'), () => `the upgrade's answer; got ${JSON.stringify(answer)}`);
    expect(answer).toMatch(/^HTTP\/1\.1 101 /);
    socket.end();
    const requestId = /x-request-id: (\S+)/i.exec(answer)?.[1] ?? '';
    const span = await requestSpan(requestId);
    expect(span.attributes).toMatchObject({ 'cnfguard.edge': 'websocket', 'cnfguard.decision': 'allow', 'cnfguard.proof_method': 'mtls' });
    expect(upstreamTraceparent('/ws').traceId).toBe(span.traceId);
  });

  it('the decision API: a span per check, following the front\'s traceparent (its peers are trusted proxies)', async () => {
    const traceId = hex(16);
    const parent = hex(8);
    const res = await fromTrusted(`${guard.started.decisionUrl as string}/nginx`, { host: 'localhost', 'x-original-method': 'GET', 'x-original-uri': '/checked', authorization: `Bearer ${await token()}`, traceparent: `00-${traceId}-${parent}-01` });
    expect(res.statusCode).toBe(401);
    const span = (await traceOf(traceId, ['cnfguard.request', 'cnfguard.introspection'])).find((s) => s.name === 'cnfguard.request');
    expect(span).toMatchObject({ parentSpanId: parent, attributes: expect.objectContaining({ 'cnfguard.edge': 'decision-api/nginx', 'cnfguard.reason': 'certificate_missing' }) });
  });

  it('exports carry the configured headers, and no token appears in anything exported', () => {
    const exports = receiver.exports();
    expect(exports.length).toBeGreaterThan(0);
    for (const e of exports) expect(e.headers['x-collector-key']).toBe('collector-secret');
    const raw = receiver.raw();
    expect(tokens.length).toBeGreaterThan(5);
    for (const t of tokens) {
      expect(raw.includes(t)).toBe(false);
      // Nor a part of one (a JWT's payload or signature, an opaque token's tail).
      for (const part of t.split('.')) if (part.length >= 16) expect(raw.includes(part)).toBe(false);
    }
  });
});

describe('tracing off', () => {
  /** The @opentelemetry packages a cnfguard process loaded while serving one request with `config`. */
  async function loadedWith(config: Record<string, unknown>): Promise<{ status: number; loaded: string[] }> {
    const file = join(d.pki.dir, `otel-${Math.random().toString(36).slice(2)}.yaml`);
    await writeFile(file, stringify({ ...config, introspection: { ...(config.introspection as object), probeAtStartup: false } }));
    const { stdout } = await promisify(execFile)(process.execPath, [join(import.meta.dirname, '..', 'fixtures', 'otel-loaded.ts'), file]);
    return JSON.parse(stdout) as { status: number; loaded: string[] };
  }

  it('loads nothing of the OpenTelemetry SDK (and so exports nothing); with tracing set, the same check sees the SDK loaded', async () => {
    const off = await loadedWith(baseConfig(d.pki, d.as, d.upstream));
    expect(off.status).toBe(401);
    // prom-client requires @opentelemetry/api itself (exemplars in process_cpu_*), tracing or not:
    // the API alone is a no-op facade. Nothing else may load: no SDK, exporter, resources or core.
    expect(off.loaded.filter((name) => name !== '@opentelemetry/api')).toEqual([]);
    const on = await loadedWith(baseConfig(d.pki, d.as, d.upstream, { tracing: { otlpEndpoint: receiver.url } }));
    expect(on.status).toBe(401);
    expect(on.loaded).toEqual(expect.arrayContaining(['@opentelemetry/api', '@opentelemetry/sdk-trace-base', '@opentelemetry/exporter-trace-otlp-http']));
  }, 30_000);
});

describe('sampling (parent-based)', () => {
  it('sampleRatio 0: a new trace is not exported, a sampled parent is always followed, an unsampled one never', async () => {
    const tracer = createOtelTracer({ otlpEndpoint: receiver.url, serviceName: 'sampling-test', sampleRatio: 0, headers: {}, version: 'test' });
    const [sampled, unsampled] = [hex(16), hex(16)];
    const finish = { requestId: 'r', route: 'default', decision: 'allow', reason: 'bound', status: 200, proofMethod: 'mtls' };
    const fresh = tracer.request('http1', 'GET', undefined);
    const freshUpstream = fresh.upstream(new URL('http://127.0.0.1:1/'));
    // Not recorded, but the upstream still gets a traceparent (flag 00) to line its own traces up.
    expect(freshUpstream.headers.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/);
    freshUpstream.end(200);
    fresh.end(finish);
    tracer.request('http1', 'GET', { traceparent: `00-${sampled}-${hex(8)}-01`, tracestate: undefined }).end(finish);
    tracer.request('http1', 'GET', { traceparent: `00-${unsampled}-${hex(8)}-00`, tracestate: undefined }).end(finish);
    await tracer.shutdown();
    const spans = receiver.spans().filter((s) => s.serviceName === 'sampling-test');
    expect(spans.map((s) => s.traceId)).toEqual([sampled]);
  });
});
