/**
 * Gateway policy end to end: several routes on one listener, rollout modes, tokens carrying
 * several or unknown confirmation methods, audience and scope, claim headers, and RFC 9728
 * discovery fetched by a real client.
 */
import { X509Certificate } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { thumbprintS256 } from '../../src/tls/certificates.ts';
import { startIntrospectionStub, type IntrospectionStub } from '../fixtures/introspection-stub.ts';
import { baseConfig, curl, startDeployment, startGuard, type Deployment, type Guard } from '../fixtures/stack.ts';

const RESOURCE = 'https://rs.cnfguard.test/';
let d: Deployment;
let stub: IntrospectionStub;
let gateway: Guard;
let lenient: Guard;
let strictStub: Guard;
let bound: string;
let client1: string;

function metricValue(text: string, name: string, labels: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}}`));
  return line === undefined ? 0 : Number(line.split(' ').pop());
}

beforeAll(async () => {
  d = await startDeployment({ scope: 'read write admin' });
  stub = await startIntrospectionStub(d.pki.certs.server);
  client1 = thumbprintS256(new X509Certificate(d.pki.certs.clients.client1.cert).raw);
  gateway = await startGuard(
    d.pki,
    baseConfig(d.pki, d.as, d.upstream, {
      resource: RESOURCE,
      authorizationServers: [d.as.issuer],
      audience: RESOURCE,
      routes: [
        { host: '*.tenants.test', binding: 'optional' },
        { host: 'legacy.test', pathPrefix: '/report', binding: 'report-only' },
        { pathPrefix: '/admin', scopes: ['admin'], resource: `${RESOURCE}admin` },
        { pathPrefix: '/elsewhere', audience: 'https://other.example/' },
        { pathPrefix: '/naked', stripAuthorization: true, headers: { clientId: 'x-client' } },
        { pathPrefix: '/picky', errors: { missingCertificate: { code: 'certificate_required', status: 401 } } },
      ],
    }),
  );
  const stubConfig = (unknownMethods: 'reject' | 'ignore') =>
    baseConfig(d.pki, d.as, d.upstream, {
      introspection: { url: stub.url, clientId: 'rs', clientSecret: 'rs-secret', ca: d.pki.files.ca },
      cnf: { unknownMethods },
      claimHeaders: { 'x-tenant': 'claims.tenant_id', 'x-groups': 'claims.ext.groups' },
      routes: [
        { pathPrefix: '/optional', binding: 'optional' },
        // A managed name with an underscore (a warning, not an error): both client spellings are removed.
        { pathPrefix: '/underscore', claimHeaders: { x_region: 'claims.tenant_id' } },
      ],
    });
  lenient = await startGuard(d.pki, stubConfig('ignore'));
  strictStub = await startGuard(d.pki, stubConfig('reject'));
  bound = await d.tokenFor('client1', 'read write');
});

afterAll(async () => {
  for (const g of [gateway, lenient, strictStub]) await g?.stop();
  await stub?.stop();
  await d?.stop();
});

const at = (g: Guard, path: string) => `${g.started.url}${path}`;

describe('routes on one listener', () => {
  it('a wildcard host route with binding optional and the default required route differ for one unbound token', async () => {
    const token = await d.unboundToken();
    expect((await curl(d.pki, at(gateway, '/x'), { token, headers: ['Host: acme.tenants.test'] })).status).toBe(200);
    expect((await curl(d.pki, at(gateway, '/x'), { token, headers: ['Host: tenants.test'] })).status).toBe(401);
    expect((await curl(d.pki, at(gateway, '/x'), { token })).status).toBe(401);
  });

  it('report-only forwards what required would deny, and the per-route would-deny metric moves', async () => {
    const metrics = async () => (await fetch(`${gateway.started.adminUrl}/metrics`)).text();
    const labels = 'decision="would_deny",reason="certificate_mismatch",route="routes[1]"';
    const before = metricValue(await metrics(), 'cnfguard_requests_total', labels);
    const r = await curl(d.pki, at(gateway, '/report/x'), { cert: d.pki.files.client2, token: bound, headers: ['Host: legacy.test'] });
    expect(r.status).toBe(200);
    expect(metricValue(await metrics(), 'cnfguard_requests_total', labels)).toBe(before + 1);
    // The same request on another host is not on the report-only route.
    expect((await curl(d.pki, at(gateway, '/report/x'), { cert: d.pki.files.client2, token: bound })).status).toBe(401);
  });

  it('a per-route missing-certificate error overrides the global one', async () => {
    const r = await curl(d.pki, at(gateway, '/picky'), { token: bound });
    expect(r.status).toBe(401);
    expect(r.json()).toMatchObject({ error: 'certificate_required' });
    expect((await curl(d.pki, at(gateway, '/x'), { token: bound })).json()).toMatchObject({ error: 'invalid_token' });
  });

  it('stripAuthorization drops the token, and per-route header names apply', async () => {
    const r = await curl(d.pki, at(gateway, '/naked/x'), { cert: d.pki.files.client1, token: bound, headers: ['x-auth-client-id: forged'] });
    const headers = r.json<{ headers: Record<string, string> }>().headers;
    expect(headers.authorization).toBeUndefined();
    expect(headers['x-client']).toBe('app');
    expect(headers['x-auth-client-id']).toBeUndefined(); // a managed name on another route is still stripped
  });
});

describe('audience and scope', () => {
  it('a token for another audience: 401 invalid_token that names no secret', async () => {
    const r = await curl(d.pki, at(gateway, '/elsewhere'), { cert: d.pki.files.client1, token: bound });
    expect(r.status).toBe(401);
    expect(r.json()).toEqual({ error: 'invalid_token', error_description: 'the access token is not intended for this resource' });
    expect(r.body).not.toContain('other.example');
    expect((await curl(d.pki, at(gateway, '/x'), { cert: d.pki.files.client1, token: bound })).status).toBe(200);
  });

  it('missing scope: 403 insufficient_scope carrying the route scopes and its metadata URL', async () => {
    const r = await curl(d.pki, at(gateway, '/admin/users'), { cert: d.pki.files.client1, token: bound });
    expect(r.status).toBe(403);
    expect(r.headers['www-authenticate']).toBe(
      `Bearer realm="cnfguard", error="insufficient_scope", error_description="the access token lacks a required scope", scope="admin", resource_metadata="https://rs.cnfguard.test/.well-known/oauth-protected-resource/admin", supported_cnf_methods="mtls"`,
    );
  });
});

describe('RFC 9728 discovery', () => {
  it('serves the metadata to a real client without a token', async () => {
    const r = await curl(d.pki, at(gateway, '/.well-known/oauth-protected-resource'));
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toBe('application/json');
    expect(r.json()).toEqual({
      resource: RESOURCE,
      authorization_servers: [d.as.issuer],
      bearer_methods_supported: ['header'],
      tls_client_certificate_bound_access_tokens: true,
    });
    const admin = await curl(d.pki, at(gateway, '/.well-known/oauth-protected-resource/admin'));
    expect(admin.json()).toMatchObject({ resource: `${RESOURCE}admin`, scopes_supported: ['admin'], tls_client_certificate_bound_access_tokens: true });
  });

  it('every challenge points at the metadata, including the bare one', async () => {
    const bare = await curl(d.pki, at(gateway, '/x'));
    expect(bare.headers['www-authenticate']).toBe('Bearer realm="cnfguard", resource_metadata="https://rs.cnfguard.test/.well-known/oauth-protected-resource", supported_cnf_methods="mtls"');
    const stolen = await curl(d.pki, at(gateway, '/x'), { cert: d.pki.files.client2, token: bound });
    expect(stolen.headers['www-authenticate']).toMatch(/error="invalid_token", .*resource_metadata="https:\/\/rs\.cnfguard\.test\/\.well-known\/oauth-protected-resource", supported_cnf_methods="mtls"$/);
  });

  it('without a configured resource there is no metadata and no resource_metadata parameter', async () => {
    const r = await curl(d.pki, at(lenient, '/.well-known/oauth-protected-resource'));
    expect(r.status).toBe(401);
    expect(r.headers['www-authenticate']).toBe('Bearer realm="cnfguard", supported_cnf_methods="mtls"');
  });
});

describe('confirmation methods', () => {
  const answer = (cnf: Record<string, unknown> | undefined, extra: Record<string, unknown> = {}) => ({
    active: true,
    client_id: 'app',
    scope: 'read',
    token_type: 'Bearer',
    exp: Math.floor(Date.now() / 1000) + 300,
    ...(cnf && { cnf }),
    ...extra,
  });

  it('an unknown cnf member is refused under reject, then judged on the known member under ignore', async () => {
    stub.answers.set('tok-s512', answer({ 'x5t#S256': client1, 'x5t#S512': 'c29tZXRoaW5nIGVsc2U' }));
    const rejected = await curl(d.pki, at(strictStub, '/x'), { cert: d.pki.files.client1, token: 'tok-s512' });
    expect(rejected.status).toBe(401);
    expect(rejected.json()).toEqual({ error: 'invalid_token', error_description: 'the access token is bound by a confirmation method this server cannot verify' });
    expect((await curl(d.pki, at(lenient, '/x'), { cert: d.pki.files.client1, token: 'tok-s512' })).status).toBe(200);
    expect((await curl(d.pki, at(lenient, '/x'), { cert: d.pki.files.client2, token: 'tok-s512' })).status).toBe(401);
  });

  it('a DPoP-bound token (cnf.jkt) sent as Bearer is refused on every route, even under ignore and optional', async () => {
    stub.answers.set('tok-jkt', answer({ jkt: '0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I' }));
    for (const guard of [strictStub, lenient]) {
      const r = await curl(d.pki, at(guard, '/optional'), { cert: d.pki.files.client1, token: 'tok-jkt' });
      expect(r.status).toBe(401);
      expect(r.json()).toMatchObject({ error: 'invalid_token', error_description: 'the access token cannot be used with the Bearer scheme' });
    }
  });

  it('a token carrying only an unknown member is unbound under ignore: refused where required, forwarded where optional', async () => {
    stub.answers.set('tok-unknown', answer({ 'x5t#S512': 'c29tZXRoaW5nIGVsc2U' }));
    expect((await curl(d.pki, at(lenient, '/x'), { cert: d.pki.files.client1, token: 'tok-unknown' })).json()).toMatchObject({
      error_description: 'the access token is not bound to a client certificate',
    });
    expect((await curl(d.pki, at(lenient, '/optional'), { cert: d.pki.files.client1, token: 'tok-unknown' })).status).toBe(200);
    expect((await curl(d.pki, at(strictStub, '/optional'), { cert: d.pki.files.client1, token: 'tok-unknown' })).status).toBe(401);
  });

  it('a token with token_type DPoP is refused on the Bearer scheme', async () => {
    stub.answers.set('tok-dpop', answer({ 'x5t#S256': client1 }, { token_type: 'DPoP' }));
    const r = await curl(d.pki, at(lenient, '/x'), { cert: d.pki.files.client1, token: 'tok-dpop' });
    expect(r.status).toBe(401);
    expect(r.json()).toMatchObject({ error: 'invalid_token', error_description: 'the access token cannot be used with the Bearer scheme' });
  });

  it('claims map to headers; spoofed copies are removed', async () => {
    stub.answers.set('tok-claims', answer({ 'x5t#S256': client1 }, { tenant_id: 'acme', ext: { groups: ['ops', 'dev'] } }));
    const r = await curl(d.pki, at(lenient, '/x'), { cert: d.pki.files.client1, token: 'tok-claims', headers: ['x-tenant: evil', 'x-groups: admins'] });
    const headers = r.json<{ headers: Record<string, string> }>().headers;
    expect(headers['x-tenant']).toBe('acme');
    expect(headers['x-groups']).toBe('["ops","dev"]');
    stub.answers.set('tok-noclaims', answer({ 'x5t#S256': client1 }));
    const bare = await curl(d.pki, at(lenient, '/x'), { cert: d.pki.files.client1, token: 'tok-noclaims', headers: ['x-tenant: evil'] });
    expect(bare.json<{ headers: Record<string, string> }>().headers['x-tenant']).toBeUndefined();
  });

  it('a claim header named with an underscore: the client\'s copies in either spelling are removed (CGI and WSGI read both as one)', async () => {
    stub.answers.set('tok-claims', answer({ 'x5t#S256': client1 }, { tenant_id: 'acme', ext: { groups: ['ops', 'dev'] } }));
    stub.answers.set('tok-noclaims', answer({ 'x5t#S256': client1 }));
    const forged = ['x_region: evil', 'x-region: evil'];
    const claimed = (await curl(d.pki, at(lenient, '/underscore/a'), { cert: d.pki.files.client1, token: 'tok-claims', headers: forged })).json<{ headers: Record<string, string> }>().headers;
    expect(claimed['x_region']).toBe('acme');
    expect(claimed['x-region']).toBeUndefined();
    const bare = (await curl(d.pki, at(lenient, '/underscore/b'), { cert: d.pki.files.client1, token: 'tok-noclaims', headers: forged })).json<{ headers: Record<string, string> }>().headers;
    expect(bare['x_region']).toBeUndefined();
    expect(bare['x-region']).toBeUndefined();
  });
});
