/** RFC 9728 fields for the proof methods a resource's routes accept. */
import { describe, expect, it } from 'vitest';
import { buildMetadataDirectory, metadataFor } from '../../src/pipeline/metadata.ts';
import { compileRoutes, type RoutePolicy } from '../../src/pipeline/route.ts';
import { minimalSettings } from '../fixtures/config.ts';

const FALLBACK = compileRoutes(minimalSettings({ resource: 'https://rs.example/' })).fallback;
const route = (overrides: Partial<RoutePolicy>): RoutePolicy => ({ ...FALLBACK, ...overrides });
const ALGS = ['ES256', 'EdDSA', 'PS256'];
const fields = (routes: RoutePolicy[]) => {
  const { tls_client_certificate_bound_access_tokens: mtls, dpop_signing_alg_values_supported: algs, dpop_bound_access_tokens_required: required } = metadataFor('https://rs.example/', routes, [], ALGS);
  return { mtls, algs, required };
};

describe('resource metadata: proof methods', () => {
  it.each<[string, Partial<RoutePolicy>[], { mtls?: boolean; algs?: string[]; required?: boolean }]>([
    ['mtls, required (the default)', [{}], { mtls: true }],
    ['mtls, off', [{ binding: 'off' }], {}],
    ['dpop only, required', [{ methods: ['dpop'] }], { algs: ALGS, required: true }],
    ['dpop only, optional', [{ methods: ['dpop'], binding: 'optional' }], { algs: ALGS }],
    ['mtls and dpop, required', [{ methods: ['mtls', 'dpop'] }], { mtls: true, algs: ALGS }],
    ['a dpop-only route beside an mtls route of the same resource', [{ methods: ['dpop'] }, {}], { mtls: true, algs: ALGS }],
  ])('%s', (_name, routes, expected) => {
    expect(fields(routes.map(route))).toEqual({ mtls: undefined, algs: undefined, required: undefined, ...expected });
  });

  it('publishes dpop.algorithms from the config', () => {
    const settings = minimalSettings({ resource: 'https://rs.example/', methods: ['dpop'], dpop: { algorithms: ['ES256'] } });
    const body = JSON.parse(buildMetadataDirectory(settings, compileRoutes(settings)).lookup('rs.example', '/.well-known/oauth-protected-resource') ?? '{}') as Record<string, unknown>;
    expect(body).toMatchObject({ resource: 'https://rs.example/', dpop_signing_alg_values_supported: ['ES256'], dpop_bound_access_tokens_required: true });
    expect(body).not.toHaveProperty('tls_client_certificate_bound_access_tokens');
  });
});
