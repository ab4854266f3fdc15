/** The decision rows of the contract's "methods per route" and "DPoP" sections. */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { INACTIVE, type TokenInfo } from '../../src/introspection/token-info.ts';
import { renderError, type ReasonId } from '../../src/edge/render.ts';
import { checkBinding, jktVerifier, verifiersFor, x5tS256Verifier } from '../../src/pipeline/binding.ts';
import { decide, schemeAccepted, type Decision, type DecisionInput } from '../../src/pipeline/decide.ts';
import { compileRoutes, type RoutePolicy } from '../../src/pipeline/route.ts';
import { memberKeyId } from '../../src/proof/httpsig-key.ts';
import { clientCertificate } from '../fixtures/certificate.ts';
import { minimalSettings } from '../fixtures/config.ts';

const NOW = 1_750_000_000;
const b64 = (label: string) => createHash('sha256').update(label).digest('base64url');

const CERT = clientCertificate('client1');
const OTHER_CERT = clientCertificate('client2');
const JKT = b64('key1');
const OTHER_JKT = b64('key2');
const PROOF = { jkt: JKT };

function token(overrides: Partial<TokenInfo> = {}): TokenInfo {
  return { ...INACTIVE, active: true, subject: 'alice', clientId: 'app', scope: 'read', tokenType: 'DPoP', exp: NOW + 600, aud: [], cnf: { jkt: JKT }, ...overrides };
}
const MTLS_TOKEN = token({ tokenType: 'Bearer', cnf: { 'x5t#S256': CERT.thumbprint } });
const BOTH_TOKEN = token({ cnf: { 'x5t#S256': CERT.thumbprint, jkt: JKT } });
const UNBOUND = token({ tokenType: 'Bearer', cnf: undefined });

const FALLBACK = compileRoutes(minimalSettings()).fallback;
const policy = (overrides: Partial<RoutePolicy> = {}): RoutePolicy => ({ ...FALLBACK, ...overrides });
const DPOP = policy({ methods: ['dpop'] });
const BOTH = policy({ methods: ['mtls', 'dpop'] });

function run(input: Partial<DecisionInput> & { token: TokenInfo; policy: RoutePolicy }): Decision {
  return decide({ certificate: undefined, now: NOW, ...input });
}
function reason(decision: Decision): ReasonId | 'allow' {
  return decision.allow ? 'allow' : decision.error.reason;
}

describe('decide: DPoP and methods per route', () => {
  type Row = [string, Partial<DecisionInput> & { token: TokenInfo; policy: RoutePolicy }, ReasonId | 'allow', number?, string?];
  it.each<Row>([
    ['DPoP token, valid proof of its key', { token: token(), policy: DPOP, scheme: 'dpop', proof: PROOF }, 'allow'],
    ['DPoP token, proof of another key', { token: token(), policy: DPOP, scheme: 'dpop', proof: { jkt: OTHER_JKT } }, 'dpop_key_mismatch', 401, 'invalid_token'],
    ['DPoP token, cnf.jkt not a thumbprint', { token: token({ cnf: { jkt: 'short' } }), policy: DPOP, scheme: 'dpop', proof: PROOF }, 'dpop_key_mismatch', 401, 'invalid_token'],
    ['DPoP scheme without a verified proof (pipeline guard)', { token: token(), policy: DPOP, scheme: 'dpop' }, 'dpop_proof_missing', 401, 'invalid_dpop_proof'],
    ['DPoP scheme on an mtls-only route: as for missing credentials', { token: token(), policy: policy(), scheme: 'dpop', proof: PROOF }, 'credentials_missing', 401, undefined],
    ['DPoP token as Bearer on a dpop route', { token: token(), policy: DPOP, scheme: 'bearer' }, 'token_type_unsupported', 401, 'invalid_token'],
    ['DPoP token as Bearer, binding off', { token: token(), policy: policy({ methods: ['dpop'], binding: 'off' }), scheme: 'bearer' }, 'token_type_unsupported', 401, 'invalid_token'],
    ['cnf.jkt token (type Bearer) as Bearer', { token: token({ tokenType: 'Bearer' }), policy: BOTH }, 'token_type_unsupported', 401, 'invalid_token'],
    ['token_type DPoP without cnf as Bearer', { token: token({ cnf: undefined }), policy: BOTH, certificate: CERT }, 'token_type_unsupported', 401, 'invalid_token'],
    ['unbound token with the DPoP scheme', { token: UNBOUND, policy: policy({ methods: ['dpop'], binding: 'optional' }), scheme: 'dpop', proof: PROOF }, 'dpop_token_unbound', 401, 'invalid_token'],
    ['mTLS token with the DPoP scheme', { token: MTLS_TOKEN, policy: BOTH, scheme: 'dpop', proof: PROOF, certificate: CERT }, 'dpop_token_unbound', 401, 'invalid_token'],
    ['token_type Bearer with cnf.jkt, DPoP scheme', { token: token({ tokenType: 'Bearer' }), policy: DPOP, scheme: 'dpop', proof: PROOF }, 'dpop_token_unbound', 401, 'invalid_token'],
    ['both members, both proofs match', { token: BOTH_TOKEN, policy: BOTH, scheme: 'dpop', proof: PROOF, certificate: CERT }, 'allow'],
    ['both members, certificate of another client', { token: BOTH_TOKEN, policy: BOTH, scheme: 'dpop', proof: PROOF, certificate: OTHER_CERT }, 'certificate_mismatch', 401, 'invalid_token'],
    ['both members, no certificate', { token: BOTH_TOKEN, policy: BOTH, scheme: 'dpop', proof: PROOF }, 'certificate_missing', 401, 'invalid_token'],
    ['both members, proof of another key', { token: BOTH_TOKEN, policy: BOTH, scheme: 'dpop', proof: { jkt: OTHER_JKT }, certificate: CERT }, 'dpop_key_mismatch', 401, 'invalid_token'],
    ['both members, route accepting dpop only: x5t#S256 is an unknown method', { token: BOTH_TOKEN, policy: DPOP, scheme: 'dpop', proof: PROOF, certificate: CERT }, 'cnf_unsupported', 401, 'invalid_token'],
    ['both members, dpop only, unknownMethods ignore', { token: BOTH_TOKEN, policy: policy({ methods: ['dpop'], unknownCnf: 'ignore' }), scheme: 'dpop', proof: PROOF }, 'allow'],
    ['mTLS token on a dpop-only route', { token: MTLS_TOKEN, policy: DPOP, certificate: CERT }, 'cnf_unsupported', 401, 'invalid_token'],
    ['mTLS token on a dpop-only route, unknownMethods ignore: unbound under required', { token: MTLS_TOKEN, policy: policy({ methods: ['dpop'], unknownCnf: 'ignore' }), certificate: CERT }, 'token_unbound', 401, 'invalid_token'],
    ['mTLS token on an mtls+dpop route', { token: MTLS_TOKEN, policy: BOTH, certificate: CERT }, 'allow'],
    ['mTLS token on an mtls+dpop route, other certificate', { token: MTLS_TOKEN, policy: BOTH, certificate: OTHER_CERT }, 'certificate_mismatch', 401, 'invalid_token'],
    ['unbound token on a dpop route, binding required', { token: UNBOUND, policy: DPOP }, 'token_unbound', 401, 'invalid_token'],
    ['unbound token on a dpop route, binding optional', { token: UNBOUND, policy: policy({ methods: ['dpop'], binding: 'optional' }) }, 'allow'],
    ['DPoP key mismatch under report-only is forwarded', { token: token(), policy: policy({ methods: ['dpop'], binding: 'report-only' }), scheme: 'dpop', proof: { jkt: OTHER_JKT } }, 'allow'],
    ['inactive token with a valid proof', { token: INACTIVE, policy: DPOP, scheme: 'dpop', proof: PROOF }, 'token_inactive', 401, 'invalid_token'],
    ['valid proof, missing scope', { token: token(), policy: policy({ methods: ['dpop'], scopes: ['admin'] }), scheme: 'dpop', proof: PROOF }, 'insufficient_scope', 403, 'insufficient_scope'],
  ])('%s', (_name, input, expected, status, error) => {
    const decision = run(input);
    expect(reason(decision)).toBe(expected);
    if (!decision.allow) {
      expect(decision.error.status).toBe(status);
      expect(decision.error.error).toBe(error);
    }
  });

  it('forwards the proof key thumbprint with the identity, and reports a would-be denial', () => {
    const ok = run({ token: token(), policy: DPOP, scheme: 'dpop', proof: PROOF });
    expect(ok).toMatchObject({ allow: true, reason: 'bound', identity: { dpopThumbprint: JKT, subject: 'alice' } });
    const mtls = run({ token: MTLS_TOKEN, policy: BOTH, certificate: CERT });
    expect(mtls.allow && mtls.identity.dpopThumbprint).toBeUndefined();
    const report = run({ token: token(), policy: policy({ methods: ['dpop'], binding: 'report-only' }), scheme: 'dpop', proof: { jkt: OTHER_JKT } });
    expect(report).toMatchObject({ allow: true, reason: 'report_only', wouldDeny: { reason: 'dpop_key_mismatch' } });
  });

  it('tells which schemes a route accepts', () => {
    expect(schemeAccepted(FALLBACK, 'bearer')).toBe(true);
    expect(schemeAccepted(FALLBACK, 'dpop')).toBe(false);
    expect(schemeAccepted(DPOP, 'bearer')).toBe(true);
    expect(schemeAccepted(DPOP, 'dpop')).toBe(true);
  });
});

describe('refusals of a proof method\'s scheme say what is wrong, in that scheme\'s codes', () => {
  const JWK = { kty: 'OKP', crv: 'Ed25519', x: '11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo', alg: 'Ed25519' };
  const SIGNED = { jkt: memberKeyId('jwk', JWK) as string };
  const HTTPSIG_AND_DPOP = policy({ methods: ['dpop', 'httpsig'] });
  const challengesOf = (decision: Decision, scheme: string) => {
    if (decision.allow) throw new Error('expected a refusal');
    const rendered = renderError(decision.error, { realm: 'cnfguard', methods: HTTPSIG_AND_DPOP.methods, scheme, dpopAlgorithms: ['ES256'] });
    return { challenges: rendered.challenges ?? [], body: JSON.parse(rendered.body) as Record<string, unknown>, reason: decision.error.reason };
  };

  it('cnf with jwk and jkt, sent as HTTPSig with a verified signature and no DPoP proof: invalid_token on the HTTPSig challenge, saying a DPoP proof is needed too', () => {
    const both = token({ tokenType: undefined, cnf: { jwk: JWK, jkt: JKT } });
    const seen = challengesOf(run({ token: both, policy: HTTPSIG_AND_DPOP, scheme: 'httpsig', proof: SIGNED }), 'httpsig');
    expect(seen.reason).toBe('dpop_proof_missing');
    expect(seen.challenges).toEqual([
      'Bearer realm="cnfguard", supported_cnf_methods="dpop httpsig"',
      'DPoP algs="ES256"',
      'HTTPSig realm="cnfguard", error="invalid_token", error_description="the access token is bound to a DPoP key too: a DPoP proof is required as well"',
    ]);
    expect(seen.body).toEqual({ error: 'invalid_token', error_description: 'the access token is bound to a DPoP key too: a DPoP proof is required as well' });
    // The mirror (sent as DPoP with a valid proof, no signature) was already invalid_token, on the DPoP challenge.
    const mirror = challengesOf(run({ token: both, policy: HTTPSIG_AND_DPOP, scheme: 'dpop', proof: PROOF }), 'dpop');
    expect(mirror.reason).toBe('httpsig_signature_missing');
    expect(mirror.challenges[1]).toBe('DPoP error="invalid_token", algs="ES256", error_description="an HTTP message signature tagged httpsig-oauth is required"');
    // The DPoP scheme with no proof at all keeps its own code.
    expect(challengesOf(run({ token: token(), policy: DPOP, scheme: 'dpop' }), 'dpop').body.error).toBe('invalid_dpop_proof');
  });

  it('cnf.jkt with token_type Bearer, sent as DPoP with a valid proof: dpop_token_unbound, saying the type is Bearer rather than that it is unbound', () => {
    const decision = run({ token: token({ tokenType: 'Bearer' }), policy: DPOP, scheme: 'dpop', proof: PROOF });
    expect(decision).toMatchObject({ allow: false, error: { reason: 'dpop_token_unbound', error: 'invalid_token', description: 'the access token is of type Bearer, not DPoP' } });
    // A token with no cnf.jkt at all keeps the words it had.
    expect(run({ token: UNBOUND, policy: DPOP, scheme: 'dpop', proof: PROOF })).toMatchObject({ allow: false, error: { reason: 'dpop_token_unbound', description: 'the access token is not bound to a DPoP key' } });
  });
});

describe('binding: the jkt verifier', () => {
  it('matches only the same thumbprint, refuses another, and says missing without a proof', () => {
    expect(jktVerifier.verify(JKT, { certificate: undefined, dpop: { jkt: JKT } })).toBe('match');
    expect(jktVerifier.verify(JKT, { certificate: undefined, dpop: { jkt: OTHER_JKT } })).toBe('mismatch');
    expect(jktVerifier.verify(`${JKT}=`, { certificate: undefined, dpop: { jkt: JKT } })).toBe('mismatch');
    expect(jktVerifier.verify(42, { certificate: undefined, dpop: { jkt: JKT } })).toBe('mismatch');
    expect(jktVerifier.verify(JKT, { certificate: CERT })).toBe('missing');
  });

  it('needs every member verified; a mismatch outranks a missing proof', () => {
    const cnf = { 'x5t#S256': CERT.thumbprint, jkt: JKT };
    const all = verifiersFor(['mtls', 'dpop']);
    expect(checkBinding(cnf, { certificate: CERT, dpop: PROOF }, all)).toEqual({ kind: 'bound', methods: ['dpop', 'mtls'] });
    expect(checkBinding(cnf, { certificate: undefined, dpop: PROOF }, all)).toMatchObject({ kind: 'failed', reason: 'certificate_missing' });
    expect(checkBinding(cnf, { certificate: CERT }, all)).toMatchObject({ kind: 'failed', reason: 'dpop_proof_missing' });
    expect(checkBinding(cnf, { certificate: undefined, dpop: { jkt: OTHER_JKT } }, all)).toMatchObject({ kind: 'failed', reason: 'dpop_key_mismatch' });
    expect(checkBinding(cnf, { certificate: CERT, dpop: PROOF }, [x5tS256Verifier])).toMatchObject({ kind: 'failed', reason: 'cnf_unsupported' });
  });
});
