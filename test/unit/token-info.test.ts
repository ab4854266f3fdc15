import { describe, expect, it } from 'vitest';
import { INACTIVE, InvalidIntrospectionAnswer, tokenInfoFromAnswer } from '../../src/introspection/token-info.ts';

describe('tokenInfoFromAnswer', () => {
  it.each<[string, unknown]>([
    ['{"active": false}', { active: false }],
    ['active false with other members', { active: false, sub: 'alice', scope: 'admin', cnf: { 'x5t#S256': 'x' } }],
    ['active false with members of the wrong type', { active: false, exp: 'soon' }],
  ])('reads %s as INACTIVE', (_name, answer) => {
    expect(tokenInfoFromAnswer(answer)).toBe(INACTIVE);
  });

  it('INACTIVE carries nothing and is frozen', () => {
    expect(INACTIVE).toMatchObject({ active: false, subject: undefined, clientId: undefined, scope: undefined, tokenType: undefined, exp: undefined, nbf: undefined, iss: undefined, aud: [], cnf: undefined });
    expect(INACTIVE.claims).toEqual({});
    expect(Object.isFrozen(INACTIVE)).toBe(true);
  });

  it('maps the registered claims of an active answer', () => {
    const answer = {
      active: true,
      sub: 'alice',
      client_id: 'app',
      scope: 'read write',
      token_type: 'Bearer',
      exp: 1_750_000_600,
      nbf: 1_750_000_000,
      iat: 1_750_000_000,
      iss: 'https://as.example',
      aud: ['https://rs.example', 'https://other.example'],
      username: 'Alice',
      jti: 'j1',
      cnf: { 'x5t#S256': 'bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2' },
      extension_member: { anything: true },
    };
    const info = tokenInfoFromAnswer(answer);
    expect(info).toMatchObject({
      active: true,
      subject: 'alice',
      clientId: 'app',
      scope: 'read write',
      tokenType: 'Bearer',
      exp: 1_750_000_600,
      nbf: 1_750_000_000,
      iss: 'https://as.example',
      aud: ['https://rs.example', 'https://other.example'],
      cnf: { 'x5t#S256': 'bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2' },
    });
    // Claims are not kept unless asked for: they would cost memory on every cached token.
    expect(info.claims).toEqual({});
    expect(tokenInfoFromAnswer(answer, { keepClaims: true }).claims).toEqual(answer);
    expect(Object.isFrozen(info)).toBe(true);
    expect(Object.isFrozen(info.aud)).toBe(true);
    expect(Object.isFrozen(info.cnf)).toBe(true);
    expect(Object.isFrozen(tokenInfoFromAnswer(answer, { keepClaims: true }).claims)).toBe(true);
  });

  it('shares repeated values between answers (memory per cached token), never mixing them up', () => {
    const one = tokenInfoFromAnswer({ active: true, client_id: 'app', aud: 'https://rs.example', cnf: { 'x5t#S256': 'a'.repeat(43) } });
    const two = tokenInfoFromAnswer({ active: true, client_id: 'app', aud: 'https://rs.example', cnf: { 'x5t#S256': 'a'.repeat(43) } });
    const other = tokenInfoFromAnswer({ active: true, client_id: 'app', aud: 'https://rs.example', cnf: { 'x5t#S256': 'b'.repeat(43) } });
    expect(two.cnf).toBe(one.cnf);
    expect(two.aud).toBe(one.aud);
    expect(other.cnf).toEqual({ 'x5t#S256': 'b'.repeat(43) });
    expect(other.cnf).not.toBe(one.cnf);
  });

  it('reads {"active": true} alone as an active token with no claims', () => {
    expect(tokenInfoFromAnswer({ active: true })).toMatchObject({ active: true, subject: undefined, clientId: undefined, scope: undefined, tokenType: undefined, exp: undefined, nbf: undefined, iss: undefined, aud: [], cnf: undefined });
  });

  it('turns a string aud into a one-element list', () => {
    expect(tokenInfoFromAnswer({ active: true, aud: 'https://rs.example' }).aud).toEqual(['https://rs.example']);
  });

  it('keeps every cnf member, including ones it cannot verify', () => {
    expect(tokenInfoFromAnswer({ active: true, cnf: { jkt: 'k', 'x5t#S256': 't' } }).cnf).toEqual({ jkt: 'k', 'x5t#S256': 't' });
    expect(tokenInfoFromAnswer({ active: true, cnf: {} }).cnf).toEqual({});
  });

  it('does not share the cnf object of the answer', () => {
    const answer = { active: true, cnf: { 'x5t#S256': 't' } as Record<string, unknown> };
    const info = tokenInfoFromAnswer(answer);
    answer.cnf['x5t#S256'] = 'changed';
    expect(info.cnf).toEqual({ 'x5t#S256': 't' });
  });

  it.each<[string, unknown]>([
    ['null', null],
    ['a string', 'active'],
    ['a number', 1],
    ['an array', [{ active: true }]],
    ['an empty object', {}],
    ['active missing', { sub: 'alice' }],
    ['active as a string', { active: 'true' }],
    ['active as a number', { active: 1 }],
    ['active null', { active: null }],
    ['exp as a string', { active: true, exp: '1750000600' }],
    ['nbf as a string', { active: true, nbf: '0' }],
    ['scope as a list', { active: true, scope: ['read'] }],
    ['sub as a number', { active: true, sub: 42 }],
    ['client_id as a number', { active: true, client_id: 42 }],
    ['token_type as a number', { active: true, token_type: 1 }],
    ['aud as a number', { active: true, aud: 1 }],
    ['aud as a list with a number', { active: true, aud: ['a', 1] }],
    ['iss as an object', { active: true, iss: {} }],
    ['cnf as a string', { active: true, cnf: 'x5t' }],
    ['cnf as a list', { active: true, cnf: [] }],
    ['cnf null', { active: true, cnf: null }],
  ])('refuses an answer with %s', (_name, answer) => {
    expect(() => tokenInfoFromAnswer(answer)).toThrow(InvalidIntrospectionAnswer);
  });

  it('names the offending member in the error', () => {
    expect(() => tokenInfoFromAnswer({ active: true, exp: 'soon' })).toThrow(/exp/);
    expect(() => tokenInfoFromAnswer({ active: 'yes' })).toThrow(/active/);
  });
});
