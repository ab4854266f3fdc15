/**
 * Traces (issue 28): the child spans of the shared store (a real redis-server) and of a JWKS fetch
 * a request caused (a JWT signed with a key cnfguard has not seen yet), under their request span,
 * exported to the OTLP/HTTP receiver process.
 */
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAuthorizationServer, type AuthorizationServer } from '../../demo/authorization-server.ts';
import { startEchoUpstream, type EchoUpstream } from '../../demo/echo-upstream.ts';
import { startOtlpReceiver, type OtlpReceiver, type ReceivedSpan } from '../fixtures/otlp.ts';
import { findRedisServer, startRedis, type RedisServer } from '../fixtures/redis.ts';
import { baseConfig, createPki, startGuard, type Guard, type Pki } from '../fixtures/stack.ts';
import { waitFor } from '../fixtures/wait.ts';

const JWT_RS = 'https://jwt-rs.cnfguard.test/';
let pki: Pki;
let as: AuthorizationServer;
let upstream: EchoUpstream;
let receiver: OtlpReceiver;
let redis: RedisServer | undefined;
let guard: Guard;
let dispatcher: Agent;

/** The trace of the request `requestId`, once it holds a span named `child`. */
function traceWith(requestId: string, child: string): Promise<ReceivedSpan[]> {
  return waitFor(
    () => {
      const root = receiver.spans().find((s) => s.name === 'cnfguard.request' && s.attributes['cnfguard.request_id'] === requestId);
      const spans = root === undefined ? [] : receiver.spans().filter((s) => s.traceId === root.traceId);
      return spans.some((s) => s.name === child) && spans;
    },
    () => `a ${child} span in the trace of request ${requestId}; received ${JSON.stringify(receiver.spans().map((s) => s.name))}`,
    { timeoutMs: 15_000 },
  );
}

async function get(path: string, token: string): Promise<string> {
  const res = await request(`${guard.started.url}${path}`, { headers: { authorization: `Bearer ${token}` }, dispatcher });
  await res.body.text();
  expect(res.statusCode).toBe(200);
  return String(res.headers['x-request-id']);
}

beforeAll(async () => {
  pki = await createPki();
  as = await startAuthorizationServer({ tls: pki.certs.server, jwtResource: JWT_RS });
  upstream = await startEchoUpstream();
  receiver = await startOtlpReceiver(pki.dir);
  redis = await startRedis();
  const secretFile = join(pki.dir, 'shared-secret');
  await writeFile(secretFile, randomBytes(32), { mode: 0o600 });
  guard = await startGuard(
    pki,
    baseConfig(pki, as, upstream, {
      tracing: { otlpEndpoint: receiver.url },
      jwt: { issuer: as.issuer, jwksUri: `${as.issuer}/jwks`, algorithms: ['RS256'], refetchCooldownSeconds: 0 },
      routes: [{ pathPrefix: '/jwt', validation: 'jwt', audience: JWT_RS }],
      ...(redis !== undefined && { sharedState: { url: redis.url, secretFile, timeoutMs: 1000 } }),
    }),
  );
  const client = pki.certs.clients.client1;
  dispatcher = new Agent({ connect: { ca: pki.certs.ca.cert, cert: client.cert, key: client.key } });
}, 60_000);

afterAll(async () => {
  await dispatcher?.close();
  await guard?.stop();
  await receiver?.stop();
  await redis?.stop();
  await redis?.cleanup();
  await upstream?.stop();
  await as?.stop();
  await pki?.cleanup();
});

describe('tracing: child spans', () => {
  it.skipIf(findRedisServer() === undefined)('the shared store: its calls are children of the request that made them', async () => {
    const token = await as.issueToken({ clientCert: pki.certs.clients.client1, caCert: pki.certs.ca.cert });
    // The store answers once connected; a first request may find it still connecting.
    await waitFor(() => guard.app.metrics.registry.getSingleMetricAsString('cnfguard_shared_state_up').then((text) => text.trim().endsWith(' 1')), 'the shared store to be up');
    const spans = await traceWith(await get('/store', token), 'cnfguard.shared_state.get');
    const root = spans.find((s) => s.name === 'cnfguard.request') as ReceivedSpan;
    const store = spans.filter((s) => s.name.startsWith('cnfguard.shared_state.'));
    expect(store.map((s) => s.name)).toContain('cnfguard.shared_state.get');
    for (const span of store) expect(span.parentSpanId).toBe(root.spanId);
  });

  it('a JWKS fetch a request causes (a key not seen yet) is a child of that request', async () => {
    await as.rotateSigningKey();
    const jwt = await as.issueToken({ clientCert: pki.certs.clients.client1, caCert: pki.certs.ca.cert, resource: JWT_RS });
    const spans = await traceWith(await get('/jwt/x', jwt), 'cnfguard.jwks');
    const root = spans.find((s) => s.name === 'cnfguard.request') as ReceivedSpan;
    expect(spans.find((s) => s.name === 'cnfguard.jwks')?.parentSpanId).toBe(root.spanId);
    expect(root.attributes).toMatchObject({ 'cnfguard.route': 'routes[0]', 'cnfguard.decision': 'allow' });
  });
});
