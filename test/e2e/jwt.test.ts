// Local JWT access tokens end to end: oidc-provider issues certificate-bound RFC 9068 JWTs,
// cnfguard verifies them against the AS's JWKS without introspecting.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAuthorizationServer, type AuthorizationServer } from '../../demo/authorization-server.ts';
import { startEchoUpstream, type EchoUpstream } from '../../demo/echo-upstream.ts';
import { baseConfig, createPki, curl, startGuard, type Guard, type Pki } from '../fixtures/stack.ts';

const JWT_RS = 'https://jwt-rs.cnfguard.test/';

describe('JWT access tokens (RFC 9068) at cnfguard', () => {
  let pki: Pki;
  let as: AuthorizationServer;
  let upstream: EchoUpstream;
  let guard: Guard;
  const jwtFor = (client: 'client1' | 'client2') => as.issueToken({ clientCert: pki.certs.clients[client], caCert: pki.certs.ca.cert, resource: JWT_RS });

  beforeAll(async () => {
    pki = await createPki();
    as = await startAuthorizationServer({ tls: pki.certs.server, jwtResource: JWT_RS });
    upstream = await startEchoUpstream();
    guard = await startGuard(
      pki,
      baseConfig(pki, as, upstream, {
        jwt: { issuer: as.issuer, jwksUri: `${as.issuer}/jwks`, algorithms: ['RS256', 'ES256', 'PS256'] },
        validation: 'jwt-then-introspection',
        routes: [{ pathPrefix: '/jwt-only', validation: 'jwt', audience: JWT_RS }],
      }),
    );
  });

  afterAll(async () => {
    await guard?.stop();
    await upstream?.stop();
    await as?.stop();
    await pki?.cleanup();
  });

  it('accepts a certificate-bound JWT with no introspection call, and refuses it with another certificate', async () => {
    const token = await jwtFor('client1');
    expect(token.split('.')).toHaveLength(3);
    const before = as.introspectionCalls();
    const ok = await curl(pki, `${guard.started.url}/jwt-only/x`, { token, cert: pki.files.client1 });
    expect(ok.status).toBe(200);
    const again = await curl(pki, `${guard.started.url}/jwt-only/x`, { token, cert: pki.files.client1 });
    expect(again.status).toBe(200);
    const stolen = await curl(pki, `${guard.started.url}/jwt-only/x`, { token, cert: pki.files.client2 });
    expect(stolen.status).toBe(401);
    expect(stolen.headers['www-authenticate']).toContain('error="invalid_token"');
    expect(as.introspectionCalls()).toBe(before);
    const metrics = await (await fetch(`${guard.started.adminUrl}/metrics`)).text();
    expect(metrics).toMatch(/cnfguard_token_validations_total\{source="jwt",result="ok"\} 3/);
    const line = guard.logs.entries().find((e) => e.msg === 'request' && e.status === 200);
    expect(line?.validation).toBe('jwt');
    expect(guard.logs.text()).not.toContain(token);
  });

  it('jwt-then-introspection: an opaque token is introspected; a tampered JWT of this issuer is refused without introspection', async () => {
    const opaque = await as.issueToken({ clientCert: pki.certs.clients.client1, caCert: pki.certs.ca.cert });
    const before = as.introspectionCalls();
    expect((await curl(pki, `${guard.started.url}/x`, { token: opaque, cert: pki.files.client1 })).status).toBe(200);
    expect(as.introspectionCalls()).toBe(before + 1);
    const jwt = await jwtFor('client1');
    const [h, p, sig] = jwt.split('.') as [string, string, string];
    const tampered = `${h}.${p}.${sig.slice(0, -4)}AAAA`;
    const res = await curl(pki, `${guard.started.url}/x`, { token: tampered, cert: pki.files.client1 });
    expect(res.status).toBe(401);
    expect(as.introspectionCalls()).toBe(before + 1);
  });

  it('a JWT for another audience is refused on a route with an audience', async () => {
    // The introspected (opaque) resource's audience is not the JWT route's.
    const res = await curl(pki, `${guard.started.url}/jwt-only/x`, { token: 'a.b.c', cert: pki.files.client1 });
    expect(res.status).toBe(401);
  });
});
