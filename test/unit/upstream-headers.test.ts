import type { IncomingHttpHeaders } from 'node:http';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { ClientCertificate } from '../../src/pipeline/client-cert.ts';
import type { Decision, Identity } from '../../src/pipeline/decide.ts';
import { identityHeadersOf } from '../../src/pipeline/identity-headers.ts';
import { compileRoutes } from '../../src/pipeline/route.ts';
import { FORWARDING_HEADERS, upstreamHeaders, type UpstreamHeaderInput } from '../../src/pipeline/upstream-headers.ts';
import { buildRuntime } from '../../src/runtime.ts';
import { createNonceSource } from '../../src/proof/nonce.ts';
import { createMemoryReplayStore } from '../../src/state/replay-store.ts';
import { clientCertificate } from '../fixtures/certificate.ts';
import { minimalSettings } from '../fixtures/config.ts';

function settings(extra: Record<string, unknown> = {}) {
  return minimalSettings({
    claimHeaders: { 'x-tenant': 'claims.tenant' },
    ...extra,
  });
}

const certificate = (trusted = true): ClientCertificate => clientCertificate('client1', { uris: ['spiffe://x/y'], dns: ['a.example'], trusted });

function allow(identity: Partial<Identity> = {}, reason: 'bound' | 'unbound' | 'binding_off' | 'report_only' = 'bound'): Extract<Decision, { allow: true }> {
  return { allow: true, reason, identity: { subject: undefined, clientId: undefined, scope: undefined, certificate: undefined, claims: {}, ...identity } };
}

const stripped = buildRuntime(settings({ trustedProxies: [{ cidrs: ['10.0.0.0/8'], header: 'x-client-cert', format: 'pem-urlencoded' }] }), {
  validator: { validate: () => Promise.reject(new Error('unused')) },
  replayStore: createMemoryReplayStore({ maxEntries: 1000 }),
  nonces: createNonceSource({ rotationSeconds: 60, now: () => Date.now() / 1000 }),
  now: Date.now,
}).stripped;

function forward(headers: IncomingHttpHeaders, overrides: Partial<Omit<UpstreamHeaderInput, 'identityHeaders'>> & { decision?: Extract<Decision, { allow: true }> } = {}): Record<string, string | string[]> {
  const { decision = allow(), ...input } = overrides;
  const route = input.route ?? compileRoutes(settings()).fallback;
  return upstreamHeaders(headers, { route, identityHeaders: identityHeadersOf(decision, route), host: 'api.example', requestId: 'rid', peer: '192.0.2.7', peerIsTrustedProxy: false, upgrade: false, stripped, ...input });
}

const FORGED = ['x-auth-subject', 'x-auth-client-id', 'x-auth-scope', 'x-auth-cert-thumbprint', 'x-forwarded-client-cert', 'x-auth-binding', 'x-tenant', 'x-client-cert'];

describe('upstreamHeaders', () => {
  it('drops every identity, claim and certificate header the client sent, in - and _ spellings', () => {
    const inbound: IncomingHttpHeaders = { 'x-other': 'kept', 'x_other': 'kept too' };
    for (const name of FORGED) {
      inbound[name] = 'forged';
      inbound[name.replaceAll('-', '_')] = 'forged';
    }
    inbound['x-auth_subject'] = 'forged';
    const out = forward(inbound);
    for (const [name, value] of Object.entries(out)) expect(value, name).not.toBe('forged');
    expect(out['x-other']).toBe('kept');
    expect(out['x_other']).toBe('kept too');
  });

  it('sets the verified identity and says why the request was allowed', () => {
    const cert = certificate();
    const out = forward({}, { decision: allow({ subject: 'alice', clientId: 'app', scope: 'read', certificate: cert, claims: { tenant: 't1' } }) });
    expect(out).toMatchObject({
      'x-auth-subject': 'alice',
      'x-auth-client-id': 'app',
      'x-auth-scope': 'read',
      'x-auth-cert-thumbprint': cert.thumbprint,
      'x-forwarded-client-cert': cert.xfcc,
      'x-tenant': 't1',
      'x-auth-binding': 'bound',
    });
    expect(forward({}, { decision: allow({}, 'report_only') })['x-auth-binding']).toBe('report_only');
  });

  it('never forwards a certificate that does not chain to tls.clientCa', () => {
    const out = forward({}, { decision: allow({ certificate: certificate(false) }, 'binding_off') });
    expect(out['x-auth-cert-thumbprint']).toBeUndefined();
    expect(out['x-forwarded-client-cert']).toBeUndefined();
  });

  it('sets the forwarding headers itself and removes the ones upstreams re-route or identify by', () => {
    const inbound: IncomingHttpHeaders = {};
    for (const name of FORWARDING_HEADERS) inbound[name] = '6.6.6.6';
    inbound['x_forwarded_for'] = '6.6.6.6';
    const out = forward(inbound);
    expect(out['x-forwarded-for']).toBe('192.0.2.7');
    expect(out['x-forwarded-host']).toBe('api.example');
    expect(out['x-forwarded-proto']).toBe('https');
    expect(out['x-request-id']).toBe('rid');
    for (const name of ['forwarded', 'x-real-ip', 'x-original-url', 'x-rewrite-url', 'x_forwarded_for']) expect(out[name], name).toBeUndefined();
  });

  it('appends to X-Forwarded-For only behind a trusted proxy', () => {
    expect(forward({ 'x-forwarded-for': '198.51.100.1' }, { peerIsTrustedProxy: true })['x-forwarded-for']).toBe('198.51.100.1, 192.0.2.7');
    expect(forward({ 'x-forwarded-for': '198.51.100.1' })['x-forwarded-for']).toBe('192.0.2.7');
  });

  it('keeps Host against Connection and drops hop-by-hop fields and what Connection names', () => {
    const out = forward({ host: 'api.example', connection: 'host, x-drop, content-length', 'x-drop': '1', 'content-length': '3', 'keep-alive': '5', te: 'trailers', 'transfer-encoding': 'chunked', upgrade: 'h2c' });
    expect(out).toMatchObject({ host: 'api.example', 'content-length': '3' });
    for (const name of ['connection', 'x-drop', 'keep-alive', 'te', 'transfer-encoding', 'upgrade']) expect(out[name], name).toBeUndefined();
  });

  it('keeps Connection: upgrade and Upgrade for a websocket', () => {
    expect(forward({ connection: 'Upgrade', upgrade: 'websocket' }, { upgrade: true })).toMatchObject({ connection: 'upgrade', upgrade: 'websocket' });
  });

  it('drops Authorization only where the route says so', () => {
    const route = compileRoutes(settings({ stripAuthorization: true })).fallback;
    expect(forward({ authorization: 'Bearer x' }, { route }).authorization).toBeUndefined();
    expect(forward({ authorization: 'Bearer x' }).authorization).toBe('Bearer x');
  });

  it('no header name spelled with any mix of case, - and _ passes as a managed one', () => {
    fc.assert(
      fc.property(fc.constantFrom(...FORGED, ...FORWARDING_HEADERS), fc.array(fc.boolean(), { minLength: 40, maxLength: 40 }), (name, flips) => {
        const spelled = [...name].map((c, i) => (c === '-' && flips[i] ? '_' : c)).join('');
        const out = forward({ [spelled]: 'forged' });
        expect(Object.values(out)).not.toContain('forged');
      }),
    );
  });
});
