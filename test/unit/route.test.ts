import { describe, expect, it } from 'vitest';
import { configWarnings } from '../../src/config/checks.ts';
import { configSchema } from '../../src/config/schema.ts';
import { compileRoutes, hostMatches, hostName, matchRoute, pathMatches, resourceMetadataUrl, shadowedRoutes, type RouteTable } from '../../src/pipeline/route.ts';
import { minimalSettings } from '../fixtures/config.ts';

function table(routes: unknown[], extra: Record<string, unknown> = {}): RouteTable {
  return compileRoutes(minimalSettings({ routes, ...extra }));
}

describe('hostName', () => {
  it.each<[string | undefined, string]>([
    [undefined, ''],
    ['', ''],
    ['api.example', 'api.example'],
    ['API.Example', 'api.example'],
    ['api.example:8443', 'api.example'],
    ['API.EXAMPLE:443', 'api.example'],
    ['127.0.0.1', '127.0.0.1'],
    ['127.0.0.1:8443', '127.0.0.1'],
    ['[::1]', '[::1]'],
    ['[::1]:8443', '[::1]'],
    ['[2001:DB8::1]:443', '[2001:db8::1]'],
    ['localhost:', 'localhost'],
    ['api.example.', 'api.example'],
    ['API.example.:8443', 'api.example'],
  ])('%j -> %j', (header, expected) => {
    expect(hostName(header)).toBe(expected);
  });
});

describe('pathMatches', () => {
  it.each<[string, string, boolean]>([
    ['/admin', '/admin', true],
    ['/admin', '/admin/', true],
    ['/admin', '/admin/users', true],
    ['/admin', '/administrator', false],
    ['/admin', '/admin-panel', false],
    ['/admin', '/adm', false],
    ['/admin', '/', false],
    ['/admin', '/Admin', false],
    ['/admin', '/api/admin', false],
    ['/admin/', '/admin/x', true],
    ['/admin/', '/admin/', true],
    // A prefix guards its segment however it is written: with or without a trailing slash.
    ['/admin/', '/admin', true],
    ['/admin/', '/admin;x', true],
    ['/admin/', '/administrator', false],
    ['/admin//', '/admin', true],
    ['/a/b/', '/a/b', true],
    ['/', '/', true],
    ['/', '/anything/at/all', true],
    ['/a/b', '/a/b/c', true],
    ['/a/b', '/a/bc', false],
  ])('prefix %j, path %j -> %s', (prefix, path, expected) => {
    expect(pathMatches(prefix, path)).toBe(expected);
  });
});

describe('hostMatches', () => {
  it.each<[string, string, boolean]>([
    ['api.example', 'api.example', true],
    ['api.example', 'other.example', false],
    ['api.example', 'x.api.example', false],
    ['*.example.com', 'a.example.com', true],
    ['*.example.com', 'a.b.example.com', true],
    ['*.example.com', 'example.com', false],
    ['*.example.com', 'badexample.com', false],
    ['*.example.com', '.example.com', false],
    ['*.example.com', 'example.com.evil', false],
    ['[::1]', '[::1]', true],
  ])('pattern %j, host %j -> %s', (pattern, host, expected) => {
    expect(hostMatches(pattern, host)).toBe(expected);
  });
});

describe('shadowedRoutes', () => {
  type R = { host?: string; pathPrefix?: string };
  it.each<[string, R[], [number, number][]]>([
    ['no routes', [], []],
    ['disjoint paths', [{ pathPrefix: '/a' }, { pathPrefix: '/b' }], []],
    ['a longer prefix after a shorter one', [{ pathPrefix: '/public' }, { pathPrefix: '/public/secret' }], [[1, 0]]],
    ['a shorter prefix after a longer one', [{ pathPrefix: '/public/secret' }, { pathPrefix: '/public' }], []],
    ['the same route twice', [{ pathPrefix: '/a', host: 'h' }, { pathPrefix: '/a', host: 'h' }], [[1, 0]]],
    ['a host-only route shadows that host with any path', [{ host: 'h' }, { host: 'h', pathPrefix: '/a' }], [[1, 0]]],
    ['a path-only route shadows that path on any host', [{ pathPrefix: '/a' }, { host: 'h', pathPrefix: '/a/b' }], [[1, 0]]],
    ['a host+path route does not shadow the path on other hosts', [{ host: 'h', pathPrefix: '/a' }, { pathPrefix: '/a' }], []],
    ['a wildcard shadows a name below it', [{ host: '*.example.com' }, { host: 'a.example.com' }], [[1, 0]]],
    ['a wildcard shadows a narrower wildcard', [{ host: '*.example.com' }, { host: '*.a.example.com' }], [[1, 0]]],
    ['a wildcard does not shadow its apex', [{ host: '*.example.com' }, { host: 'example.com' }], []],
    ['a narrower wildcard does not shadow a wider one', [{ host: '*.a.example.com' }, { host: '*.example.com' }], []],
    ['"/" shadows every later path-only route', [{ pathPrefix: '/' }, { pathPrefix: '/x' }, { host: 'h' }], [[1, 0]]],
    ['"/admin/" shadows "/admin" (one segment, however written)', [{ pathPrefix: '/admin/' }, { pathPrefix: '/admin' }], [[1, 0]]],
    ['"/admin/" does not shadow "/administrator"', [{ pathPrefix: '/admin/' }, { pathPrefix: '/administrator' }], []],
    ['"/admin" shadows "/admin/"', [{ pathPrefix: '/admin' }, { pathPrefix: '/admin/' }], [[1, 0]]],
    ['the first earlier route is named', [{ pathPrefix: '/a' }, { pathPrefix: '/' }, { pathPrefix: '/a/b' }], [[2, 0]]],
  ])('%s', (_name, routes, expected) => {
    expect(shadowedRoutes(routes)).toEqual(expected);
  });
});

describe('how check reads a pathPrefix', () => {
  const settings = (routes: unknown[]) =>
    configSchema.parse({ tls: { cert: '/x.crt', key: '/x.key' }, introspection: { url: 'https://as.example/introspect', clientId: 'rs', clientSecret: 's' }, upstream: 'http://127.0.0.1:8080', routes });

  it('a prefix written with a trailing slash gets a note saying it guards the segment itself too', () => {
    const notes = configWarnings(settings([{ pathPrefix: '/api' }, { pathPrefix: '/admin/' }, { pathPrefix: '/' }])).filter((w) => w.path.endsWith('pathPrefix'));
    expect(notes).toEqual([{ path: 'routes[1].pathPrefix', message: expect.stringContaining('"/admin/" is read as the segment /admin: it guards /admin itself') as unknown }]);
  });
});

describe('resourceMetadataUrl (RFC 9728 §3.1)', () => {
  it.each<[string, string]>([
    ['https://rs.example', 'https://rs.example/.well-known/oauth-protected-resource'],
    ['https://rs.example/', 'https://rs.example/.well-known/oauth-protected-resource'],
    ['https://rs.example/api', 'https://rs.example/.well-known/oauth-protected-resource/api'],
    ['https://rs.example/api/v1', 'https://rs.example/.well-known/oauth-protected-resource/api/v1'],
    ['https://rs.example:8443/api', 'https://rs.example:8443/.well-known/oauth-protected-resource/api'],
  ])('%s -> %s', (resource, url) => {
    expect(resourceMetadataUrl(resource)).toBe(url);
  });
});

describe('compileRoutes', () => {
  it('inherits upstream and binding from the default route, and names routes by index', () => {
    const routes = table([{ pathPrefix: '/a' }, { host: 'b.example', upstream: 'http://127.0.0.1:9000', binding: 'optional', scopes: ['x'] }], {
      binding: 'report-only',
      errors: { missingCertificate: { code: 'invalid_request', status: 400 } },
    });
    const [a, b] = routes.routes;
    expect(a).toMatchObject({ id: 'routes[0]', pathPrefix: '/a', host: undefined, binding: 'report-only', scopes: [] });
    expect(a?.upstream.href).toBe('http://127.0.0.1:8080/');
    expect(b).toMatchObject({ id: 'routes[1]', host: 'b.example', binding: 'optional', scopes: ['x'] });
    expect(b?.upstream.href).toBe('http://127.0.0.1:9000/');
    expect(routes.fallback).toMatchObject({ id: 'default', host: undefined, pathPrefix: undefined, binding: 'report-only', scopes: [] });
    for (const route of [a, b, routes.fallback]) expect(route?.missingCertificate).toEqual({ code: 'invalid_request', status: 400 });
  });

  it('names a route by its name when it has one, by index when not', () => {
    const routes = table([{ pathPrefix: '/a', name: 'api.admin' }, { pathPrefix: '/b' }]);
    expect(routes.routes.map((route) => route.id)).toEqual(['api.admin', 'routes[1]']);
    // Reordering keeps a named route's label; the unnamed one takes its new position.
    expect(table([{ pathPrefix: '/b' }, { pathPrefix: '/a', name: 'api.admin' }]).routes.map((route) => route.id)).toEqual(['routes[0]', 'api.admin']);
  });

  it('inherits top-level policy keys a route does not set, and overrides those it sets', () => {
    const routes = table(
      [
        { pathPrefix: '/a' },
        {
          pathPrefix: '/b',
          scopes: ['b'],
          audience: 'https://b.example',
          stripAuthorization: true,
          upstreamTimeoutMs: 5,
          errors: { missingCertificate: { code: 'mtls_required', status: 403 } },
          headers: { subject: 'X-B-User' },
          claimHeaders: { 'x-b': 'claims.b' },
        },
      ],
      { scopes: ['top'], audience: 'https://rs.example', upstreamTimeoutMs: 1000, claimHeaders: { 'X-Tenant': 'claims.ext.tenant' } },
    );
    const [a, b] = routes.routes;
    expect(a).toMatchObject({ scopes: ['top'], audience: 'https://rs.example', stripAuthorization: false, upstreamTimeoutMs: 1000, missingCertificate: { code: 'invalid_token', status: 401 } });
    expect(a?.headerNames.subject).toBe('x-auth-subject');
    expect(a?.claimHeaders).toEqual([{ header: 'x-tenant', path: ['ext', 'tenant'] }]);
    expect(b).toMatchObject({ scopes: ['b'], audience: 'https://b.example', stripAuthorization: true, upstreamTimeoutMs: 5, missingCertificate: { code: 'mtls_required', status: 403 } });
    expect(b?.headerNames).toMatchObject({ subject: 'x-b-user', clientId: 'x-auth-client-id' });
    expect(b?.claimHeaders).toEqual([{ header: 'x-b', path: ['b'] }]);
    expect(routes.fallback).toMatchObject({ scopes: ['top'], audience: 'https://rs.example' });
  });

  it('lists every header any route sets as managed, so each is stripped on every route', () => {
    const routes = table([{ pathPrefix: '/b', headers: { subject: 'x-b-user' }, claimHeaders: { 'x-b': 'claims.b' } }], { claimHeaders: { 'x-tenant': 'claims.tenant' } });
    expect([...routes.managedHeaders].sort()).toEqual(
      // x-auth-assertion: the signed assertion's header, stripped whether or not `assertion` is set.
      ['x-auth-assertion', 'x-auth-binding', 'x-auth-cert-thumbprint', 'x-auth-client-id', 'x-auth-dpop-jkt', 'x-auth-scope', 'x-auth-subject', 'x-b', 'x-b-user', 'x-forwarded-client-cert', 'x-tenant'].sort(),
    );
  });

  it('derives the resource metadata URL of each route', () => {
    const routes = table([{ pathPrefix: '/api', resource: 'https://rs.example/api' }, { pathPrefix: '/other' }], { resource: 'https://rs.example/' });
    expect(routes.routes[0]?.resourceMetadataUrl).toBe('https://rs.example/.well-known/oauth-protected-resource/api');
    expect(routes.routes[1]?.resourceMetadataUrl).toBe('https://rs.example/.well-known/oauth-protected-resource');
    expect(table([]).fallback.resourceMetadataUrl).toBeUndefined();
  });

  it('freezes the table', () => {
    const routes = table([{ pathPrefix: '/a', scopes: ['x'] }]);
    expect(Object.isFrozen(routes)).toBe(true);
    expect(Object.isFrozen(routes.routes)).toBe(true);
    expect(Object.isFrozen(routes.routes[0])).toBe(true);
    expect(Object.isFrozen(routes.routes[0]?.scopes)).toBe(true);
    expect(Object.isFrozen(routes.fallback)).toBe(true);
  });
});

describe('matchRoute', () => {
  const routes = table([
    { pathPrefix: '/admin', host: 'api.example', scopes: ['admin'] },
    { pathPrefix: '/admin', scopes: ['other-admin'] },
    { host: 'api.example' },
    { pathPrefix: '/public', binding: 'off' },
    { pathPrefix: '/public/secret', binding: 'required' },
  ]);

  it.each<[string, string, string]>([
    ['api.example', '/admin', 'routes[0]'],
    ['api.example', '/admin/users', 'routes[0]'],
    ['other.example', '/admin', 'routes[1]'],
    ['', '/admin', 'routes[1]'],
    ['api.example', '/administrator', 'routes[2]'],
    ['api.example', '/', 'routes[2]'],
    ['other.example', '/public', 'routes[3]'],
    // First match wins: the more specific route after it is never reached.
    ['other.example', '/public/secret', 'routes[3]'],
    ['other.example', '/', 'default'],
    ['other.example', '/administrator', 'default'],
  ])('host %j, path %j -> %s', (host, path, id) => {
    expect(matchRoute(routes, host, path).id).toBe(id);
  });

  it('matches a configured upper-case host against the lower-cased Host header', () => {
    const upper = table([{ host: 'API.Example', pathPrefix: '/x' }]);
    expect(matchRoute(upper, hostName('api.EXAMPLE:8443'), '/x').id).toBe('routes[0]');
  });

  it('matches wildcard hosts', () => {
    const wild = table([{ host: '*.tenants.example', scopes: ['t'] }, { host: 'tenants.example', scopes: ['apex'] }]);
    expect(matchRoute(wild, 'a.tenants.example', '/').id).toBe('routes[0]');
    expect(matchRoute(wild, 'tenants.example', '/').id).toBe('routes[1]');
    expect(matchRoute(wild, 'eviltenants.example', '/').id).toBe('default');
  });

  it.each(['/admin/', '/admin'])('a prefix written %j guards /admin with and without the slash, in any case', (prefix) => {
    const guarded = table([{ pathPrefix: prefix, scopes: ['admin'] }]);
    for (const path of ['/admin', '/admin/', '/admin/users', '/admin;x']) expect(matchRoute(guarded, '', path).id).toBe('routes[0]');
    for (const path of ['/administrator', '/', '/adm']) expect(matchRoute(guarded, '', path).id).toBe('default');
  });

  it('falls back to the default route when there are no routes', () => {
    expect(matchRoute(table([]), 'a', '/x').id).toBe('default');
  });
});
