/**
 * One validated-answer cache (introspection/answer-cache.ts) for both sources: the introspection cache and
 * the JWT validator, each given an instance built outside (as app.ts does), keep an answer under
 * the same key (the token's hash) for the same lifetime (until exp, capped at maxTtlSeconds).
 */
import { describe, expect, it } from 'vitest';
import { createCachedIntrospector } from '../../src/introspection/cache.ts';
import { INACTIVE, type TokenInfo } from '../../src/introspection/token-info.ts';
import { createAnswerCache, tokenCacheKey } from '../../src/introspection/answer-cache.ts';
import { createTokenValidator } from '../../src/validation/validator.ts';
import { manualClock } from '../fixtures/clock.ts';

const RULES = { maxEntries: 100, maxTtlSeconds: 300, negativeTtlSeconds: 5 };
const ROUTE = { validation: 'jwt', audience: undefined } as const;

function sources() {
  const clock = manualClock();
  const nowSeconds = () => Math.floor(clock.now() / 1000);
  const calls = { introspect: 0, verify: 0 };
  const info = (expInSeconds: number): TokenInfo => ({ ...INACTIVE, active: true, aud: [], exp: nowSeconds() + expInSeconds });
  const answers = { introspection: createAnswerCache({ ...RULES, now: clock.now }), jwt: createAnswerCache({ ...RULES, negativeTtlSeconds: 0, now: clock.now }) };
  const introspector = createCachedIntrospector(async (token) => (calls.introspect++, info(Number(token.split('.')[1]))), { ...RULES, answers: answers.introspection, now: clock.now });
  const validator = createTokenValidator({
    introspector,
    jwt: { issuer: 'https://as.example', verify: async (token) => (calls.verify++, info(Number(token.split('.')[1]))) },
    answers: answers.jwt,
    cache: { maxEntries: 0, maxTtlSeconds: 0 },
    now: clock.now,
  });
  return { clock, calls, answers, introspector, validator };
}

describe('one validated-answer cache for introspection and JWT', () => {
  it.each([
    ['exp beyond maxTtlSeconds: kept maxTtlSeconds', 3600, 300],
    ['exp within maxTtlSeconds: kept until exp', 120, 120],
  ])('%s, for both sources alike', async (_name, expIn, keptSeconds) => {
    const s = sources();
    const token = `h.${expIn}.s`;
    await s.introspector.lookup(token);
    await s.validator.validate(token, ROUTE);
    for (const cache of [s.answers.introspection, s.answers.jwt]) expect(cache.get(tokenCacheKey(token))?.active).toBe(true);
    s.clock.advance(keptSeconds * 1000 - 1000);
    await s.introspector.lookup(token);
    await s.validator.validate(token, ROUTE);
    expect(s.calls).toEqual({ introspect: 1, verify: 1 });
    s.clock.advance(1000);
    for (const cache of [s.answers.introspection, s.answers.jwt]) expect(cache.get(tokenCacheKey(token))).toBeUndefined();
    await s.introspector.lookup(token);
    await s.validator.validate(token, ROUTE);
    expect(s.calls).toEqual({ introspect: 2, verify: 2 });
  });

  it('the two instances are apart: an introspected answer never answers a JWT route', async () => {
    const s = sources();
    await s.introspector.lookup('h.3600.s');
    await s.validator.validate('h.3600.s', ROUTE);
    expect(s.calls).toEqual({ introspect: 1, verify: 1 });
    expect([s.introspector.size, s.validator.size]).toEqual([1, 1]);
  });
});
