/**
 * RFC 9701 signed introspection answers (`introspection.responseFormat: jwt`): against oidc-provider
 * with `features.jwtIntrospection` (valid signed answers decide, sharing one JWKS cache with local
 * JWT validation), and against an AS that answers plain JSON, signs with another key, names another
 * audience, sends a stale `iat` or another `typ`: each refused, 503 fail closed, a warning naming the
 * cause, counted as outcome "unverified".
 */
import { once } from 'node:events';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAuthorizationServer, type AuthorizationServer } from '../../demo/authorization-server.ts';
import { startEchoUpstream, type EchoUpstream } from '../../demo/echo-upstream.ts';
import { manualClock } from '../fixtures/clock.ts';
import { scrape } from '../fixtures/prometheus.ts';
import { baseConfig, createPki, curl, startGuard, type Guard, type Pki } from '../fixtures/stack.ts';

let pki: Pki;
let upstream: EchoUpstream;

beforeAll(async () => {
  pki = await createPki();
  upstream = await startEchoUpstream();
});
afterAll(async () => {
  await upstream?.stop();
  await pki?.cleanup();
});

const unverified = async (guard: Guard) => (await scrape(guard.started.adminUrl)).value('cnfguard_introspection_requests_total', { outcome: 'unverified' }) ?? 0;

describe('oidc-provider with jwtIntrospection', () => {
  let as: AuthorizationServer;
  let guard: Guard;
  const JWT_RS = 'https://jwt-rs.cnfguard.test/';

  beforeAll(async () => {
    as = await startAuthorizationServer({ tls: pki.certs.server, jwtIntrospection: true, jwtResource: JWT_RS });
    guard = await startGuard(
      pki,
      baseConfig(pki, as, upstream, {
        introspection: { url: as.introspectionUrl, clientId: 'rs', clientSecret: 'rs-secret', ca: pki.files.ca, timeoutMs: 3000, responseFormat: 'jwt', issuer: as.issuer },
        // The same keys for local JWTs: one JWKS cache (one fetch at start) serves both.
        jwt: { issuer: as.issuer, jwksUri: as.jwksUrl, algorithms: ['RS256'] },
        routes: [{ pathPrefix: '/jwt', validation: 'jwt', audience: JWT_RS }],
      }),
    );
  }, 60_000);
  afterAll(async () => {
    await guard?.stop();
    await as?.stop();
  });

  it('decides on the signed answer: a bound token is let through, a revoked one refused, a stolen one refused', async () => {
    const token = await as.issueToken({ clientCert: pki.certs.clients.client1, caCert: pki.certs.ca.cert });
    expect((await curl(pki, `${guard.started.url}/x`, { token, cert: pki.files.client1 })).status).toBe(200);
    const stolen = await as.issueToken({ clientCert: pki.certs.clients.client1, caCert: pki.certs.ca.cert });
    const refused = await curl(pki, `${guard.started.url}/x`, { token: stolen, cert: pki.files.client2 });
    expect(refused.status).toBe(401);
    expect(refused.headers['www-authenticate']).toContain('error="invalid_token"');
    const revoked = await as.issueToken({ clientCert: pki.certs.clients.client1, caCert: pki.certs.ca.cert });
    await as.revoke(revoked);
    expect((await curl(pki, `${guard.started.url}/x`, { token: revoked, cert: pki.files.client1 })).status).toBe(401);
    const metrics = await scrape(guard.started.adminUrl);
    expect(metrics.value('cnfguard_introspection_requests_total', { outcome: 'active' })).toBe(2);
    expect(metrics.value('cnfguard_introspection_requests_total', { outcome: 'inactive' })).toBe(1);
    expect(await unverified(guard)).toBe(0);
  });

  it('without assertion, no assertion JWKS is published on either listener', async () => {
    expect((await fetch(`${guard.started.adminUrl}/jwks.json`)).status).toBe(404);
    expect((await curl(pki, `${guard.started.url}/.well-known/cnfguard/jwks.json`)).status).toBe(404);
  });

  it('shares one JWKS cache per URI with local JWT validation', async () => {
    const jwt = await as.issueToken({ clientCert: pki.certs.clients.client1, caCert: pki.certs.ca.cert, resource: JWT_RS });
    expect((await curl(pki, `${guard.started.url}/jwt/x`, { token: jwt, cert: pki.files.client1 })).status).toBe(200);
    expect((await scrape(guard.started.adminUrl)).value('cnfguard_jwks_fetches_total', { result: 'success' })).toBe(1);
  });
});

type Misbehaviour = 'valid' | 'plain-json' | 'other-key' | 'other-audience' | 'wrong-typ' | 'unlisted-alg';

/** An AS whose answers the test shapes: signed properly, or wrong in one way. */
async function startSigningAs(now: () => number): Promise<{ url: string; jwksUrl: string; issuer: string; mode: Misbehaviour; stop(): Promise<void> }> {
  const good = await generateKeyPair('ES256');
  const other = await generateKeyPair('ES256');
  const jwk = { ...(await exportJWK(good.publicKey)), kid: 'good', alg: 'ES256', use: 'sig' };
  const state = { mode: 'valid' as Misbehaviour };
  const sign = (key: CryptoKey, kid: string, claims: Record<string, unknown>, typ = 'token-introspection+jwt', alg = 'ES256') =>
    new SignJWT(claims).setProtectedHeader({ alg, kid, typ }).setIssuedAt(Math.floor(now() / 1000)).sign(key);
  const server = https.createServer({ cert: pki.certs.server.cert, key: pki.certs.server.key }, (req, res) => {
    req.resume();
    req.on('end', async () => {
      if (req.url === '/jwks') return void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [jwk] }));
      const answer = { active: true, sub: 'alice', client_id: 'plain-app', scope: 'read', exp: Math.floor(now() / 1000) + 3600 };
      const claims = { iss: issuer, aud: 'rs', token_introspection: answer };
      const jwt = (body: string) => res.writeHead(200, { 'content-type': 'application/token-introspection+jwt' }).end(body);
      switch (state.mode) {
        case 'plain-json':
          return void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(answer));
        case 'other-key':
          return jwt(await sign(other.privateKey, 'good', claims));
        case 'other-audience':
          return jwt(await sign(good.privateKey, 'good', { ...claims, aud: 'someone-else' }));
        case 'wrong-typ':
          return jwt(await sign(good.privateKey, 'good', claims, 'JWT'));
        case 'unlisted-alg': {
          const rsa = await generateKeyPair('PS384');
          return jwt(await sign(rsa.privateKey, 'good', claims, 'token-introspection+jwt', 'PS384'));
        }
        default:
          return jwt(await sign(good.privateKey, 'good', claims));
      }
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const issuer = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url: `${issuer}/introspect`,
    jwksUrl: `${issuer}/jwks`,
    issuer,
    get mode() {
      return state.mode;
    },
    set mode(mode) {
      state.mode = mode;
    },
    stop: async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

describe('an AS whose answers are not properly signed', () => {
  // The guard's clock: real time, moved ahead by the stale-iat case (the stub signs with real time).
  const clock = manualClock({ followRealTime: true });
  let as: Awaited<ReturnType<typeof startSigningAs>>;
  let guard: Guard;
  let n = 0;

  beforeAll(async () => {
    as = await startSigningAs(Date.now);
    guard = await startGuard(
      pki,
      {
        ...baseConfig(pki, { introspectionUrl: as.url } as AuthorizationServer, upstream),
        introspection: { url: as.url, clientId: 'rs', clientSecret: 'rs-secret', ca: pki.files.ca, timeoutMs: 3000, responseFormat: 'jwt', issuer: as.issuer, jwksUri: as.jwksUrl, signingAlgorithms: ['ES256'], circuitBreaker: { failureThreshold: 1000 } },
        binding: 'optional',
      },
      { now: clock.now },
    );
  }, 60_000);
  afterAll(async () => {
    await guard?.stop();
    await as?.stop();
  });

  const ask = () => curl(pki, `${guard.started.url}/x`, { token: `token-${++n}` });

  it('accepts the properly signed answer (the stub works)', async () => {
    as.mode = 'valid';
    expect((await ask()).status).toBe(200);
  });

  it.each<[Misbehaviour, RegExp]>([
    ['plain-json', /content type application\/json/],
    ['other-key', /signature does not verify/],
    ['other-audience', /claim aud invalid/],
    ['wrong-typ', /typ is not token-introspection\+jwt/],
    ['unlisted-alg', /alg not in introspection.signingAlgorithms/],
  ])('%s: 503 fail closed, a warning naming the cause, counted unverified', async (mode, cause) => {
    as.mode = mode;
    const before = await unverified(guard);
    const answer = await ask();
    expect(answer.status).toBe(503);
    // Every error carries its challenge (the contract): the same text as an unreachable AS.
    expect(answer.headers['www-authenticate']).toMatch(/^Bearer realm="[^"]*", error="temporarily_unavailable", error_description="the authorization server is unavailable"/);
    expect(await unverified(guard)).toBe(before + 1);
    const warning = guard.logs.entries().filter((e) => e.level === 'warn' && typeof e.cause === 'string').at(-1);
    expect(warning?.cause).toMatch(cause);
    expect(guard.logs.entries().filter((e) => e.msg === 'request').at(-1)?.reason).toBe('introspection_unverified');
  });

  it("a stale iat (the guard's injected clock 61 s ahead of the AS's): refused, counted, the cause named", async () => {
    as.mode = 'valid';
    clock.advance(61_000);
    const before = await unverified(guard);
    expect((await ask()).status).toBe(503);
    expect(await unverified(guard)).toBe(before + 1);
    expect(guard.logs.entries().filter((e) => e.level === 'warn' && typeof e.cause === 'string').at(-1)?.cause).toMatch(/iat 6\d s old/);
  });
});
