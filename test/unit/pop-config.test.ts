/** Config keys of issue 13: proof methods per route, DPoP settings, publicOrigin, advertising. */
import { describe, expect, it } from 'vitest';
import { configSchema } from '../../src/config/schema.ts';
import { compileRoutes } from '../../src/pipeline/route.ts';
import { MINIMAL_CONFIG } from '../fixtures/config.ts';

const BASE = MINIMAL_CONFIG;

function problems(extra: Record<string, unknown>): string[] {
  const parsed = configSchema.safeParse({ ...BASE, ...extra });
  return parsed.success ? [] : parsed.error.issues.map((issue) => `${issue.path.join('.')}: ${issue.message}`);
}

describe('config: proof-of-possession methods and DPoP', () => {
  it('routes inherit methods and publicOrigin, and may set their own', () => {
    const settings = configSchema.parse({
      ...BASE,
      methods: ['mtls', 'dpop'],
      publicOrigin: 'HTTPS://API.Example:443',
      routes: [{ pathPrefix: '/d', methods: ['dpop'], publicOrigin: 'https://d.example:8443' }, { pathPrefix: '/i' }],
    });
    const table = compileRoutes(settings);
    expect(table.fallback.methods).toEqual(['mtls', 'dpop']);
    expect(table.fallback.publicOrigin).toBe('https://api.example');
    expect(table.routes[0]).toMatchObject({ methods: ['dpop'], publicOrigin: 'https://d.example:8443' });
    expect(table.routes[1]).toMatchObject({ methods: ['mtls', 'dpop'], publicOrigin: 'https://api.example' });
  });

  it('defaults to mtls only and no publicOrigin', () => {
    const table = compileRoutes(configSchema.parse(BASE));
    expect(table.fallback.methods).toEqual(['mtls']);
    expect(table.fallback.publicOrigin).toBeUndefined();
  });

  it.each(['none', 'HS256', 'hs512', 'XS1'])('refuses dpop.algorithms %j', (alg) => {
    expect(problems({ dpop: { algorithms: [alg] } })).toEqual([expect.stringMatching(/^dpop\.algorithms\.0: /)]);
  });

  it.each([[[]], [['bearer']]])('refuses methods %j', (methods) => {
    expect(problems({ methods })).not.toEqual([]);
  });

  it.each(['https://api.example/path', 'https://u:p@api.example', 'https://api.example?x', 'ftp://api.example', 'api.example'])('refuses publicOrigin %j', (origin) => {
    expect(problems({ publicOrigin: origin })).toEqual([expect.stringMatching(/^publicOrigin: /)]);
  });

  it('reads numbers and flags from ${VAR} text', () => {
    const settings = configSchema.parse({ ...BASE, dpop: { proofMaxAgeSeconds: '60', clockSkewSeconds: '0', nonce: 'true' }, errors: { advertiseMethods: 'false' } });
    expect(settings.dpop).toMatchObject({ proofMaxAgeSeconds: 60, clockSkewSeconds: 0, nonce: true });
    expect(settings.errors.advertiseMethods).toBe(false);
  });

  it('has a per-route dpopThumbprint header name', () => {
    const table = compileRoutes(configSchema.parse({ ...BASE, routes: [{ pathPrefix: '/d', headers: { dpopThumbprint: 'X-Jkt' } }] }));
    expect(table.routes[0]?.headerNames).toMatchObject({ dpopThumbprint: 'x-jkt' });
    expect(table.managedHeaders).toContain('x-jkt');
    expect(table.managedHeaders).toContain('x-auth-dpop-jkt');
  });
});
