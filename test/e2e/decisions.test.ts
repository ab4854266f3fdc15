/**
 * The contract's decision table, row by row, against a real authorization server with curl as
 * the client. One guard with the default (required) route plus routes in every binding mode, and
 * a second guard that trusts only the dev CA and answers a missing certificate with
 * invalid_request/400.
 */
import { createServer } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { thumbprintS256 } from '../../src/tls/certificates.ts';
import { X509Certificate, createHash } from 'node:crypto';
import { baseConfig, curl as curlWith, startDeployment, startGuard, type CurlOptions, type Deployment, type Guard } from '../fixtures/stack.ts';

async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

let d: Deployment;
let guard: Guard;
let strict: Guard;
let bound: string;

beforeAll(async () => {
  d = await startDeployment({ scope: 'read write admin' });
  guard = await startGuard(
    d.pki,
    baseConfig(d.pki, d.as, d.upstream, {
      upstreamTimeoutMs: 700,
      routes: [
        { pathPrefix: '/optional', binding: 'optional' },
        { pathPrefix: '/report', binding: 'report-only' },
        { pathPrefix: '/off', binding: 'off' },
        { pathPrefix: '/admin', scopes: ['admin'] },
        { pathPrefix: '/dead', upstream: `http://127.0.0.1:${await closedPort()}` },
      ],
    }),
  );
  strict = await startGuard(
    d.pki,
    baseConfig(d.pki, d.as, d.upstream, {
      tls: { cert: d.pki.files.server.cert, key: d.pki.files.server.key, clientCa: d.pki.files.ca },
      errors: { realm: 'strict', missingCertificate: { code: 'invalid_request', status: 400 } },
    }),
  );
  bound = await d.tokenFor('client1', 'read write');
});

afterAll(async () => {
  await guard?.stop();
  await strict?.stop();
  await d?.stop();
});

const url = (path: string, g: Guard = guard) => `${g.started.url}${path}`;
const upstreamHits = () => d.upstream.requests.length;

function expectChallenge(result: { headers: Record<string, string> }, realm: string, error: string): void {
  const challenge = result.headers['www-authenticate'] ?? '';
  expect(challenge).toMatch(new RegExp(`^Bearer realm="${realm}", error="${error}", error_description="[^"\\\\]+"`));
}

// One table, two clients: every row over HTTP/1.1 and over HTTP/2 (curl negotiates h2 by ALPN).
describe.each(['1.1', '2'] as const)('over HTTP/%s', (http) => {
  const curl = async (pki: Deployment['pki'], target: string, options: CurlOptions = {}) => {
    const result = await curlWith(pki, target, { ...options, http });
    expect(result.protocol).toBe(`HTTP/${http}`);
    return result;
  };

  describe('requests without usable credentials', () => {
    it('no Authorization header: 401 with a bare Bearer challenge (RFC 6750 §3.1)', async () => {
      const r = await curl(d.pki, url('/x'), { cert: d.pki.files.client1 });
      expect(r.status).toBe(401);
      expect(r.headers['www-authenticate']).toBe('Bearer realm="cnfguard", supported_cnf_methods="mtls"');
      expect(r.json()).not.toHaveProperty('error');
    });

    it.each([
      ['Basic', 'Authorization: Basic YTpi'],
      ['DPoP on a route without dpop', 'Authorization: DPoP abc'],
    ])('another scheme counts as no credentials (%s): 401 without an error code', async (_name, header) => {
      const r = await curl(d.pki, url('/x'), { headers: [header] });
      expect(r.status).toBe(401);
      expect(r.headers['www-authenticate']).toBe('Bearer realm="cnfguard", supported_cnf_methods="mtls"');
    });

    it.each([
      ['empty token', 'Authorization: Bearer'],
      ['two parts', 'Authorization: Bearer abc def'],
      ['comma list', 'Authorization: Bearer abc,Bearer def'],
      ['quote in token', 'Authorization: Bearer ab"c'],
    ])('malformed Authorization (%s): 400 invalid_request', async (_name, header) => {
      const before = upstreamHits();
      const r = await curl(d.pki, url('/x'), { cert: d.pki.files.client1, headers: [header] });
      expect(r.status).toBe(400);
      expectChallenge(r, 'cnfguard', 'invalid_request');
      expect(r.json()).toMatchObject({ error: 'invalid_request' });
      expect(upstreamHits()).toBe(before);
    });

    it('two Authorization headers: 400 invalid_request', async () => {
      const r = await curl(d.pki, url('/x'), { cert: d.pki.files.client1, headers: [`Authorization: Bearer ${bound}`, 'Authorization: Bearer other'] });
      expect(r.status).toBe(400);
      expect(r.json()).toMatchObject({ error: 'invalid_request', error_description: 'more than one Authorization header' });
    });

    it('a token also in the query: 400 invalid_request, and the query never reaches the log', async () => {
      const r = await curl(d.pki, url(`/x?access_token=${bound}`), { cert: d.pki.files.client1, token: bound });
      expect(r.status).toBe(400);
      expect(r.json()).toMatchObject({ error: 'invalid_request' });
      expect(guard.logs.text()).not.toContain('access_token=');
    });

    it('a token also in a form body: 400 invalid_request', async () => {
      const before = upstreamHits();
      const r = await curl(d.pki, url('/x'), { cert: d.pki.files.client1, token: bound, data: `a=1&access_token=${bound}` });
      expect(r.status).toBe(400);
      expect(r.json()).toMatchObject({ error: 'invalid_request', error_description: 'access tokens are not accepted in the request body' });
      expect(upstreamHits()).toBe(before);
    });

    it('a form body without a token is forwarded intact', async () => {
      const r = await curl(d.pki, url('/form'), { cert: d.pki.files.client1, token: bound, data: 'a=1&b=two' });
      expect(r.status).toBe(200);
      expect(r.json()).toMatchObject({ method: 'POST', bodyBytes: 9, bodySha256: createHash('sha256').update('a=1&b=two').digest('hex') });
    });
  });

  describe('token validity at the AS', () => {
    it('unknown token: 401 invalid_token', async () => {
      const r = await curl(d.pki, url('/x'), { cert: d.pki.files.client1, token: 'not-a-real-token' });
      expect(r.status).toBe(401);
      expectChallenge(r, 'cnfguard', 'invalid_token');
    });

    it('revoked token: 401 invalid_token', async () => {
      const token = await d.tokenFor('client1');
      await d.as.revoke(token);
      const r = await curl(d.pki, url('/x'), { cert: d.pki.files.client1, token });
      expect(r.status).toBe(401);
      expect(r.json()).toMatchObject({ error: 'invalid_token', error_description: 'the access token is not active' });
    });
  });

  describe('binding (RFC 8705 §3)', () => {
    it('bound token, matching certificate: forwarded with the verified identity', async () => {
      const r = await curl(d.pki, url('/api/items?page=2'), { cert: d.pki.files.client1, token: bound });
      expect(r.status).toBe(200);
      const echoed = r.json<{ url: string; headers: Record<string, string> }>();
      const x509 = new X509Certificate(d.pki.certs.clients.client1.cert);
      expect(echoed.url).toBe('/api/items?page=2');
      expect(echoed.headers['x-auth-client-id']).toBe('app');
      expect(echoed.headers['x-auth-scope']).toBe('read write');
      expect(echoed.headers['x-auth-cert-thumbprint']).toBe(thumbprintS256(x509.raw));
      expect(echoed.headers['x-forwarded-client-cert']).toBe(
        `Hash=${createHash('sha256').update(x509.raw).digest('hex')};Subject="CN=client1";URI=spiffe://cnfguard.dev/client1;DNS=client1.cnfguard.dev`,
      );
      expect(echoed.headers['x-forwarded-proto']).toBe('https');
      expect(echoed.headers['x-forwarded-for']).toBe('127.0.0.1');
      expect(echoed.headers['x-forwarded-host']).toBe(`127.0.0.1:${guard.started.port}`);
    });

    it('bound token, another certificate: 401 invalid_token, upstream not called', async () => {
      const before = upstreamHits();
      const r = await curl(d.pki, url('/x'), { cert: d.pki.files.client2, token: bound });
      expect(r.status).toBe(401);
      expectChallenge(r, 'cnfguard', 'invalid_token');
      expect(r.json()).toMatchObject({ error_description: 'the access token is bound to a different client certificate' });
      expect(upstreamHits()).toBe(before);
    });

    it('bound token, no certificate: the configured error (default 401 invalid_token)', async () => {
      const r = await curl(d.pki, url('/x'), { token: bound });
      expect(r.status).toBe(401);
      expectChallenge(r, 'cnfguard', 'invalid_token');
    });

    it('bound token, no certificate, errors.missingCertificate = invalid_request/400', async () => {
      const r = await curl(d.pki, url('/x', strict), { token: bound });
      expect(r.status).toBe(400);
      expectChallenge(r, 'strict', 'invalid_request');
    });

    it('certificate not chaining to tls.clientCa: 401 invalid_token even when the token is bound to it', async () => {
      const token = await d.tokenFor('selfSigned');
      const r = await curl(d.pki, url('/x', strict), { cert: d.pki.files.selfSigned, token });
      expect(r.status).toBe(401);
      expect(r.json()).toMatchObject({ error: 'invalid_token', error_description: 'the client certificate is not trusted' });
      // Without tls.clientCa the same self-signed certificate is a valid proof (RFC 8705 §2.2).
      const open = await curl(d.pki, url('/x'), { cert: d.pki.files.selfSigned, token });
      expect(open.status).toBe(200);
    });

    it('a certificate chaining to tls.clientCa is accepted', async () => {
      const r = await curl(d.pki, url('/x', strict), { cert: d.pki.files.client1, token: bound });
      expect(r.status).toBe(200);
    });

    it('unbound token under binding: required: 401 invalid_token', async () => {
      const token = await d.unboundToken();
      const r = await curl(d.pki, url('/x'), { cert: d.pki.files.client1, token });
      expect(r.status).toBe(401);
      expect(r.json()).toMatchObject({ error: 'invalid_token', error_description: 'the access token is not bound to a client certificate' });
    });

    it('unbound token under binding: optional: forwarded; a bound one is still checked there', async () => {
      const token = await d.unboundToken();
      expect((await curl(d.pki, url('/optional/x'), { token })).status).toBe(200);
      expect((await curl(d.pki, url('/optional/x'), { cert: d.pki.files.client2, token: bound })).status).toBe(401);
    });

    it('mismatch under report-only: forwarded, logged and counted as a would-be denial', async () => {
      const counted = async () => {
        const metrics = await (await fetch(`${guard.started.adminUrl}/metrics`)).text();
        return Number(/cnfguard_requests_total\{decision="would_deny",reason="certificate_mismatch",route="routes\[1\]"\} (\d+)/.exec(metrics)?.[1] ?? 0);
      };
      const before = await counted();
      const r = await curl(d.pki, url('/report/x'), { cert: d.pki.files.client2, token: bound });
      expect(r.status).toBe(200);
      expect(await counted()).toBe(before + 1);
      const line = guard.logs.entries().find((e) => e.decision === 'would_deny');
      expect(line).toMatchObject({ reason: 'certificate_mismatch', route: 'routes[1]', status: 200 });
    });

    it('binding: off forwards a bound token on another certificate, but still strips spoofed identity headers', async () => {
      const r = await curl(d.pki, url('/off/x'), { cert: d.pki.files.client2, token: bound, headers: ['x-auth-subject: admin', 'x-forwarded-client-cert: Hash=00'] });
      expect(r.status).toBe(200);
      const headers = r.json<{ headers: Record<string, string> }>().headers;
      expect(headers['x-auth-subject']).toBeUndefined();
      expect(headers['x-forwarded-client-cert']).not.toBe('Hash=00');
    });
  });

  describe('policy and the way to the upstream', () => {
    it('token lacking a route scope: 403 insufficient_scope with scope', async () => {
      const r = await curl(d.pki, url('/admin/x'), { cert: d.pki.files.client1, token: bound });
      expect(r.status).toBe(403);
      expect(r.headers['www-authenticate']).toMatch(/error="insufficient_scope", error_description="[^"]+", scope="admin"/);
      const admin = await d.tokenFor('client1', 'read admin');
      expect((await curl(d.pki, url('/admin/x'), { cert: d.pki.files.client1, token: admin })).status).toBe(200);
    });

    it('spoofed identity headers are replaced by the verified ones', async () => {
      const r = await curl(d.pki, url('/x'), {
        cert: d.pki.files.client1,
        token: bound,
        headers: ['x-auth-subject: admin', 'x-auth-client-id: root', 'X-Auth-Scope: everything', 'x-auth-cert-thumbprint: forged', 'x-forwarded-client-cert: Hash=forged'],
      });
      const headers = r.json<{ headers: Record<string, string> }>().headers;
      expect(headers['x-auth-subject']).toBeUndefined(); // client_credentials tokens have no sub
      expect(headers['x-auth-client-id']).toBe('app');
      expect(headers['x-auth-scope']).toBe('read write');
      expect(headers['x-auth-cert-thumbprint']).toBe(thumbprintS256(new X509Certificate(d.pki.certs.clients.client1.cert).raw));
      expect(headers['x-forwarded-client-cert']).toMatch(/^Hash=[0-9a-f]{64};/);
    });

    it('hop-by-hop headers, and those the Connection header names, are not forwarded', async () => {
      const r = await curl(d.pki, url('/hop'), {
        cert: d.pki.files.client1,
        token: bound,
        headers: ['Connection: keep-alive, x-hop-secret', 'x-hop-secret: 1', 'TE: trailers', 'Proxy-Authorization: Basic eDp5', 'x-end-to-end: kept'],
      });
      const headers = r.json<{ headers: Record<string, string> }>().headers;
      expect(headers['x-end-to-end']).toBe('kept');
      // HTTP/2 has no Connection header (curl does not send it there): x-hop-secret is then end to end.
      for (const name of http === '2' ? ['te', 'proxy-authorization'] : ['x-hop-secret', 'te', 'proxy-authorization']) expect(headers[name]).toBeUndefined();
    });

    it('upstream unreachable: 502', async () => {
      const r = await curl(d.pki, url('/dead/x'), { cert: d.pki.files.client1, token: bound });
      expect(r.status).toBe(502);
      expect(r.json()).toMatchObject({ error: 'bad_gateway' });
    });

    it('upstream too slow: 504', async () => {
      const r = await curl(d.pki, url('/slow'), { cert: d.pki.files.client1, token: bound, headers: ['x-echo-delay-ms: 3000'] });
      expect(r.status).toBe(504);
      expect(r.json()).toMatchObject({ error: 'gateway_timeout' });
    });

    it('no raw token in any log line or metric', async () => {
      const metrics = await (await fetch(`${guard.started.adminUrl}/metrics`)).text();
      for (const text of [guard.logs.text(), strict.logs.text(), metrics]) expect(text).not.toContain(bound);
    });
  });

  describe('path spelling cannot bypass a route', () => {
    it.each([['/%61dmin/x'], ['//admin/x'], ['/x/../admin/x'], ['/./admin/x'], ['/%2e%2e/admin/x']])('%s is judged as /admin and forwarded in canonical form', async (path) => {
      const r = await curl(d.pki, url(path), { cert: d.pki.files.client1, token: bound, extra: ['--path-as-is'] });
      expect(r.status).toBe(403); // the /admin route's scope applies
      const admin = await d.tokenFor('client1', 'read admin');
      const ok = await curl(d.pki, url(`${path}?q=1`), { cert: d.pki.files.client1, token: admin, extra: ['--path-as-is'] });
      expect(ok.status).toBe(200);
      expect(ok.json()).toMatchObject({ url: '/admin/x?q=1' });
    });

    it.each([['/admin%2Fx'], ['/admin%5cx'], ['/admin\\x']])('%s (encoded or literal slash variants) is refused with 400', async (path) => {
      const r = await curl(d.pki, url(path), { cert: d.pki.files.client1, token: bound, extra: ['--path-as-is'] });
      expect(r.status).toBe(400);
      expect(r.json()).toMatchObject({ error: 'invalid_request', error_description: 'the request path cannot be routed' });
    });
  });
});
