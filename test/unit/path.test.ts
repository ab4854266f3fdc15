import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { configSchema } from '../../src/config/schema.ts';
import { GuardError } from '../../src/edge/render.ts';
import { parseTarget, routingPaths } from '../../src/pipeline/path.ts';
import { compileRoutes, routeFor } from '../../src/pipeline/route.ts';
import { generatedSpelling } from '../fixtures/path-corpus.ts';

const table = (extra: Record<string, unknown> = {}) =>
  compileRoutes(
    configSchema.parse({
      tls: { cert: '/x.crt', key: '/x.key' },
      introspection: { url: 'https://as.example/introspect', clientId: 'rs', clientSecret: 's' },
      upstream: 'http://127.0.0.1:8080',
      routes: [{ pathPrefix: '/admin', scopes: ['admin'] }, { pathPrefix: '/public/docs' }],
      ...extra,
    }),
  );

function reasonOf(fn: () => unknown): string | undefined {
  try {
    fn();
    return undefined;
  } catch (err) {
    if (err instanceof GuardError) return err.reason;
    throw err;
  }
}

describe('parseTarget', () => {
  it.each<[string, string, string]>([
    ['/a/b?x=1', '/a/b', '?x=1'],
    ['/%61dmin', '/admin', ''],
    ['//admin//x', '/admin/x', ''],
    ['/x/../admin', '/admin', ''],
    ['/a/./b/', '/a/b/', ''],
    ['/a%2a', '/a%2A', ''],
    ['/a#frag', '/a', ''],
    ['/x/..', '/', ''],
  ])('%s -> path %s, query %s', (target, path, query) => {
    expect(parseTarget(target)).toMatchObject({ path, query, target: path + query });
  });

  it.each(['*', 'http://x/a', '/a%2fb', '/a%5Cb', '/a\\b'])('%s is refused', (target) => {
    expect(reasonOf(() => parseTarget(target))).toBe('path_malformed');
  });
});

describe('routingPaths', () => {
  it.each<[string, string]>([
    ['/ADMIN/x', '/admin/x'],
    ['/admin;x=1/users', '/admin/users'],
    ['/public/..;/admin', '/admin'],
    ['/%2561dmin', '/admin'],
    ['/admin./x', '/admin/x'],
    ['/admin%20/x', '/admin/x'],
    ['/%EF%BD%81dmin', '/admin'],
    ['/adm%C4%B1n', '/admin'],
    ['/adm%C4%B0n', '/admin'],
    ['/admİn', '/admin'],
    ['/%C5%BFecret', '/secret'],
    ['/%E2%84%AAey', '/key'],
    ['/a/%252e%252e/admin', '/admin'],
  ])('%s reads permissively as %s', (path, permissive) => {
    expect(routingPaths(parseTarget(path), true).permissive).toBe(permissive);
  });

  it('leaves a plain path one string, lower-cased', () => {
    const paths = routingPaths(parseTarget('/Api/V1/items'), true);
    expect(paths).toEqual({ canonical: '/api/v1/items', permissive: '/api/v1/items' });
    expect(routingPaths(parseTarget('/Api'), false)).toEqual({ canonical: '/Api', permissive: '/Api' });
  });

  it.each(['/%C0%AE', '/a%252Fb', '/a%25255cb', '/a%00', '/a%0d%0ab'])('%s is refused', (path) => {
    expect(reasonOf(() => routingPaths(parseTarget(path), true))).toBe('path_malformed');
  });
});

describe('routeFor', () => {
  const routes = table();

  it.each<[string, string]>([
    ['/admin', 'routes[0]'],
    ['/ADMIN/users', 'routes[0]'],
    ['/admin;jsessionid=1', 'routes[0]'],
    ['/admin;x/users', 'routes[0]'],
    ['/public/docs/a', 'routes[1]'],
    ['/Public/Docs', 'routes[1]'],
    ['/other;x', 'default'],
    ['/administrator', 'default'],
  ])('%s -> %s', (path, id) => {
    expect(routeFor(routes, 'api.example', parseTarget(path)).id).toBe(id);
  });

  it.each(['/public/..;/admin', '/%2561dmin', '/admin./users', '/public/docs/..;/../admin', '/adm%C4%B0n', '/adm%C4%B1n', '/admİn/users', '/admin%3Fx', '/admin%23x', '/admin%253Fx', '/public%3F/../admin'])('%s is ambiguous', (path) => {
    expect(reasonOf(() => routeFor(routes, 'api.example', parseTarget(path)))).toBe('path_ambiguous');
  });

  it.each(['/public/docs/a%3Fb', '/public/docs/x%23y', '/admin/a%3Fb', '/other%3Fx'])('%s: an encoded ? or # that leaves the route as it is, allowed', (path) => {
    expect(() => routeFor(routes, 'api.example', parseTarget(path))).not.toThrow();
  });

  it.each(['/admin', '/ADMIN', '/Admin/', '/admin?x=1', '/admin#x', '/admin;x', '/x/../admin', '/%61dmin'])(
    'pathPrefix "/admin/" judges %s by its route (issue 26 finding 4)',
    (path) => {
      const slash = table({ routes: [{ pathPrefix: '/admin/', scopes: ['admin'] }] });
      expect(routeFor(slash, '', parseTarget(path)).id).toBe('routes[0]');
    },
  );

  describe('a target the front forwards as received (decision API, issue 26 finding 2)', () => {
    const raw = { forwardedRaw: true };
    const BYPASSES = ['/admin/../x', '/Admin/../x', '/admin/%2e%2e/x', '/admin/.%2e/x', '/admin/y/../../x', '/admin//../x', '/admin;x/../x', '/ADMIN/%2E%2E/x', '/admin/..', '/admin./../x', '/%61dmin/../x', '/admin/%252e%252e/x', '/public/docs/../../admin'];
    /** `new URL(t, 'http://localhost').pathname` and Python's `urlsplit(t).path` are /admin… for these (the first segment is a host). */
    const NETWORK_PATHS = ['//evil/admin', '///evil/admin', '//localhost:8443/admin', '//evil/admin/users', '//evil/ADMIN', '//evil/%61dmin', '//evil/x/../admin', '//evil/admin;x'];

    it.each(BYPASSES)('%s is refused: an upstream reads it as /admin, the resolved path is another route', (path) => {
      expect(reasonOf(() => routeFor(routes, '', parseTarget(path), raw))).toBe('path_ambiguous');
    });

    it.each(NETWORK_PATHS)('%s is refused: its first segment read as a host leaves /admin (a network-path reference)', (path) => {
      expect(new URL(path, 'http://localhost').pathname.toLowerCase()).toMatch(/^\/(?:%61dmin|admin)/);
      expect(reasonOf(() => routeFor(routes, '', parseTarget(path), raw))).toBe('path_ambiguous');
    });

    it.each(['//evil/admin', '///evil/admin'])('%s on the proxy is judged and forwarded as /evil/admin, which no reading takes for /admin', (path) => {
      expect(parseTarget(path).path).toBe('/evil/admin');
      expect(routeFor(routes, '', parseTarget(path)).id).toBe('default');
    });

    it.each<[string, string]>([
      ['//evil/x', 'default'],
      ['//evil', 'default'],
    ])('%s, its first segment a host or not, is one route: %s', (path, id) => {
      expect(routeFor(routes, '', parseTarget(path), raw).id).toBe(id);
    });

    it.each(['/admin/../x', '/admin/%2e%2e/x', '/admin/y/../../x', '/admin//../x'])('%s on the proxy (which forwards what it judged) keeps its canonical route', (path) => {
      expect(routeFor(routes, '', parseTarget(path)).id).toBe('default');
    });

    it.each<[string, string]>([
      ['/admin/users', 'routes[0]'],
      ['/ADMIN/users', 'routes[0]'],
      ['/admin/./users', 'routes[0]'],
      ['/admin/x/../users', 'routes[0]'],
      ['/public/docs/a', 'routes[1]'],
      ['/x/./y', 'default'],
      ['/x/y/../z', 'default'],
      ['/x//y', 'default'],
      ['/x;p=1', 'default'],
      ['/%7Euser/%41', 'default'],
    ])('%s, read every way, is one route: %s', (path, id) => {
      expect(routeFor(routes, '', parseTarget(path), raw).id).toBe(id);
    });
  });

  it('paths.ignoreCase: false matches prefixes in their own case', () => {
    const exact = table({ paths: { ignoreCase: false } });
    expect(routeFor(exact, '', parseTarget('/admin')).id).toBe('routes[0]');
    expect(routeFor(exact, '', parseTarget('/ADMIN')).id).toBe('default');
  });

  it('with no routes, no path is read twice', () => {
    expect(routeFor(table({ routes: [] }), '', parseTarget('/%2561dmin')).id).toBe('default');
  });

  describe('generated spellings against a reference reader (independent of path.ts)', () => {
    /** One round of percent-decoding over bytes, bad UTF-8 replaced (so an overlong form stays no letter). */
    const decodeOnce = (value: string): string => {
      const bytes: number[] = [];
      for (let i = 0; i < value.length; i++) {
        const hex = value.slice(i + 1, i + 3);
        if (value[i] === '%' && /^[0-9A-Fa-f]{2}$/.test(hex)) {
          bytes.push(parseInt(hex, 16));
          i += 2;
        } else bytes.push(...Buffer.from(value[i] as string, 'utf8'));
      }
      return new TextDecoder('utf-8').decode(Uint8Array.from(bytes));
    };
    /**
     * The segments a lenient upstream sees: decoded (up to three rounds), `;params` dropped,
     * compatibility forms folded, trailing dots and blanks dropped, lower-cased, empty ones
     * dropped; `resolve` removes dot segments with a stack, as a servlet container does.
     */
    const referenceSegments = (path: string, resolve: boolean): string[] => {
      const out: string[] = [];
      for (const raw of path.split('?')[0]!.split('#')[0]!.split('/')) {
        let segment = raw;
        for (let round = 0; round < 3; round++) segment = decodeOnce(segment);
        segment = segment.split(';')[0]!.normalize('NFKC').trim().toLowerCase();
        if (segment !== '.' && segment !== '..') segment = segment.replace(/[.\s]+$/, '');
        if (segment === '' || (resolve && segment === '.')) continue;
        if (resolve && segment === '..') out.pop();
        else out.push(segment);
      }
      return out;
    };
    const readsAsAdmin = (path: string, resolve: boolean) => referenceSegments(path, resolve)[0] === 'admin';
    /** The path WHATWG's parser reads when the first segment of `//x/…` is a host (undefined: not such a target, or no URL). */
    const urlPathname = (path: string): string | undefined => {
      if (!path.startsWith('//')) return undefined;
      try {
        return new URL(path, 'http://localhost').pathname;
      } catch {
        return undefined;
      }
    };
    /** The route, or 'refused' for a GuardError. */
    const judged = (path: string, forwardedRaw: boolean): string => {
      try {
        return routeFor(routes, '', parseTarget(path), { forwardedRaw }).id;
      } catch (err) {
        if (err instanceof GuardError) return 'refused';
        throw err;
      }
    };
    const RUNS = 3000;
    const sample = fc.sample(generatedSpelling, { numRuns: RUNS, seed: 26 });

    it('the generator produces encoded, dotted and parameterised spellings, of which many read as /admin and many do not', () => {
      expect(sample.filter((p) => /%[0-9A-Fa-f]{2}/.test(p)).length).toBeGreaterThan(RUNS / 2);
      expect(sample.filter((p) => /%25/.test(p)).length).toBeGreaterThan(RUNS / 10);
      expect(sample.filter((p) => p.includes(';')).length).toBeGreaterThan(RUNS / 10);
      const admin = sample.filter((p) => readsAsAdmin(p, true));
      expect(admin.length).toBeGreaterThan(RUNS / 4);
      expect(sample.length - admin.length).toBeGreaterThan(RUNS / 20);
      expect(sample.filter((p) => !readsAsAdmin(p, true) && readsAsAdmin(p, false)).length).toBeGreaterThan(RUNS / 20);
    });

    it('proxy edges: a spelling the reference reads as /admin is judged by /admin or refused; one judged by another route is forwarded as a path that is not /admin', () => {
      const offending = sample.flatMap((path) => {
        const id = judged(path, false);
        if (readsAsAdmin(path, true) && id !== 'routes[0]' && id !== 'refused') return [`${path} read as /admin, judged ${id}`];
        if (id !== 'routes[0]' && id !== 'refused' && readsAsAdmin(parseTarget(path).path, true)) return [`${path} judged ${id}, forwarded as ${parseTarget(path).path}`];
        return [];
      });
      expect(offending).toEqual([]);
    });

    it('decision API (the target forwarded as received): a spelling the reference reads as /admin before or after resolving dot segments is judged by /admin or refused', () => {
      const asHost = (path: string) => {
        const pathname = urlPathname(path);
        return pathname !== undefined && (readsAsAdmin(pathname, true) || readsAsAdmin(pathname, false));
      };
      expect(sample.filter(asHost).length, 'spellings whose first segment is a host').toBeGreaterThan(RUNS / 50);
      const offending = sample.filter((path) => (readsAsAdmin(path, true) || readsAsAdmin(path, false) || asHost(path)) && !['routes[0]', 'refused'].includes(judged(path, true)));
      expect(offending).toEqual([]);
    });
  });
});
