/** One challenge per accepted scheme (contract: "Proof-of-possession methods per route"; RFC 9449 §7). */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { challengesFor, GuardError, REASONS, renderError, type ReasonId, type RenderOptions } from '../../src/edge/render.ts';

const TCHAR = "[!#$%&'*+\\-.^_`|~0-9A-Za-z]";
const PARAM = new RegExp(`^(${TCHAR}+)[ \\t]*=[ \\t]*(?:(${TCHAR}+)|"((?:[\\t \\x21\\x23-\\x5b\\x5d-\\x7e]|\\\\[\\t \\x21-\\x7e])*)")`);

/** RFC 9110 §11.6.1 `challenge *( OWS "," OWS challenge )`: a strict reader; throws on anything else. */
function parseChallenges(header: string): { scheme: string; params: Map<string, string> }[] {
  const out: { scheme: string; params: Map<string, string> }[] = [];
  let rest = header;
  while (rest.length > 0) {
    const head = new RegExp(`^(${TCHAR}+)(?: +|$)`).exec(rest);
    if (head === null) throw new Error(`no scheme at ${rest}`);
    rest = rest.slice(head[0].length);
    const params = new Map<string, string>();
    for (;;) {
      const match = PARAM.exec(rest);
      if (match === null) break;
      const name = (match[1] ?? '').toLowerCase();
      if (params.has(name)) throw new Error(`repeated ${name}`);
      params.set(name, match[2] ?? (match[3] ?? '').replace(/\\(.)/g, '$1'));
      rest = rest.slice(match[0].length).replace(/^[ \t]*/, '');
      if (rest.startsWith(',')) rest = rest.slice(1).replace(/^[ \t]*/, '');
      else if (rest.length > 0) throw new Error(`junk ${rest}`);
    }
    out.push({ scheme: head[1] ?? '', params });
  }
  return out;
}

const ALGS = ['ES256', 'EdDSA', 'PS256'];
const MTLS: RenderOptions = { realm: 'cnfguard', methods: ['mtls'] };
const BOTH: RenderOptions = { realm: 'cnfguard', methods: ['mtls', 'dpop'], dpopAlgorithms: ALGS };

describe('challenges per accepted scheme', () => {
  it('keeps the old form when no methods are given', () => {
    const rendered = renderError(new GuardError('token_inactive'), { realm: 'cnfguard' });
    expect(rendered.headers['www-authenticate']).toBe('Bearer realm="cnfguard", error="invalid_token", error_description="the access token is not active"');
    expect(rendered.challenges).toEqual([rendered.headers['www-authenticate']]);
  });

  it('advertises the route methods on Bearer, and only Bearer on an mtls route', () => {
    expect(challengesFor(new GuardError('credentials_missing'), MTLS)).toEqual(['Bearer realm="cnfguard", supported_cnf_methods="mtls"']);
    expect(challengesFor(new GuardError('credentials_missing'), { ...MTLS, advertiseMethods: false })).toEqual(['Bearer realm="cnfguard"']);
  });

  it('answers no credentials with Bearer and DPoP algs, no error (RFC 9449 §7.2)', () => {
    const rendered = renderError(new GuardError('credentials_missing'), BOTH);
    expect(rendered.challenges).toEqual(['Bearer realm="cnfguard", supported_cnf_methods="mtls dpop"', 'DPoP algs="ES256 EdDSA PS256"']);
    expect(rendered.headers['www-authenticate']).toBe(rendered.challenges?.join(', '));
    expect(parseChallenges(rendered.headers['www-authenticate'] ?? '').map((c) => c.scheme)).toEqual(['Bearer', 'DPoP']);
  });

  it('puts an invalid proof error on the DPoP challenge, in the contract form', () => {
    const rendered = renderError(new GuardError('dpop_htu_mismatch'), { ...BOTH, scheme: 'dpop' });
    expect(rendered.status).toBe(401);
    expect(rendered.challenges?.[0]).toBe('Bearer realm="cnfguard", supported_cnf_methods="mtls dpop"');
    expect(rendered.challenges?.[1]).toMatch(/^DPoP error="invalid_dpop_proof", algs="ES256 EdDSA PS256", error_description="/);
    expect(JSON.parse(rendered.body)).toEqual({ error: 'invalid_dpop_proof', error_description: REASONS.dpop_htu_mismatch.description });
  });

  it('puts a Bearer request error on the Bearer challenge', () => {
    const [bearer, dpop] = parseChallenges(renderError(new GuardError('token_type_unsupported'), { ...BOTH, scheme: 'bearer' }).headers['www-authenticate'] ?? '');
    expect(bearer?.params.get('error')).toBe('invalid_token');
    expect(dpop?.params.has('error')).toBe(false);
    expect(dpop?.params.get('algs')).toBe('ES256 EdDSA PS256');
  });

  it('sends use_dpop_nonce with a DPoP-Nonce header and no-store', () => {
    const rendered = renderError(new GuardError('dpop_nonce_required', { dpopNonce: 'abc_DEF-123' }), { ...BOTH, scheme: 'dpop' });
    expect(rendered.headers['dpop-nonce']).toBe('abc_DEF-123');
    expect(rendered.headers['cache-control']).toBe('no-store');
    expect(rendered.challenges?.[1]).toMatch(/^DPoP error="use_dpop_nonce", algs=/);
  });

  it('renders a key mismatch as invalid_token on DPoP, and the scope of a 403 there', () => {
    expect(challengesFor(new GuardError('dpop_key_mismatch'), { ...BOTH, scheme: 'dpop' })[1]).toMatch(/^DPoP error="invalid_token", algs=/);
    const [, dpop] = parseChallenges(renderError(new GuardError('insufficient_scope', { scope: 'admin' }), { ...BOTH, scheme: 'dpop' }).headers['www-authenticate'] ?? '');
    expect(dpop?.params.get('scope')).toBe('admin');
  });

  it('gives the DPoP scheme on a route without dpop the bare missing-credentials answer', () => {
    const rendered = renderError(new GuardError('credentials_missing'), { ...MTLS, scheme: 'dpop' });
    expect(rendered.challenges).toEqual(['Bearer realm="cnfguard", supported_cnf_methods="mtls"']);
    expect(JSON.parse(rendered.body)).not.toHaveProperty('error');
  });

  it('a 503 replay-store failure carries its code on the challenge of the scheme used, as every error does', () => {
    const rendered = renderError(new GuardError('dpop_replay_unavailable'), { ...BOTH, scheme: 'dpop' });
    expect(rendered.status).toBe(503);
    const [bearer, dpop] = parseChallenges(rendered.headers['www-authenticate'] ?? '');
    expect(bearer?.params.has('error')).toBe(false);
    expect(dpop?.params.get('error')).toBe('temporarily_unavailable');
    expect(dpop?.params.get('error_description')).toBe(REASONS.dpop_replay_unavailable.description);
  });

  it('carries resource_metadata on both challenges', () => {
    const challenges = challengesFor(undefined, { ...BOTH, challengeParams: { resource_metadata: 'https://rs/.well-known/oauth-protected-resource' } });
    for (const c of parseChallenges(challenges.join(', '))) expect(c.params.get('resource_metadata')).toBe('https://rs/.well-known/oauth-protected-resource');
  });

  it('parses for every reason, scheme, method set and realm (property)', () => {
    const reasons = Object.keys(REASONS) as ReasonId[];
    fc.assert(
      fc.property(
        fc.constantFrom(...reasons),
        fc.constantFrom<('mtls' | 'dpop')[]>(['mtls'], ['dpop'], ['mtls', 'dpop']),
        fc.constantFrom<'bearer' | 'dpop'>('bearer', 'dpop'),
        fc.string({ unit: 'binary', maxLength: 20 }),
        (reason, methods, scheme, realm) => {
          const rendered = renderError(new GuardError(reason), { realm, methods, scheme, dpopAlgorithms: ALGS });
          for (const value of Object.values(rendered.headers)) expect(value).not.toMatch(/[\r\n\0]/);
          const header = rendered.headers['www-authenticate'];
          // Every error carries a challenge (the contract), with the body's code when it has one.
          expect(header).toBeDefined();
          const parsed = parseChallenges(header ?? '');
          expect(parsed.map((c) => c.scheme)).toEqual(methods.includes('dpop') ? ['Bearer', 'DPoP'] : ['Bearer']);
          const withError = parsed.filter((c) => c.params.has('error'));
          const code = (JSON.parse(rendered.body) as { error?: string }).error;
          expect(withError.length).toBe(code === undefined ? 0 : 1);
          if (withError[0] !== undefined) expect(withError[0].params.get('error')).toBe(code);
          if (withError[0] !== undefined) expect(withError[0].scheme).toBe(scheme === 'dpop' && methods.includes('dpop') ? 'DPoP' : 'Bearer');
        },
      ),
      { numRuns: 1000 },
    );
  });
});
