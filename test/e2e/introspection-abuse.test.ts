/**
 * Issue 10, the authorization server's side of a denial of service: what unauthenticated traffic
 * with made-up tokens can do to the AS and, through the circuit breaker, to everyone else. The
 * real oidc-provider answers 400 to every JWT-shaped token; a scripted stub plays an AS that
 * refuses cnfguard's own credentials.
 */
import { X509Certificate } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { thumbprintS256 } from '../../src/tls/certificates.ts';
import { startIntrospectionStub, type IntrospectionStub } from '../fixtures/introspection-stub.ts';
import { baseConfig, curl, startDeployment, startGuard, type Deployment, type Guard } from '../fixtures/stack.ts';

let d: Deployment;

beforeAll(async () => {
  d = await startDeployment();
});
afterAll(async () => {
  await d?.stop();
});

/** A JWT-shaped token nobody issued (alg none, `sub` varied so that each one misses the cache). */
const junkJwt = (i: number) => `eyJhbGciOiJub25lIn0.${Buffer.from(JSON.stringify({ sub: `x${i}` })).toString('base64url')}.`;

async function metric(g: Guard, name: string, labels = ''): Promise<number> {
  const text = await (await fetch(`${g.started.adminUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels} `));
  return line === undefined ? 0 : Number(line.split(' ').pop());
}

describe('junk tokens against the real authorization server', () => {
  let guard: Guard;
  beforeAll(async () => {
    guard = await startGuard(d.pki, baseConfig(d.pki, d.as, d.upstream));
  });
  afterAll(async () => {
    await guard?.stop();
  });

  it('a flood of JWT-shaped junk (AS 400) is refused as invalid_token, never opens the breaker, and a valid bound token still passes', async () => {
    const junk = Array.from({ length: 25 }, (_, i) => junkJwt(i));
    const before = d.as.introspectionCalls();
    for (const token of junk) {
      const r = await curl(d.pki, `${guard.started.url}/x`, { token });
      expect(r.status).toBe(401);
      expect(r.json().error).toBe('invalid_token');
    }
    // Each distinct junk token asked the AS once; repeating one is answered from the negative cache.
    expect(d.as.introspectionCalls() - before).toBe(junk.length);
    expect((await curl(d.pki, `${guard.started.url}/x`, { token: junk[0] })).status).toBe(401);
    expect(d.as.introspectionCalls() - before).toBe(junk.length);

    expect(await metric(guard, 'cnfguard_introspection_circuit_open')).toBe(0);
    const valid = await d.tokenFor('client1');
    const ok = await curl(d.pki, `${guard.started.url}/x`, { cert: d.pki.files.client1, token: valid });
    expect(ok.status).toBe(200);
    expect(await metric(guard, 'cnfguard_introspection_requests_total', '{outcome="refused"}')).toBe(junk.length);
    expect(await metric(guard, 'cnfguard_introspection_requests_total', '{outcome="active"}')).toBe(1);
    for (const token of [...junk, valid]) expect(guard.logs.text()).not.toContain(token);
  });
});

/** A guard in front of the introspection stub, which knows `good`: an active token bound to client1's certificate. */
async function guardOnStub(introspection: Record<string, unknown>): Promise<{ stub: IntrospectionStub; g: Guard }> {
  const stub = await startIntrospectionStub(d.pki.certs.server);
  const thumbprint = thumbprintS256(new X509Certificate(d.pki.certs.clients.client1.cert).raw);
  stub.answers.set('good', { active: true, client_id: 'app', exp: Math.floor(Date.now() / 1000) + 600, cnf: { 'x5t#S256': thumbprint } });
  const g = await startGuard(d.pki, baseConfig(d.pki, d.as, d.upstream, { introspection: { url: stub.url, clientId: 'rs', ca: d.pki.files.ca, ...introspection } }));
  return { stub, g };
}

describe('an AS that refuses cnfguard itself (401/403)', () => {
  it('fails closed with 503, does not open the breaker, and warns once naming the URL and status', async () => {
    const { stub, g } = await guardOnStub({ clientSecret: 'not-the-secret', circuitBreaker: { failureThreshold: 2, openSeconds: 30 } });
    try {
      for (let i = 0; i < 6; i++) {
        const r = await curl(d.pki, `${g.started.url}/x`, { cert: d.pki.files.client1, token: `tok-${i}` });
        expect(r.status).toBe(503);
        expect(r.json().error).toBe('temporarily_unavailable');
      }
      // Every request still reached the AS: a credential problem is not an outage the breaker guards against.
      expect(stub.calls()).toBe(6);
      expect(await metric(g, 'cnfguard_introspection_circuit_open')).toBe(0);
      expect(await metric(g, 'cnfguard_introspection_requests_total', '{outcome="misconfigured"}')).toBe(6);
      expect(await metric(g, 'cnfguard_requests_total', '{decision="deny",reason="introspection_misconfigured",route="default"}')).toBe(6);
      const warnings = g.logs.entries().filter((e) => e.msg === "the authorization server refuses cnfguard's introspection calls: check introspection.url and the client credentials");
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toMatchObject({ level: 'warn', url: stub.url, status: 401 });
      expect(g.logs.text()).not.toContain('not-the-secret');
      for (let i = 0; i < 6; i++) expect(g.logs.text()).not.toContain(`tok-${i}`);
    } finally {
      await g.stop();
      await stub.stop();
    }
  });
});

describe('introspection budget', () => {
  it('past the total budget, uncached tokens get 503 with Retry-After and the AS is not called; cached tokens are unaffected', async () => {
    const { stub, g } = await guardOnStub({ clientSecret: 'rs-secret', budget: { totalPerSecond: 0.1, totalBurst: 3 } });
    try {
      expect((await curl(d.pki, `${g.started.url}/x`, { cert: d.pki.files.client1, token: 'good' })).status).toBe(200);
      for (let i = 0; i < 2; i++) expect((await curl(d.pki, `${g.started.url}/x`, { token: `junk-${i}` })).status).toBe(401);
      expect(stub.calls()).toBe(3);
      const over = await curl(d.pki, `${g.started.url}/x`, { token: 'junk-over' });
      expect(over.status).toBe(503);
      expect(Number(over.headers['retry-after'])).toBeGreaterThanOrEqual(1);
      expect(over.json()).toEqual({ error: 'temporarily_unavailable', error_description: expect.any(String) });
      expect(stub.calls()).toBe(3);
      // A cached token and a negatively cached one cost nothing.
      expect((await curl(d.pki, `${g.started.url}/x`, { cert: d.pki.files.client1, token: 'good' })).status).toBe(200);
      expect((await curl(d.pki, `${g.started.url}/x`, { token: 'junk-0' })).status).toBe(401);
      expect(stub.calls()).toBe(3);
      expect(await metric(g, 'cnfguard_introspection_requests_total', '{outcome="over_total_budget"}')).toBe(1);
      expect(await metric(g, 'cnfguard_requests_total', '{decision="deny",reason="introspection_budget_exhausted",route="default"}')).toBe(1);
    } finally {
      await g.stop();
      await stub.stop();
    }
  });
});
