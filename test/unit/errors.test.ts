import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { bearerChallenge, challengeSafe, GuardError, quoteString, REASONS, renderError, type ReasonId } from '../../src/edge/render.ts';

const TCHAR = "[!#$%&'*+\\-.^_`|~0-9A-Za-z]";

/**
 * A strict RFC 9110 §11.2 parser for one challenge: `scheme 1*SP auth-param *(OWS "," OWS auth-param)`,
 * auth-param values as token or quoted-string (§5.6.4). Throws on anything else, and on a repeated name.
 */
function parseChallenge(header: string): { scheme: string; params: Map<string, string> } {
  const head = new RegExp(`^(${TCHAR}+)(?: +(.*))?$`, 's').exec(header);
  if (head === null) throw new Error(`not a challenge: ${header}`);
  const params = new Map<string, string>();
  let rest = head[2] ?? '';
  const param = new RegExp(`^(${TCHAR}+)[ \\t]*=[ \\t]*(?:(${TCHAR}+)|"((?:[\\t \\x21\\x23-\\x5b\\x5d-\\x7e\\x80-\\xff]|\\\\[\\t \\x21-\\x7e\\x80-\\xff])*)")[ \\t]*(?:,[ \\t]*|$)`, 's');
  while (rest.length > 0) {
    const match = param.exec(rest);
    if (match === null) throw new Error(`bad auth-param list: ${rest}`);
    const name = (match[1] ?? '').toLowerCase();
    if (params.has(name)) throw new Error(`repeated auth-param ${name}`);
    params.set(name, match[2] ?? (match[3] ?? '').replace(/\\(.)/gs, '$1'));
    rest = rest.slice(match[0].length);
    if (rest.length > 0 && !match[0].includes(',')) throw new Error(`missing comma before ${rest}`);
  }
  return { scheme: head[1] ?? '', params };
}

function challengeOf(err: GuardError, realm = 'cnfguard', challengeParams?: Record<string, string>) {
  const rendered = renderError(err, challengeParams === undefined ? { realm } : { realm, challengeParams });
  const header = rendered.headers['www-authenticate'];
  if (header === undefined) throw new Error('no WWW-Authenticate');
  return { rendered, header, ...parseChallenge(header) };
}

/** RFC 6750 §3: error and error_description are %x20-21 / %x23-5B / %x5D-7E. */
const NQSCHAR = /^[\x20\x21\x23-\x5b\x5d-\x7e]+$/;

describe('the challenge parser used here', () => {
  it.each(['Bearer realm="a"b"', 'Bearer realm="a", realm="b"', 'Bearer realm="a" error="b"', 'Bearer realm="a\r\n"', 'Bearer realm=a b'])('rejects %j', (header) => {
    expect(() => parseChallenge(header)).toThrow();
  });

  it('reads quoted-pairs and token values', () => {
    expect(parseChallenge('Bearer realm="a\\"b", error=invalid_token').params).toEqual(new Map([['realm', 'a"b'], ['error', 'invalid_token']]));
  });
});

describe('renderError', () => {
  it('renders an invalid_token 401 exactly as the contract shows', () => {
    const rendered = renderError(new GuardError('certificate_mismatch', { detail: 'log only' }), { realm: 'cnfguard' });
    expect(rendered.status).toBe(401);
    expect(rendered.headers['www-authenticate']).toBe(
      'Bearer realm="cnfguard", error="invalid_token", error_description="the access token is bound to a different client certificate"',
    );
    expect(JSON.parse(rendered.body)).toEqual({ error: 'invalid_token', error_description: 'the access token is bound to a different client certificate' });
    expect(rendered.headers['cache-control']).toBe('no-store');
    expect(rendered.headers['content-type']).toBe('application/json');
  });

  it('gives missing credentials a bare challenge and a body without error (RFC 6750 §3.1)', () => {
    const { rendered, header, scheme, params } = challengeOf(new GuardError('credentials_missing'));
    expect(rendered.status).toBe(401);
    expect(header).toBe('Bearer realm="cnfguard"');
    expect(scheme).toBe('Bearer');
    expect([...params.keys()]).toEqual(['realm']);
    const body = JSON.parse(rendered.body) as Record<string, unknown>;
    expect(body).not.toHaveProperty('error');
    expect(body.error_description).toBe(REASONS.credentials_missing.description);
  });

  it('gives malformed requests 400 invalid_request', () => {
    const { rendered, params } = challengeOf(new GuardError('authorization_duplicated'));
    expect(rendered.status).toBe(400);
    expect(params.get('error')).toBe('invalid_request');
    expect(JSON.parse(rendered.body)).toMatchObject({ error: 'invalid_request' });
  });

  it('carries the scope on a 403 insufficient_scope', () => {
    const { rendered, params } = challengeOf(new GuardError('insufficient_scope', { scope: 'admin write', detail: 'missing admin' }));
    expect(rendered.status).toBe(403);
    expect(params.get('error')).toBe('insufficient_scope');
    expect(params.get('scope')).toBe('admin write');
    expect(JSON.parse(rendered.body)).toMatchObject({ error: 'insufficient_scope' });
  });

  it('renders the configured missing-certificate code and status', () => {
    const { rendered, params } = challengeOf(new GuardError('certificate_missing', { status: 400, error: 'invalid_request' }));
    expect(rendered.status).toBe(400);
    expect(params.get('error')).toBe('invalid_request');
    expect(JSON.parse(rendered.body)).toMatchObject({ error: 'invalid_request' });
  });

  it.each<[ReasonId, number, string]>([
    ['introspection_unavailable', 503, 'temporarily_unavailable'],
    ['introspection_misconfigured', 503, 'temporarily_unavailable'],
    ['introspection_budget_exhausted', 503, 'temporarily_unavailable'],
    ['introspection_rate_limited', 429, 'too_many_requests'],
    ['upstream_unreachable', 502, 'bad_gateway'],
    ['upstream_timeout', 504, 'gateway_timeout'],
  ])('renders %s as %i, its code %s on the challenge (every error carries one) and in the body', (reason, status, code) => {
    const rendered = renderError(new GuardError(reason, { detail: 'connect ECONNREFUSED' }), { realm: 'cnfguard' });
    expect(rendered.status).toBe(status);
    expect(rendered.headers['www-authenticate']).toBe(`Bearer realm="cnfguard", error="${code}", error_description="${REASONS[reason].description}"`);
    expect(rendered.headers['cache-control']).toBe('no-store');
    expect(JSON.parse(rendered.body)).toEqual({ error: code, error_description: REASONS[reason].description });
  });

  it('sends Retry-After with an over-budget refusal', () => {
    const rendered = renderError(new GuardError('introspection_rate_limited', { retryAfterSeconds: 2 }), { realm: 'cnfguard' });
    expect(rendered.status).toBe(429);
    expect(rendered.headers['retry-after']).toBe('2');
  });

  it('never sends the log-only detail', () => {
    const rendered = renderError(new GuardError('certificate_mismatch', { detail: 'SECRET-DETAIL' }), { realm: 'cnfguard' });
    expect(JSON.stringify(rendered)).not.toContain('SECRET-DETAIL');
  });

  it('strips quote and backslash from the realm, and the challenge still parses', () => {
    const { params, header } = challengeOf(new GuardError('token_inactive'), 'my "realm" \\ here');
    expect(params.get('realm')).toBe('my realm  here');
    expect(params.get('error')).toBe('invalid_token');
    expect(header).not.toMatch(/\\/);
  });

  it('drops CR and LF from every value, so nothing can add a header line', () => {
    const { rendered, params } = challengeOf(new GuardError('token_inactive'), 'evil\r\nSet-Cookie: a=b', { resource_metadata: 'https://rs.example/\r\nX: y' });
    for (const value of Object.values(rendered.headers)) expect(value).not.toMatch(/[\r\n]/);
    expect(params.get('realm')).toBe('evilSet-Cookie: a=b');
    expect(params.get('resource_metadata')).toBe('https://rs.example/X: y');
  });

  it('appends extra challenge parameters after the error', () => {
    const { params, header } = challengeOf(new GuardError('token_inactive'), 'cnfguard', { resource_metadata: 'https://rs.example/.well-known/oauth-protected-resource' });
    expect(params.get('resource_metadata')).toBe('https://rs.example/.well-known/oauth-protected-resource');
    expect(header.indexOf('resource_metadata=')).toBeGreaterThan(header.indexOf('error_description='));
  });

  it('parses for every reason and every realm (property)', () => {
    const reasons = Object.keys(REASONS) as ReasonId[];
    fc.assert(
      fc.property(fc.constantFrom(...reasons), fc.string({ unit: 'binary', maxLength: 30 }), (reason, realm) => {
        const rendered = renderError(new GuardError(reason), { realm });
        for (const value of Object.values(rendered.headers)) expect(value).not.toMatch(/[\r\n\0]/);
        const header = rendered.headers['www-authenticate'];
        expect(header).toBeDefined();
        const { scheme, params } = parseChallenge(header ?? '');
        expect(scheme).toBe('Bearer');
        expect(params.get('realm')).toBe(challengeSafe(realm));
        expect(params.get('error')).toBe((JSON.parse(rendered.body) as { error?: string }).error);
      }),
      { numRuns: 2000 },
    );
  });
});

describe('REASONS', () => {
  const entries = Object.entries(REASONS) as [ReasonId, (typeof REASONS)[ReasonId]][];

  it.each(entries)('%s has an error status, a safe code and a safe description', (_reason, spec) => {
    expect(spec.status).toBeGreaterThanOrEqual(400);
    expect(spec.status).toBeLessThanOrEqual(599);
    if (spec.error !== undefined) expect(spec.error).toMatch(NQSCHAR);
    if (spec.error !== undefined) expect(spec.error).not.toContain(' ');
    // Descriptions go into the challenge as they are: challengeSafe must not need to drop anything.
    expect(spec.description).toMatch(NQSCHAR);
    expect(challengeSafe(spec.description)).toBe(spec.description);
  });

  it.each(entries.filter(([, spec]) => spec.error === 'invalid_token' || spec.error === 'insufficient_scope'))(
    '%s uses the RFC 6750 §3.1 status for its code',
    (_reason, spec) => {
      expect(spec.status).toBe(spec.error === 'invalid_token' ? 401 : 403);
    },
  );

  it('has no OAuth error code only for missing credentials, HTTP-level refusals and server faults', () => {
    const withoutCode = entries.filter(([, spec]) => spec.error === undefined).map(([reason]) => reason);
    expect(withoutCode.sort()).toEqual([
      'body_too_large',
      'client_aborted',
      'credentials_missing',
      'dpop_replay_unavailable',
      'headers_too_large',
      'headers_too_many',
      'http_malformed',
      'httpsig_body_too_large',
      'httpsig_replay_unavailable',
      'internal_error',
      'introspection_budget_exhausted',
      'introspection_misconfigured',
      'introspection_rate_limited',
      'introspection_unavailable',
      'introspection_unverified',
      'jwks_unavailable',
      'method_unsupported',
      'request_timeout',
      'server_busy',
      'shared_state_unavailable',
      'transfer_coding_unsupported',
      'upstream_timeout',
      'upstream_unreachable',
      'url_too_long',
    ]);
  });
});

describe('challenge helpers', () => {
  it.each<[string, string]>([
    ['plain', 'plain'],
    ['with "quotes"', 'with quotes'],
    ['back\\slash', 'backslash'],
    ['cr\rlf\n', 'crlf'],
    ['tab\there', 'tabhere'],
    ['non-ascii é', 'non-ascii '],
    ['~!#[]', '~!#[]'],
  ])('challengeSafe(%j) -> %j', (input, output) => {
    expect(challengeSafe(input)).toBe(output);
  });

  it.each<[string, string]>([
    ['abc', '"abc"'],
    ['a"b', '"a\\"b"'],
    ['a\\b', '"a\\\\b"'],
    ['', '""'],
  ])('quoteString(%j) -> %s', (input, output) => {
    expect(quoteString(input)).toBe(output);
  });

  it('builds a bare challenge when there are no credentials to judge', () => {
    expect(bearerChallenge('r', new GuardError('credentials_missing'))).toBe('Bearer realm="r"');
    expect(bearerChallenge('r')).toBe('Bearer realm="r"');
  });

  it('GuardError keeps the reason, the overrides and the spec description', () => {
    const err = new GuardError('certificate_missing', { status: 400, error: 'invalid_request', detail: 'x5t#S256 proof missing' });
    expect(err).toBeInstanceOf(Error);
    expect(err).toMatchObject({ name: 'GuardError', reason: 'certificate_missing', status: 400, error: 'invalid_request', detail: 'x5t#S256 proof missing' });
    expect(err.description).toBe(REASONS.certificate_missing.description);
  });
});
