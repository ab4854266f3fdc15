/**
 * The operator's metrics, read from a real /metrics scrape of cnfguard on 127.0.0.1 after real
 * TLS requests: build info, responses by route and status, end-to-end duration, open connections,
 * token cache entries, and route labels taken from a route's `name` (falling back to `routes[N]`).
 * The contract's series (`cnfguard_requests_total{decision,reason,route}` and the rest) stay.
 */
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { AggregatorRegistry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEchoUpstream, type EchoUpstream } from '../../demo/echo-upstream.ts';
import { createMetrics } from '../../src/admin/metrics.ts';
import { thumbprintS256 } from '../../src/tls/certificates.ts';
import { NODE_VERSION, VERSION } from '../../src/version.ts';
import { startIntrospectionStub, type IntrospectionStub } from '../fixtures/introspection-stub.ts';
import { parseScrape, scrape } from '../fixtures/prometheus.ts';
import { connectTls } from '../fixtures/raw-tls.ts';
import { createPki, curl, startGuard, type Guard, type Pki } from '../fixtures/stack.ts';

let pki: Pki;
let stub: IntrospectionStub;
let upstream: EchoUpstream;
let guard: Guard;

beforeAll(async () => {
  pki = await createPki();
  stub = await startIntrospectionStub(pki.certs.server);
  upstream = await startEchoUpstream();
  const client1 = thumbprintS256(new X509Certificate(pki.certs.clients.client1.cert).raw);
  stub.answers.set('tok-bound', { active: true, client_id: 'app', scope: 'read', token_type: 'Bearer', exp: Math.floor(Date.now() / 1000) + 600, cnf: { 'x5t#S256': client1 } });
  guard = await startGuard(pki, {
    listen: { host: '127.0.0.1', port: 0 },
    tls: { cert: pki.files.server.cert, key: pki.files.server.key },
    introspection: { url: stub.url, clientId: 'rs', clientSecret: 'rs-secret', ca: pki.files.ca },
    upstream: upstream.url,
    admin: { host: '127.0.0.1', port: 0 },
    routes: [
      { name: 'admin-api', pathPrefix: '/admin' },
      { pathPrefix: '/unnamed' },
    ],
  });
});

afterAll(async () => {
  await guard?.stop();
  await upstream?.stop();
  await stub?.stop();
  await pki?.cleanup();
});

const at = (path: string) => `${guard.started.url}${path}`;

describe('/metrics after real requests', () => {
  it('reports the build: version and Node, value 1', async () => {
    const metrics = await scrape(guard.started.adminUrl);
    expect(metrics.types.get('cnfguard_build_info')).toBe('gauge');
    expect(metrics.value('cnfguard_build_info', { version: VERSION, node_version: NODE_VERSION })).toBe(1);
    expect(VERSION).toMatch(/^\d+\.\d+\.\d+/);
  });

  it('labels series by route name, by position for an unnamed route, and keeps the contract series', async () => {
    expect((await curl(pki, at('/admin/x'), { cert: pki.files.client1, token: 'tok-bound' })).status).toBe(200);
    expect((await curl(pki, at('/admin/x'), { cert: pki.files.client2, token: 'tok-bound' })).status).toBe(401);
    expect((await curl(pki, at('/unnamed/x'), { cert: pki.files.client1, token: 'tok-bound' })).status).toBe(200);
    expect((await curl(pki, at('/'), { cert: pki.files.client1 })).status).toBe(401);
    const metrics = await scrape(guard.started.adminUrl);

    expect(metrics.value('cnfguard_responses_total', { route: 'admin-api', status: '200' })).toBe(1);
    expect(metrics.value('cnfguard_responses_total', { route: 'admin-api', status: '401' })).toBe(1);
    expect(metrics.value('cnfguard_responses_total', { route: 'routes[1]', status: '200' })).toBe(1);
    expect(metrics.value('cnfguard_responses_total', { route: 'default', status: '401' })).toBe(1);
    // The named route is never also counted under its position.
    expect(metrics.samples.filter((s) => s.labels.route === 'routes[0]')).toEqual([]);

    expect(metrics.value('cnfguard_requests_total', { decision: 'allow', reason: 'bound', route: 'admin-api' })).toBe(1);
    expect(metrics.value('cnfguard_requests_total', { decision: 'deny', reason: 'certificate_mismatch', route: 'admin-api' })).toBe(1);
    expect(metrics.value('cnfguard_requests_total', { decision: 'deny', reason: 'credentials_missing', route: 'default' })).toBe(1);
    expect(metrics.value('cnfguard_upstream_duration_seconds_count', { route: 'admin-api' })).toBe(1);
    expect(metrics.value('cnfguard_verified_requests_total', { route: 'admin-api', method: 'mtls' })).toBe(1);
    for (const name of ['cnfguard_introspection_requests_total', 'cnfguard_token_cache_hits_total', 'cnfguard_token_cache_misses_total', 'cnfguard_introspection_duration_seconds_count']) {
      expect(metrics.names, name).toContain(name);
    }

    // End to end: every request is in the histogram of its route, and takes its time.
    expect(metrics.types.get('cnfguard_request_duration_seconds')).toBe('histogram');
    expect(metrics.value('cnfguard_request_duration_seconds_count', { route: 'admin-api' })).toBe(2);
    expect(metrics.value('cnfguard_request_duration_seconds_count', { route: 'default' })).toBe(1);
    expect(metrics.value('cnfguard_request_duration_seconds_sum', { route: 'admin-api' })).toBeGreaterThan(0);
    expect(metrics.value('cnfguard_request_duration_seconds_bucket', { route: 'admin-api', le: '+Inf' })).toBe(2);
  });

  it('counts token cache entries: active and negative introspection answers', async () => {
    expect((await curl(pki, at('/x'), { cert: pki.files.client1, token: 'tok-unknown' })).status).toBe(401);
    const metrics = await scrape(guard.started.adminUrl);
    expect(metrics.value('cnfguard_token_cache_entries', { cache: 'active' })).toBe(guard.app.tokens.size);
    expect(metrics.value('cnfguard_token_cache_entries', { cache: 'active' })).toBe(1);
    expect(metrics.value('cnfguard_token_cache_entries', { cache: 'negative' })).toBe(1);
    expect(metrics.value('cnfguard_token_cache_entries', { cache: 'jwt' })).toBe(0);
  });

  it('counts TLS handshakes that fail before any request: plain HTTP to the TLS port, a client that does not trust the server', async () => {
    const before = (await scrape(guard.started.adminUrl)).value('cnfguard_tls_handshake_failures_total') ?? 0;
    expect(before).toBe(0); // exported at 0 from the start
    // Plain HTTP on the TLS port.
    const plain = await fetch(`http://127.0.0.1:${guard.started.port}/`).catch(() => undefined);
    expect(plain).toBeUndefined();
    // A client with no trust in the server's CA.
    await expect(connectTls(guard.started.port, { ca: pki.certs.clients.client1.cert })).rejects.toThrow();
    await expect.poll(async () => (await scrape(guard.started.adminUrl)).value('cnfguard_tls_handshake_failures_total')).toBe(before + 2);
  });

  it('counts open connections on the proxy listener while they are open', async () => {
    const idle = (await scrape(guard.started.adminUrl)).value('cnfguard_open_connections');
    const connections = await Promise.all([1, 2, 3].map(() => connectTls(guard.started.port, { ca: pki.certs.ca.cert })));
    expect((await scrape(guard.started.adminUrl)).value('cnfguard_open_connections')).toBe(idle! + 3);
    for (const { socket } of connections) socket.destroy();
    await Promise.all(connections.map(({ socket }) => (socket.closed ? undefined : once(socket, 'close'))));
    await expect.poll(async () => (await scrape(guard.started.adminUrl)).value('cnfguard_open_connections')).toBe(idle);
  });
});

describe('across cluster workers', () => {
  it('shows build info once while counters add up', async () => {
    const workers = [createMetrics({ defaultMetrics: false }), createMetrics({ defaultMetrics: false })];
    for (const worker of workers) worker.responses.inc({ route: 'default', status: '200' });
    const aggregated = AggregatorRegistry.aggregate(await Promise.all(workers.map((w) => w.registry.getMetricsAsJSON())));
    const metrics = parseScrape(await aggregated.metrics());
    expect(metrics.value('cnfguard_build_info', { version: VERSION })).toBe(1);
    expect(metrics.value('cnfguard_responses_total', { route: 'default', status: '200' })).toBe(2);
  });
});
