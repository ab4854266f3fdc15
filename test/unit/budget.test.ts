import { describe, expect, it } from 'vitest';
import { createIntrospectionBudget, peerKey, TokenBucket, type IntrospectionBudgetOptions } from '../../src/introspection/budget.ts';

const T0 = 1_750_000_000_000;

describe('TokenBucket', () => {
  it('starts full, gives out its burst, then one token per 1/rate seconds', () => {
    const bucket = new TokenBucket(10, 3, T0);
    for (let i = 0; i < 3; i++) {
      expect(bucket.waitMs(T0)).toBe(0);
      bucket.take();
    }
    expect(bucket.waitMs(T0)).toBe(100);
    expect(bucket.waitMs(T0 + 60)).toBe(40);
    expect(bucket.waitMs(T0 + 100)).toBe(0);
    bucket.take();
    expect(bucket.waitMs(T0 + 100)).toBe(100);
  });

  it('never holds more than its burst, however long it idles', () => {
    const bucket = new TokenBucket(10, 3, T0);
    expect(bucket.waitMs(T0 + 3_600_000)).toBe(0);
    expect(bucket.tokens).toBe(3);
  });

  it('a clock going backwards neither refills nor breaks it', () => {
    const bucket = new TokenBucket(1, 1, T0);
    bucket.take();
    expect(bucket.waitMs(T0 - 10_000)).toBe(1000);
    expect(bucket.tokens).toBe(0);
  });
});

describe('peerKey', () => {
  it.each([
    ['192.0.2.7', '192.0.2.7'],
    ['::ffff:192.0.2.7', '192.0.2.7'],
    ['2001:db8:1:2:3:4:5:6', '2001:db8:1:2::/64'],
    ['2001:db8:1:2::99', '2001:db8:1:2::/64'],
    ['2001:DB8:0001:0002:ffff::1', '2001:db8:1:2::/64'],
    ['2001:db8::1', '2001:db8:0:0::/64'],
    ['::1', '0:0:0:0::/64'],
    ['fe80::1%eth0', 'fe80:0:0:0::/64'],
    ['[2001:db8:1:2::1]', '2001:db8:1:2::/64'],
    ['not-an-address', 'not-an-address'],
  ])('%s -> %s', (address, key) => {
    expect(peerKey(address)).toBe(key);
  });
});

function budget(options: Partial<IntrospectionBudgetOptions> = {}) {
  const clock = { ms: T0 };
  const refused: string[] = [];
  const b = createIntrospectionBudget({
    perPeerPerSecond: 1,
    perPeerBurst: 2,
    totalPerSecond: 10,
    totalBurst: 5,
    now: () => clock.ms,
    onRefused: (scope) => refused.push(scope),
    ...options,
  });
  return { b, clock, refused };
}

describe('createIntrospectionBudget', () => {
  it('refuses a peer past its burst with 429 and Retry-After; other peers are unaffected', () => {
    const { b, refused } = budget();
    expect(b.admit('192.0.2.1')).toBeUndefined();
    expect(b.admit('192.0.2.1')).toBeUndefined();
    const refusal = b.admit('192.0.2.1');
    expect(refusal).toMatchObject({ reason: 'introspection_rate_limited', status: 429, retryAfterSeconds: 1 });
    expect(b.admit('192.0.2.2')).toBeUndefined();
    expect(refused).toEqual(['peer']);
  });

  it('counts every address of one IPv6 /64 as one peer', () => {
    const { b } = budget();
    expect(b.admit('2001:db8:1:2::1')).toBeUndefined();
    expect(b.admit('2001:db8:1:2::2')).toBeUndefined();
    expect(b.admit('2001:db8:1:2:ffff::3')).toMatchObject({ reason: 'introspection_rate_limited' });
    expect(b.admit('2001:db8:1:3::1')).toBeUndefined();
  });

  it('refuses everybody past the total with 503 and Retry-After, and a refusal takes nothing from the peer', () => {
    const { b, clock, refused } = budget({ perPeerBurst: 100, perPeerPerSecond: 100 });
    for (let i = 0; i < 5; i++) expect(b.admit(`192.0.2.${i}`)).toBeUndefined();
    expect(b.admit('192.0.2.200')).toMatchObject({ reason: 'introspection_budget_exhausted', status: 503, retryAfterSeconds: 1 });
    expect(b.admit(undefined)).toMatchObject({ reason: 'introspection_budget_exhausted' });
    expect(refused).toEqual(['total', 'total']);
    clock.ms += 100;
    expect(b.admit('192.0.2.200')).toBeUndefined();
  });

  it('refills over time', () => {
    const { b, clock } = budget();
    b.admit('p');
    b.admit('p');
    expect(b.admit('p')).toBeDefined();
    clock.ms += 999;
    expect(b.admit('p')).toBeDefined();
    clock.ms += 1;
    expect(b.admit('p')).toBeUndefined();
  });

  it('a lookup without a peer pays only the total', () => {
    const { b } = budget({ totalBurst: 3 });
    for (let i = 0; i < 3; i++) expect(b.admit(undefined)).toBeUndefined();
    expect(b.admit(undefined)).toMatchObject({ reason: 'introspection_budget_exhausted' });
  });

  it('a rate of 0 turns that bucket off', () => {
    const { b } = budget({ perPeerPerSecond: 0, totalPerSecond: 0 });
    for (let i = 0; i < 10_000; i++) expect(b.admit('192.0.2.1')).toBeUndefined();
  });

  it('remembers at most maxPeers peers (a forgotten one starts with a full burst)', () => {
    const { b } = budget({ maxPeers: 2, totalPerSecond: 0 });
    b.admit('a');
    b.admit('a');
    expect(b.admit('a')).toBeDefined();
    b.admit('b');
    b.admit('c'); // pushes a out
    expect(b.admit('a')).toBeUndefined();
  });
});
