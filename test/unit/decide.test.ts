import { describe, expect, it } from 'vitest';
import { type BindingMode } from '../../src/config/schema.ts';
import { INACTIVE, type TokenInfo } from '../../src/introspection/token-info.ts';
import { renderError, type ReasonId } from '../../src/edge/render.ts';
import type { ClientCertificate } from '../../src/pipeline/client-cert.ts';
import { decide, scopesOf, type Decision } from '../../src/pipeline/decide.ts';
import { compileRoutes, type RoutePolicy } from '../../src/pipeline/route.ts';
import { clientCertificate } from '../fixtures/certificate.ts';
import { minimalSettings } from '../fixtures/config.ts';

const NOW = 1_750_000_000;

const certificate = (label: string, trusted = true): ClientCertificate => clientCertificate(label, { uris: [`spiffe://example/${label}`], trusted });

const CERT = certificate('client1');
const OTHER = certificate('client2');
const UNTRUSTED = certificate('client1', false);

function token(overrides: Partial<TokenInfo> = {}): TokenInfo {
  return {
    ...INACTIVE,
    active: true,
    subject: 'alice',
    clientId: 'app',
    scope: 'read write',
    tokenType: 'Bearer',
    exp: NOW + 600,
    iss: 'https://as.example',
    aud: ['https://rs.example'],
    cnf: { 'x5t#S256': CERT.thumbprint },
    ...overrides,
  };
}

const UNBOUND = token({ cnf: undefined });

const SETTINGS = minimalSettings();

/** The default route of a minimal config (binding required, no scopes), with overrides. */
function policy(overrides: Partial<RoutePolicy> = {}): RoutePolicy {
  return { ...compileRoutes(SETTINGS).fallback, ...overrides };
}

function denial(decision: Decision): { reason: ReasonId; status: number; error: string | undefined; scope: string | undefined } {
  if (decision.allow) throw new Error(`expected a denial, got allow (${decision.reason})`);
  const { reason, status, error, scope } = decision.error;
  return { reason, status, error, scope };
}

describe('decide: the contract decision table', () => {
  type Row = [string, TokenInfo, ClientCertificate | undefined, Partial<RoutePolicy>, ReasonId, number, string | undefined];
  it.each<Row>([
    ['token inactive at the AS', INACTIVE, CERT, {}, 'token_inactive', 401, 'invalid_token'],
    ['token expired (exp < now)', token({ exp: NOW - 1 }), CERT, {}, 'token_expired', 401, 'invalid_token'],
    ['token expired (exp = now)', token({ exp: NOW }), CERT, {}, 'token_expired', 401, 'invalid_token'],
    ['token not yet valid (nbf in the future)', token({ nbf: NOW + 1 }), CERT, {}, 'token_not_yet_valid', 401, 'invalid_token'],
    ['DPoP token sent as Bearer (RFC 9449 §7.2)', token({ tokenType: 'DPoP' }), CERT, {}, 'token_type_unsupported', 401, 'invalid_token'],
    ['DPoP token type in lower case', token({ tokenType: 'dpop' }), CERT, {}, 'token_type_unsupported', 401, 'invalid_token'],
    ['issuer differs from introspection.issuer', token({ iss: 'https://evil.example' }), CERT, { issuer: 'https://as.example' }, 'issuer_mismatch', 401, 'invalid_token'],
    ['token bound, another certificate', token(), OTHER, {}, 'certificate_mismatch', 401, 'invalid_token'],
    ['token bound, no certificate (default policy)', token(), undefined, {}, 'certificate_missing', 401, 'invalid_token'],
    ['token bound, no certificate, missingCertificate invalid_request/400', token(), undefined, { missingCertificate: { code: 'invalid_request', status: 400 } }, 'certificate_missing', 400, 'invalid_request'],
    ['token bound, no certificate, a custom code', token(), undefined, { missingCertificate: { code: 'mtls_required', status: 401 } }, 'certificate_missing', 401, 'mtls_required'],
    ['token bound, no certificate, binding optional', token(), undefined, { binding: 'optional' }, 'certificate_missing', 401, 'invalid_token'],
    ['token bound, another certificate, binding optional', token(), OTHER, { binding: 'optional' }, 'certificate_mismatch', 401, 'invalid_token'],
    ['certificate not chaining to tls.clientCa', token(), UNTRUSTED, {}, 'certificate_untrusted', 401, 'invalid_token'],
    ['untrusted certificate, unbound token, binding optional', UNBOUND, UNTRUSTED, { binding: 'optional' }, 'certificate_untrusted', 401, 'invalid_token'],
    ['token not bound, binding required', UNBOUND, CERT, {}, 'token_unbound', 401, 'invalid_token'],
    ['token not bound, binding required, no certificate', UNBOUND, undefined, {}, 'token_unbound', 401, 'invalid_token'],
    ['token with an empty cnf, binding required', token({ cnf: {} }), CERT, {}, 'token_unbound', 401, 'invalid_token'],
    // A DPoP-bound token (cnf.jkt) on the Bearer scheme is a downgrade (RFC 9449 §7.2), whatever the mode.
    ['token bound by DPoP (jkt)', token({ cnf: { jkt: 'abc' } }), CERT, {}, 'token_type_unsupported', 401, 'invalid_token'],
    ['token bound by jkt, binding optional', token({ cnf: { jkt: 'abc' } }), CERT, { binding: 'optional' }, 'token_type_unsupported', 401, 'invalid_token'],
    ['token bound by jkt, binding off', token({ cnf: { jkt: 'abc' } }), CERT, { binding: 'off' }, 'token_type_unsupported', 401, 'invalid_token'],
    ['token bound by jkt, report-only', token({ cnf: { jkt: 'abc' } }), CERT, { binding: 'report-only' }, 'token_type_unsupported', 401, 'invalid_token'],
    ['token bound by x5t#S256 and jkt, matching certificate', token({ cnf: { 'x5t#S256': CERT.thumbprint, jkt: 'abc' } }), CERT, {}, 'token_type_unsupported', 401, 'invalid_token'],
    ['token bound by an unknown method', token({ cnf: { 'x5t#S512': 'abc' } }), CERT, {}, 'cnf_unsupported', 401, 'invalid_token'],
    ['token lacks a route scope', token({ scope: 'read' }), CERT, { scopes: ['admin'] }, 'insufficient_scope', 403, 'insufficient_scope'],
    ['token has no scope at all', token({ scope: undefined }), CERT, { scopes: ['read'] }, 'insufficient_scope', 403, 'insufficient_scope'],
    ['token lacks one of two route scopes', token({ scope: 'read' }), CERT, { scopes: ['read', 'admin'] }, 'insufficient_scope', 403, 'insufficient_scope'],
    ['scope matching is exact, not by prefix', token({ scope: 'administrator' }), CERT, { scopes: ['admin'] }, 'insufficient_scope', 403, 'insufficient_scope'],
    ['scope matching is case-sensitive', token({ scope: 'Admin' }), CERT, { scopes: ['admin'] }, 'insufficient_scope', 403, 'insufficient_scope'],
    ['report-only still enforces scopes', token({ scope: 'read' }), OTHER, { binding: 'report-only', scopes: ['admin'] }, 'insufficient_scope', 403, 'insufficient_scope'],
    ['binding off still enforces scopes', token({ scope: 'read' }), OTHER, { binding: 'off', scopes: ['admin'] }, 'insufficient_scope', 403, 'insufficient_scope'],
    ['token for another audience', token({ aud: ['https://other.example'] }), CERT, { audience: 'https://rs.example' }, 'audience_mismatch', 401, 'invalid_token'],
    ['token with no audience, route requires one', token({ aud: [] }), CERT, { audience: 'https://rs.example' }, 'audience_mismatch', 401, 'invalid_token'],
    ['audience checked even under binding off', token({ aud: ['https://other.example'] }), OTHER, { audience: 'https://rs.example', binding: 'off' }, 'audience_mismatch', 401, 'invalid_token'],
    ['unknown cnf member ignored: judged unbound under required', token({ cnf: { 'x5t#S512': 'abc' } }), CERT, { unknownCnf: 'ignore' }, 'token_unbound', 401, 'invalid_token'],
    ['unknown cnf member ignored, x5t#S256 mismatch still denies', token({ cnf: { 'x5t#S512': 'abc', 'x5t#S256': CERT.thumbprint } }), OTHER, { unknownCnf: 'ignore' }, 'certificate_mismatch', 401, 'invalid_token'],
    // Binding is checked before scope: a stolen token is reported as stolen, not as under-scoped.
    ['mismatch and missing scope: the binding wins', token({ scope: 'read' }), OTHER, { scopes: ['admin'] }, 'certificate_mismatch', 401, 'invalid_token'],
    ['unbound and missing scope: the binding wins', token({ scope: 'read', cnf: undefined }), CERT, { scopes: ['admin'] }, 'token_unbound', 401, 'invalid_token'],
    // Validity outranks everything else.
    ['inactive with another certificate', INACTIVE, OTHER, { binding: 'off' }, 'token_inactive', 401, 'invalid_token'],
    ['expired under binding off', token({ exp: NOW - 1 }), OTHER, { binding: 'off' }, 'token_expired', 401, 'invalid_token'],
    ['expired under report-only', token({ exp: NOW - 1 }), CERT, { binding: 'report-only' }, 'token_expired', 401, 'invalid_token'],
    ['DPoP token type under binding optional', token({ tokenType: 'DPoP', cnf: undefined }), CERT, { binding: 'optional' }, 'token_type_unsupported', 401, 'invalid_token'],
  ])('denies: %s', (_name, info, cert, overrides, reason, status, error) => {
    const result = denial(decide({ token: info, certificate: cert, policy: policy(overrides), now: NOW }));
    expect(result).toMatchObject({ reason, status, error });
  });

  it('answers insufficient_scope with the route scopes as the challenge scope', () => {
    const decision = decide({ token: token({ scope: 'read' }), certificate: CERT, policy: policy({ scopes: ['read', 'admin'] }), now: NOW });
    expect(denial(decision).scope).toBe('read admin');
    if (decision.allow) throw new Error('expected a denial');
    const rendered = renderError(decision.error, { realm: 'cnfguard' });
    expect(rendered.status).toBe(403);
    expect(rendered.headers['www-authenticate']).toContain('error="insufficient_scope"');
    expect(rendered.headers['www-authenticate']).toContain('scope="read admin"');
  });

  type AllowRow = [string, TokenInfo, ClientCertificate | undefined, Partial<RoutePolicy>, string, ReasonId | undefined];
  it.each<AllowRow>([
    ['token bound, matching certificate', token(), CERT, {}, 'bound', undefined],
    ['issuer matches introspection.issuer', token({ iss: 'https://as.example' }), CERT, { issuer: 'https://as.example' }, 'bound', undefined],
    ['no iss in the answer, introspection.issuer set (iss is optional in RFC 7662)', token({ iss: undefined }), CERT, { issuer: 'https://as.example' }, 'bound', undefined],
    ['token bound, matching certificate, binding optional', token(), CERT, { binding: 'optional' }, 'bound', undefined],
    ['token not bound, binding optional', UNBOUND, CERT, { binding: 'optional' }, 'unbound', undefined],
    ['token not bound, binding optional, no certificate', UNBOUND, undefined, { binding: 'optional' }, 'unbound', undefined],
    ['exp one second ahead', token({ exp: NOW + 1 }), CERT, {}, 'bound', undefined],
    ['no exp', token({ exp: undefined }), CERT, {}, 'bound', undefined],
    ['nbf now', token({ nbf: NOW }), CERT, {}, 'bound', undefined],
    ['nbf in the past', token({ nbf: NOW - 100 }), CERT, {}, 'bound', undefined],
    ['token type absent', token({ tokenType: undefined }), CERT, {}, 'bound', undefined],
    ['token type bearer in lower case', token({ tokenType: 'bearer' }), CERT, {}, 'bound', undefined],
    ['route scopes all granted', token({ scope: 'write admin read' }), CERT, { scopes: ['admin', 'read'] }, 'bound', undefined],
    ['route scopes granted, extra spaces in the scope string', token({ scope: '  admin   read ' }), CERT, { scopes: ['admin', 'read'] }, 'bound', undefined],
    ['audience among several', token({ aud: ['https://a.example', 'https://rs.example'] }), CERT, { audience: 'https://rs.example' }, 'bound', undefined],
    ['no route audience, any aud', token({ aud: [] }), CERT, {}, 'bound', undefined],
    ['mismatch under report-only', token(), OTHER, { binding: 'report-only' }, 'report_only', 'certificate_mismatch'],
    ['no certificate under report-only', token(), undefined, { binding: 'report-only' }, 'report_only', 'certificate_missing'],
    ['unbound token under report-only', UNBOUND, CERT, { binding: 'report-only' }, 'report_only', 'token_unbound'],
    ['untrusted certificate under report-only', token(), UNTRUSTED, { binding: 'report-only' }, 'report_only', 'certificate_untrusted'],
    ['matching certificate under report-only', token(), CERT, { binding: 'report-only' }, 'bound', undefined],
    ['mismatch under binding off', token(), OTHER, { binding: 'off' }, 'binding_off', undefined],
    ['no certificate under binding off', token(), undefined, { binding: 'off' }, 'binding_off', undefined],
    ['unbound token under binding off', UNBOUND, undefined, { binding: 'off' }, 'binding_off', undefined],
  ])('allows: %s', (_name, info, cert, overrides, reason, wouldDeny) => {
    const decision = decide({ token: info, certificate: cert, policy: policy(overrides), now: NOW });
    if (!decision.allow) throw new Error(`expected allow, got ${decision.error.reason}`);
    expect(decision.reason).toBe(reason);
    expect(decision.wouldDeny?.reason).toBe(wouldDeny);
  });

  it('fills the identity to forward from the token and the connection', () => {
    const claims = Object.freeze({ active: true, sub: 'alice', tenant: 't1' });
    const decision = decide({ token: token({ subject: 'alice', clientId: 'app', scope: 'read write', claims }), certificate: CERT, policy: policy(), now: NOW });
    if (!decision.allow) throw new Error(`expected allow, got ${decision.error.reason}`);
    expect(decision.reason).toBe('bound');
    expect(decision.wouldDeny).toBeUndefined();
    expect(decision.identity).toMatchObject({ subject: 'alice', clientId: 'app', scope: 'read write' });
    expect(decision.identity.certificate).toBe(CERT);
    expect(decision.identity.claims).toBe(claims);
  });

  it('leaves absent claims absent in the identity', () => {
    const decision = decide({ token: token({ subject: undefined, clientId: undefined, scope: undefined, cnf: undefined }), certificate: undefined, policy: policy({ binding: 'optional' }), now: NOW });
    if (!decision.allow) throw new Error(`expected allow, got ${decision.error.reason}`);
    expect(decision.reason).toBe('unbound');
    expect(decision.identity).toMatchObject({ subject: undefined, clientId: undefined, scope: undefined, certificate: undefined });
  });

  it('keeps the report-only would-be denial as it would have been rendered under required', () => {
    const decision = decide({ token: token(), certificate: undefined, policy: policy({ binding: 'report-only', missingCertificate: { code: 'invalid_request', status: 400 } }), now: NOW });
    if (!decision.allow) throw new Error('expected allow');
    expect(decision.wouldDeny).toMatchObject({ reason: 'certificate_missing', status: 400, error: 'invalid_request' });
  });

  it('is deterministic in time: the same token flips from allow to expired exactly at exp', () => {
    const info = token({ exp: NOW + 10 });
    expect(decide({ token: info, certificate: CERT, policy: policy(), now: NOW + 9.999 }).allow).toBe(true);
    expect(decide({ token: info, certificate: CERT, policy: policy(), now: NOW + 10 }).allow).toBe(false);
  });

  it('works with policies compiled from the config', () => {
    const settings = minimalSettings({
      binding: 'optional',
      routes: [{ pathPrefix: '/admin', scopes: ['admin'], binding: 'required' }],
      errors: { missingCertificate: { code: 'invalid_request', status: 400 } },
    });
    const table = compileRoutes(settings);
    const admin = table.routes[0];
    if (admin === undefined) throw new Error('no route');
    expect(denial(decide({ token: UNBOUND, certificate: CERT, policy: admin, now: NOW })).reason).toBe('token_unbound');
    expect(denial(decide({ token: token({ scope: 'read' }), certificate: CERT, policy: admin, now: NOW })).reason).toBe('insufficient_scope');
    expect(denial(decide({ token: token({ scope: 'admin' }), certificate: undefined, policy: admin, now: NOW }))).toMatchObject({ status: 400, error: 'invalid_request' });
    expect(decide({ token: token({ scope: 'admin' }), certificate: CERT, policy: admin, now: NOW }).allow).toBe(true);
    expect(decide({ token: UNBOUND, certificate: CERT, policy: table.fallback, now: NOW }).allow).toBe(true);
  });

  it.each<BindingMode>(['required', 'optional', 'report-only', 'off'])('never allows an inactive token under binding %s', (binding) => {
    for (const cert of [CERT, OTHER, undefined]) {
      expect(decide({ token: INACTIVE, certificate: cert, policy: policy({ binding }), now: NOW }).allow).toBe(false);
    }
  });
});

describe('scopesOf', () => {
  it.each<[string | undefined, string[]]>([
    [undefined, []],
    ['', []],
    ['read', ['read']],
    ['read write', ['read', 'write']],
    ['  read   write ', ['read', 'write']],
    ['read read', ['read']],
  ])('%j -> %j', (scope, expected) => {
    expect([...scopesOf(scope)]).toEqual(expected);
  });
});
