/**
 * RFC 9470 step-up as a pure decision: one table over every combination of `acrValues` and
 * `maxAgeSeconds` and the token's `acr` / `auth_time` (absent, wrong, stale, within and past the
 * skew), then the challenge it renders, report-only, and that an invalid token never learns the
 * requirement. The same behaviour through every edge: test/fixtures/edge-contract-rows.ts.
 */
import { describe, expect, it } from 'vitest';
import { configSchema } from '../../src/config/schema.ts';
import { challengesFor, renderError } from '../../src/edge/render.ts';
import { INACTIVE, tokenInfoFromAnswer, type TokenInfo } from '../../src/introspection/token-info.ts';
import { decide } from '../../src/pipeline/decide.ts';
import { compileRoutes, type RoutePolicy, type StepUpPolicy } from '../../src/pipeline/route.ts';
import { clientCertificate } from '../fixtures/certificate.ts';
import { minimalConfig, minimalSettings } from '../fixtures/config.ts';

const NOW = 1_750_000_000;
const MFA = 'urn:example:mfa';
const PHR = 'phr';

function token(overrides: Partial<TokenInfo> = {}): TokenInfo {
  return { ...INACTIVE, active: true, subject: 'alice', clientId: 'app', scope: 'read', exp: NOW + 600, aud: [], cnf: undefined, acr: MFA, authTime: NOW - 60, ...overrides };
}

const BASE = compileRoutes(minimalSettings()).fallback;
const policy = (stepUp: StepUpPolicy | undefined, overrides: Partial<RoutePolicy> = {}): RoutePolicy => ({ ...BASE, binding: 'optional', stepUp, ...overrides });

const ACR: StepUpPolicy = { acrValues: [MFA, PHR], clockSkewSeconds: 5 };
const AGE: StepUpPolicy = { maxAgeSeconds: 300, clockSkewSeconds: 5 };
const BOTH: StepUpPolicy = { acrValues: [MFA, PHR], maxAgeSeconds: 300, clockSkewSeconds: 5 };

describe('step-up: every combination of acrValues and maxAgeSeconds', () => {
  type Row = [string, StepUpPolicy | undefined, Partial<TokenInfo>, 'allow' | { acr_values?: string; max_age?: string }];
  const acrOnly = { acr_values: `${MFA} ${PHR}` };
  const ageOnly = { max_age: '300' };
  const both = { ...acrOnly, ...ageOnly };
  it.each<Row>([
    ['no stepUp: any token', undefined, { acr: undefined, authTime: undefined }, 'allow'],
    ['acrValues: first value', ACR, { acr: MFA }, 'allow'],
    ['acrValues: second value', ACR, { acr: PHR }, 'allow'],
    ['acrValues: acr absent', ACR, { acr: undefined }, acrOnly],
    ['acrValues: another acr', ACR, { acr: 'urn:example:pwd' }, acrOnly],
    ['acrValues: acr differs only in case', ACR, { acr: 'PHR' }, acrOnly],
    ['acrValues: auth_time absent does not matter', ACR, { acr: MFA, authTime: undefined }, 'allow'],
    ['maxAgeSeconds: recent', AGE, { authTime: NOW - 60 }, 'allow'],
    ['maxAgeSeconds: exactly max age', AGE, { authTime: NOW - 300 }, 'allow'],
    ['maxAgeSeconds: past max age, within the skew', AGE, { authTime: NOW - 305 }, 'allow'],
    ['maxAgeSeconds: stale beyond the skew', AGE, { authTime: NOW - 306 }, ageOnly],
    ['maxAgeSeconds: auth_time absent', AGE, { authTime: undefined }, ageOnly],
    ['maxAgeSeconds: auth_time ahead within the skew', AGE, { authTime: NOW + 5 }, 'allow'],
    ['maxAgeSeconds: auth_time ahead beyond the skew', AGE, { authTime: NOW + 6 }, ageOnly],
    ['maxAgeSeconds: acr absent does not matter', AGE, { acr: undefined }, 'allow'],
    ['both: both met', BOTH, { acr: PHR, authTime: NOW - 10 }, 'allow'],
    ['both: acr wrong, auth_time fresh', BOTH, { acr: 'pwd', authTime: NOW - 10 }, both],
    ['both: acr right, auth_time stale', BOTH, { acr: MFA, authTime: NOW - 3600 }, both],
    ['both: both absent', BOTH, { acr: undefined, authTime: undefined }, both],
    ['both: acr right, auth_time absent', BOTH, { acr: MFA, authTime: undefined }, both],
  ])('%s', (_name, stepUp, claims, expected) => {
    const decision = decide({ token: token(claims), certificate: undefined, policy: policy(stepUp), now: NOW });
    if (expected === 'allow') {
      expect(decision).toMatchObject({ allow: true });
      return;
    }
    if (decision.allow) throw new Error('expected a refusal');
    expect({ reason: decision.error.reason, status: decision.error.status, error: decision.error.error }).toEqual({ reason: 'step_up_required', status: 401, error: 'insufficient_user_authentication' });
    const params = challengesFor(decision.error, { realm: 'cnfguard' })[0] as string;
    expect(params).toContain('error="insufficient_user_authentication"');
    expect(params).toContain('error_description="a stronger or more recent user authentication is required"');
    for (const name of ['acr_values', 'max_age'] as const) {
      if (expected[name] === undefined) expect(params).not.toContain(`${name}=`);
      else expect(params).toContain(`${name}="${expected[name]}"`);
    }
  });
});

describe('step-up: where it sits and what it says', () => {
  it('is judged after validation, binding and scopes: an invalid, unbound or under-scoped token never learns the requirement', () => {
    const required = policy(BOTH, { binding: 'required' });
    const cases: [TokenInfo, RoutePolicy, string][] = [
      [INACTIVE, policy(BOTH), 'token_inactive'],
      [token({ exp: NOW - 1, acr: undefined }), policy(BOTH), 'token_expired'],
      [token({ acr: undefined }), required, 'token_unbound'],
      [token({ acr: undefined }), policy(BOTH, { scopes: ['admin'] }), 'insufficient_scope'],
    ];
    for (const [info, route, reason] of cases) {
      const decision = decide({ token: info, certificate: undefined, policy: route, now: NOW });
      if (decision.allow) throw new Error(`expected ${reason}`);
      expect(decision.error.reason).toBe(reason);
      const rendered = renderError(decision.error, { realm: 'cnfguard', methods: ['mtls', 'dpop'] });
      expect(rendered.headers['www-authenticate']).not.toMatch(/acr_values|max_age/);
    }
  });

  it('puts acr_values and max_age on every challenge of the route, the error on the scheme used', () => {
    const decision = decide({ token: token({ acr: 'pwd' }), certificate: undefined, policy: policy(BOTH), now: NOW });
    if (decision.allow) throw new Error('expected a refusal');
    const [bearer, dpop] = challengesFor(decision.error, { realm: 'cnfguard', methods: ['mtls', 'dpop'], scheme: 'dpop', dpopAlgorithms: ['ES256'] });
    expect(bearer).toBe(`Bearer realm="cnfguard", acr_values="${MFA} ${PHR}", max_age="300", supported_cnf_methods="mtls dpop"`);
    expect(dpop).toBe(`DPoP error="insufficient_user_authentication", algs="ES256", error_description="a stronger or more recent user authentication is required", acr_values="${MFA} ${PHR}", max_age="300"`);
  });

  it('report-only: allowed, with the refusal reported', () => {
    const certificate = clientCertificate('client1');
    const bound = token({ acr: 'pwd', cnf: { 'x5t#S256': certificate.thumbprint } });
    const decision = decide({ token: bound, certificate, policy: policy(ACR, { binding: 'report-only' }), now: NOW });
    expect(decision).toMatchObject({ allow: true, reason: 'report_only', wouldDeny: { reason: 'step_up_required' } });
  });

  it('reads acr and auth_time from an introspection answer or JWT claims, claim mappings or not', () => {
    const info = tokenInfoFromAnswer({ active: true, acr: MFA, auth_time: NOW - 1 });
    expect({ acr: info.acr, authTime: info.authTime }).toEqual({ acr: MFA, authTime: NOW - 1 });
    expect(() => tokenInfoFromAnswer({ active: true, auth_time: 'yesterday' })).toThrow(/auth_time/);
  });

  it('is route policy: inherited, and set per route', () => {
    const settings = configSchema.parse(minimalConfig({ stepUp: { acrValues: [MFA] }, routes: [{ pathPrefix: '/a' }, { pathPrefix: '/b', stepUp: { maxAgeSeconds: 60 } }] }));
    const table = compileRoutes(settings);
    expect(table.routes.map((r) => r.stepUp)).toEqual([{ acrValues: [MFA], clockSkewSeconds: 5 }, { maxAgeSeconds: 60, clockSkewSeconds: 5 }]);
    expect(configSchema.safeParse(minimalConfig({ stepUp: {} })).success).toBe(false);
    expect(configSchema.safeParse(minimalConfig({ stepUp: { acrValues: ['a b'] } })).success).toBe(false);
  });
});
