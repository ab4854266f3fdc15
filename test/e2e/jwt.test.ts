// Local JWT access tokens end to end: oidc-provider issues certificate-bound RFC 9068 JWTs,
// cnfguard verifies them against the AS's JWKS without introspecting.
import { createPublicKey } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { decodeJwt, decodeProtectedHeader } from 'jose';
import { generateKeyPair, generateProof } from 'dpop';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAuthorizationServer, type AuthorizationServer, type SigningJwk } from '../../demo/authorization-server.ts';
import { startEchoUpstream, type EchoUpstream } from '../../demo/echo-upstream.ts';
import { manualClock } from '../fixtures/clock.ts';
import { scrape } from '../fixtures/prometheus.ts';
import { baseConfig, createPki, curl, startGuard, type Guard, type Pki } from '../fixtures/stack.ts';
import { waitFor } from '../fixtures/wait.ts';

const JWT_RS = 'https://jwt-rs.cnfguard.test/';

interface JwtStack {
  pki: Pki;
  as: AuthorizationServer;
  upstream: EchoUpstream;
  guard: Guard;
}

/** An AS issuing JWTs for JWT_RS (opaque tokens otherwise), an echo upstream and a guard with `extra`. */
async function startJwtStack(extra: (as: AuthorizationServer) => Record<string, unknown>, now?: () => number): Promise<JwtStack> {
  const pki = await createPki();
  const as = await startAuthorizationServer({ tls: pki.certs.server, jwtResource: JWT_RS });
  const upstream = await startEchoUpstream();
  return { pki, as, upstream, guard: await startGuard(pki, baseConfig(pki, as, upstream, extra(as)), now === undefined ? {} : { now }) };
}

async function stopJwtStack(stack: Partial<JwtStack>): Promise<void> {
  await stack.guard?.stop();
  await stack.upstream?.stop();
  await stack.as?.stop();
  await stack.pki?.cleanup();
}

describe('JWT access tokens (RFC 9068) at cnfguard', () => {
  let pki: Pki;
  let as: AuthorizationServer;
  let upstream: EchoUpstream;
  let guard: Guard;
  const jwtFor = (client: 'client1' | 'client2') => as.issueToken({ clientCert: pki.certs.clients[client], caCert: pki.certs.ca.cert, resource: JWT_RS });

  beforeAll(async () => {
    ({ pki, as, upstream, guard } = await startJwtStack((server) => ({
      jwt: { issuer: server.issuer, jwksUri: `${server.issuer}/jwks`, algorithms: ['RS256', 'ES256', 'PS256'] },
      validation: 'jwt-then-introspection',
      // RFC 9068 §4: a route that verifies JWTs names its audience (the opaque tokens' resource here).
      audience: server.resource,
      routes: [
        { pathPrefix: '/jwt-only', validation: 'jwt', audience: JWT_RS },
        { pathPrefix: '/jwt-dpop', validation: 'jwt', audience: JWT_RS, methods: ['dpop'] },
      ],
    })));
  });

  afterAll(() => stopJwtStack({ pki, as, upstream, guard }));

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

  it('jwt-then-introspection: a valid JWT of this issuer for another resource is refused (aud), without introspection', async () => {
    const token = await jwtFor('client1');
    const before = as.introspectionCalls();
    expect((await curl(pki, `${guard.started.url}/jwt-only/x`, { token, cert: pki.files.client1 })).status).toBe(200);
    const res = await curl(pki, `${guard.started.url}/x`, { token, cert: pki.files.client1 });
    expect(res.status).toBe(401);
    expect(res.headers['www-authenticate']).toContain('error="invalid_token"');
    expect(as.introspectionCalls()).toBe(before);
    expect(guard.logs.entries().some((e) => e.msg === 'request' && e.status === 401 && e.reason === 'jwt_audience_mismatch')).toBe(true);
  });

  it('DPoP-bound JWTs carry cnf.jkt; the proof of that key is accepted with no introspection call, another key refused', async () => {
    const key = await generateKeyPair('ES256');
    const other = await generateKeyPair('ES256');
    const token = await as.issueToken({ clientId: 'plain-app', caCert: pki.certs.ca.cert, resource: JWT_RS, dpopProof: (htu, htm) => generateProof(key, htu, htm) });
    expect(decodeJwt(token).cnf).toMatchObject({ jkt: expect.any(String) });
    const url = `${guard.started.url}/jwt-dpop/orders`;
    const before = as.introspectionCalls();
    const send = async (pair: typeof key) => curl(pki, url, { headers: [`Authorization: DPoP ${token}`, `DPoP: ${await generateProof(pair, url, 'GET', undefined, token)}`] });
    const ok = await send(key);
    expect(ok.status).toBe(200);
    expect(ok.json<{ headers: Record<string, string> }>().headers['x-auth-dpop-jkt']).toBe((decodeJwt(token).cnf as { jkt: string }).jkt);
    const stolen = await send(other);
    expect(stolen.status).toBe(401);
    expect(stolen.headers['www-authenticate']).toMatch(/DPoP error="invalid_token"/);
    expect(as.introspectionCalls()).toBe(before);
  });

  it('a JWT for another audience is refused on a route with an audience', async () => {
    // The introspected (opaque) resource's audience is not the JWT route's.
    const res = await curl(pki, `${guard.started.url}/jwt-only/x`, { token: 'a.b.c', cert: pki.files.client1 });
    expect(res.status).toBe(401);
  });
});

describe('JWKS key rotation and outage', () => {
  let pki: Pki;
  let as: AuthorizationServer;
  let upstream: EchoUpstream;
  let guard: Guard;
  const COOLDOWN_MS = 1000;
  const clock = manualClock({ followRealTime: true });
  const jwtFor = (server: AuthorizationServer) => server.issueToken({ clientCert: pki.certs.clients.client1, caCert: pki.certs.ca.cert, resource: JWT_RS });
  const get = (token: string) => curl(pki, `${guard.started.url}/x`, { token, cert: pki.files.client1 });
  const jwksFetches = async (result: 'success' | 'failure') => (await scrape(guard.started.adminUrl)).value('cnfguard_jwks_fetches_total', { result }) ?? 0;

  beforeAll(async () => {
    ({ pki, as, upstream, guard } = await startJwtStack(
      (server) => ({
        jwt: { issuer: server.issuer, jwksUri: `${server.issuer}/jwks`, algorithms: ['RS256'], refetchCooldownSeconds: COOLDOWN_MS / 1000 },
        validation: 'jwt',
        audience: JWT_RS,
      }),
      clock.now,
    ));
  });

  // `as` is the restarted AS by then.
  afterAll(() => stopJwtStack({ pki, as, upstream, guard }));

  it('a rotated key is fetched on its first token; with the JWKS down, known keys still verify and an unknown key is 503 until it is back', async () => {
    const first = await jwtFor(as);
    expect((await get(first)).status).toBe(200);
    const fetchedAtStart = await jwksFetches('success');

    await as.rotateSigningKey();
    const rotated = await jwtFor(as);
    expect(decodeProtectedHeader(rotated).kid).not.toBe(decodeProtectedHeader(first).kid);
    expect((await get(rotated)).status).toBe(200);
    expect(await jwksFetches('success')).toBe(fetchedAtStart + 1);
    expect((await get(first)).status).toBe(200); // the old key stays published

    // Rotate once more and take the AS (and its JWKS endpoint) away.
    await as.rotateSigningKey();
    const unseen = await jwtFor(as);
    const keys = as.signingKeys();
    const port = Number(new URL(as.issuer).port);
    await as.stop();
    clock.advance(COOLDOWN_MS + 100); // past the cooldown of the last fetch
    expect((await get(first)).status).toBe(200);
    expect((await get(rotated)).status).toBe(200);
    const down = await get(unseen);
    expect(down.status).toBe(503);
    expect(down.headers['www-authenticate'] ?? '').not.toContain('invalid_token'); // the client did nothing wrong
    expect(await jwksFetches('failure')).toBeGreaterThanOrEqual(1);
    expect(guard.logs.entries().some((e) => e.reason === 'jwks_unavailable')).toBe(true);

    // The AS comes back with the same keys on the same address: the unknown key is fetched again.
    as = await startAuthorizationServer({ tls: pki.certs.server, jwtResource: JWT_RS, port, signingKeys: keys });
    // Each try is past the cooldown of the one before.
    await waitFor(async () => {
      clock.advance(COOLDOWN_MS + 100);
      return (await get(unseen)).status === 200;
    }, 'the unknown key to verify once the JWKS is back');
    expect(guard.logs.text()).not.toContain(unseen);
  });
});

describe('a key the AS withdraws from its JWKS (jwt.refreshSeconds)', () => {
  // The JWKS is served by the test (the AS's public keys, or fewer), so that a key can be
  // withdrawn without any token naming an unknown kid.
  let served: Record<string, unknown>[] = [];
  const jwksServer: Server = createServer((_req, res) => {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ keys: served }));
  });
  const publicKeys = (keys: SigningJwk[]) =>
    keys.map(({ kid, alg, use, ...key }) => ({ ...createPublicKey({ key: key as never, format: 'jwk' }).export({ format: 'jwk' }), kid, ...(alg !== undefined && { alg }), ...(use !== undefined && { use }) }));
  const REFRESH_SECONDS = 60;
  const clock = manualClock({ followRealTime: true });
  let pki: Pki;
  let as: AuthorizationServer;
  let upstream: EchoUpstream;
  let guard: Guard;
  const jwtFor = () => as.issueToken({ clientCert: pki.certs.clients.client1, caCert: pki.certs.ca.cert, resource: JWT_RS });
  const get = (token: string) => curl(pki, `${guard.started.url}/x`, { token, cert: pki.files.client1 });
  const jwksFetches = async () => (await scrape(guard.started.adminUrl)).value('cnfguard_jwks_fetches_total', { result: 'success' }) ?? 0;

  beforeAll(async () => {
    await new Promise<void>((resolve) => jwksServer.listen(0, '127.0.0.1', resolve));
    const jwksUri = `http://127.0.0.1:${(jwksServer.address() as AddressInfo).port}/jwks`;
    ({ pki, as, upstream, guard } = await startJwtStack((server) => {
      served = publicKeys(server.signingKeys());
      return { jwt: { issuer: server.issuer, jwksUri, algorithms: ['RS256'], refreshSeconds: REFRESH_SECONDS, refetchCooldownSeconds: 1 }, validation: 'jwt', audience: JWT_RS };
    }, clock.now));
  });

  afterAll(async () => {
    await stopJwtStack({ pki, as, upstream, guard });
    jwksServer.closeAllConnections();
    await new Promise((resolve) => jwksServer.close(resolve));
  });

  it('its tokens are refused once the keys are older than refreshSeconds, cached verifications included; the new key verifies', async () => {
    const token = await jwtFor();
    expect((await get(token)).status).toBe(200);
    expect((await get(token)).status).toBe(200); // now from the verified-JWT cache
    const fetchedAtStart = await jwksFetches();

    // The AS rotates and withdraws the key that signed `token`.
    await as.rotateSigningKey();
    served = publicKeys(as.signingKeys().slice(0, 1));
    expect((await get(token)).status).toBe(200); // keys younger than refreshSeconds: not fetched yet
    expect(await jwksFetches()).toBe(fetchedAtStart);

    clock.advance(REFRESH_SECONDS * 1000);
    // This request starts the fetch and is not held up by it: it meets the keys held.
    expect((await get(token)).status).toBe(200);
    await waitFor(async () => (await jwksFetches()) > fetchedAtStart, 'the JWKS to be fetched again in the background');

    const refused = await get(token);
    expect(refused.status).toBe(401);
    expect(refused.headers['www-authenticate']).toContain('error="invalid_token"');
    expect(guard.logs.entries().some((e) => e.msg === 'request' && e.status === 401 && e.reason === 'jwt_key_unknown')).toBe(true);
    expect((await get(await jwtFor())).status).toBe(200);
  });
});
