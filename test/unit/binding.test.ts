import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { checkBinding, thumbprintsEqual, x5tS256Verifier } from '../../src/pipeline/binding.ts';
import type { BindingOutcome, ConfirmationVerifier, MemberCheck } from '../../src/pipeline/binding.ts';
import type { ClientCertificate } from '../../src/pipeline/client-cert.ts';
import { clientCertificate, labelDigest } from '../fixtures/certificate.ts';

const digest = labelDigest;

const certificate = (label: string): ClientCertificate => clientCertificate(label);

const A = digest('a').toString('base64url');
const B = digest('b').toString('base64url');
const certA = certificate('a');
const certB = certificate('b');

/** A base64url character whose 6 bits differ from `c` only in the two low bits (the unused bits of a 32-byte value's last character). */
function lowBitsVariant(c: string): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
  const index = alphabet.indexOf(c);
  return alphabet[index ^ 1] ?? c;
}

describe('thumbprintsEqual', () => {
  it.each<[string, string, string, boolean]>([
    ['equal thumbprints', A, A, true],
    ['different thumbprints', A, B, false],
    ['an empty expected value', '', A, false],
    ['an empty actual value', A, '', false],
    ['both empty', '', '', false],
    ['a truncated expected value', A.slice(0, 42), A, false],
    ['a 31-byte value against itself', digest('a').subarray(0, 31).toString('base64url'), digest('a').subarray(0, 31).toString('base64url'), false],
    ['a 33-byte value against itself', Buffer.concat([digest('a'), Buffer.from([0])]).toString('base64url'), Buffer.concat([digest('a'), Buffer.from([0])]).toString('base64url'), false],
    ['a padded expected value', `${A}=`, A, false],
    ['standard base64 instead of base64url', digest('a').toString('base64'), A, false],
    ['a non-canonical last character', A.slice(0, 42) + lowBitsVariant(A.slice(42)), A, false],
    ['whitespace around the expected value', ` ${A}\n`, A, false],
    ['an expected value with characters outside the alphabet', `${A.slice(0, 20)}!${A.slice(20)}`, A, false],
    ['hex instead of base64url', digest('a').toString('hex'), A, false],
    ['garbage', 'not a thumbprint', A, false],
    // `x5t#S256` is unpadded base64url (RFC 8705 §3.1) on both sides: a padded value is no thumbprint.
    ['a padded actual value', A, `${A}=`, false],
  ])('%s', (_name, expected, actual, result) => {
    expect(thumbprintsEqual(expected, actual)).toBe(result);
  });

  it('is true exactly for two identical canonical thumbprints (property)', () => {
    const bytes = fc.uint8Array({ minLength: 32, maxLength: 32 }).map((b) => Buffer.from(b).toString('base64url'));
    fc.assert(
      fc.property(bytes, bytes, (x, y) => {
        expect(thumbprintsEqual(x, x)).toBe(true);
        expect(thumbprintsEqual(x, y)).toBe(x === y);
      }),
      { numRuns: 500 },
    );
  });

  it('is symmetric and never throws, for any strings (property)', () => {
    const value = fc.oneof(fc.string({ unit: 'binary', maxLength: 50 }), fc.constantFrom(A, B, `${A}=`, ` ${A}`, A.toLowerCase()));
    fc.assert(
      fc.property(value, value, (x, y) => {
        expect(thumbprintsEqual(x, y)).toBe(thumbprintsEqual(y, x));
      }),
      { numRuns: 2000 },
    );
  });
});

describe('x5tS256Verifier', () => {
  // The verifier compares through decoded thumbprints it keeps: it must judge as thumbprintsEqual does, also on a second sight.
  it('matches exactly where thumbprintsEqual does, for canonical, non-canonical and arbitrary values, seen twice (property)', () => {
    const value = fc.oneof(
      fc.uint8Array({ minLength: 32, maxLength: 32 }).map((b) => Buffer.from(b).toString('base64url')),
      fc.constantFrom(A, B, `${A}=`, ` ${A}`, A.toLowerCase(), A.slice(0, 42) + lowBitsVariant(A.slice(42)), digest('a').toString('base64')),
      fc.string({ unit: 'binary', minLength: 40, maxLength: 46 }),
    );
    fc.assert(
      fc.property(value, value, (named, presented) => {
        const expected = thumbprintsEqual(named, presented) ? 'match' : 'mismatch';
        for (let sight = 0; sight < 2; sight++) expect(x5tS256Verifier.verify(named, { certificate: { ...certA, thumbprint: presented } })).toBe(expected);
      }),
      { numRuns: 2000 },
    );
  });

  it.each<[string, unknown, ClientCertificate | undefined, MemberCheck]>([
    ['the matching certificate', A, certA, 'match'],
    ['another certificate', A, certB, 'mismatch'],
    ['no certificate', A, undefined, 'missing'],
    ['a non-string value', 42, certA, 'mismatch'],
    ['an object value', { value: A }, certA, 'mismatch'],
  ])('%s', (_name, value, cert, result) => {
    expect(x5tS256Verifier.member).toBe('x5t#S256');
    expect(x5tS256Verifier.verify(value, { certificate: cert })).toBe(result);
  });
});

describe('checkBinding', () => {
  it.each<[string, Record<string, unknown> | undefined, ClientCertificate | undefined, BindingOutcome['kind'], string | undefined]>([
    ['no cnf', undefined, certA, 'unbound', undefined],
    ['no cnf, no certificate', undefined, undefined, 'unbound', undefined],
    ['an empty cnf', {}, certA, 'unbound', undefined],
    ['x5t#S256 matching the certificate', { 'x5t#S256': A }, certA, 'bound', undefined],
    ['x5t#S256 of another certificate', { 'x5t#S256': A }, certB, 'failed', 'certificate_mismatch'],
    ['x5t#S256 and no certificate', { 'x5t#S256': A }, undefined, 'failed', 'certificate_missing'],
    ['x5t#S256 that is not a string', { 'x5t#S256': 1 }, certA, 'failed', 'certificate_mismatch'],
    ['x5t#S256 padded', { 'x5t#S256': `${A}=` }, certA, 'failed', 'certificate_mismatch'],
    ['an unknown member', { 'x5t#S512': 'abc' }, certA, 'failed', 'cnf_unsupported'],
    ['an unknown member, no certificate', { foo: 1 }, undefined, 'failed', 'cnf_unsupported'],
    ['DPoP jkt (no verifier)', { jkt: 'abc' }, certA, 'failed', 'cnf_unsupported'],
    ['SHA-1 x5t (not x5t#S256)', { x5t: 'abc' }, certA, 'failed', 'cnf_unsupported'],
    // RFC 7800 §3.1: one key; both members means both proofs. One proof alone never binds.
    ['x5t#S256 matching plus jkt', { 'x5t#S256': A, jkt: 'abc' }, certA, 'failed', 'cnf_unsupported'],
    ['jkt plus x5t#S256 matching', { jkt: 'abc', 'x5t#S256': A }, certA, 'failed', 'cnf_unsupported'],
    ['an own __proto__ member', JSON.parse('{"__proto__": {"x5t#S256": "x"}}') as Record<string, unknown>, certA, 'failed', 'cnf_unsupported'],
  ])('%s', (_name, cnf, cert, kind, reason) => {
    const outcome = checkBinding(cnf, { certificate: cert });
    expect(outcome.kind).toBe(kind);
    if (outcome.kind === 'failed') {
      expect(outcome.reason).toBe(reason);
      expect(outcome.detail).not.toContain(A);
    }
  });

  describe("unknownMethods 'ignore'", () => {
    it.each<[string, Record<string, unknown> | undefined, ClientCertificate | undefined, BindingOutcome['kind'], string | undefined]>([
      ['only an unknown member: unbound', { 'x5t#S512': 'abc' }, certA, 'unbound', undefined],
      ['an unknown member and a matching x5t#S256', { 'x5t#S512': 'abc', 'x5t#S256': A }, certA, 'bound', undefined],
      ['an unknown member and a mismatching x5t#S256', { 'x5t#S512': 'abc', 'x5t#S256': A }, certB, 'failed', 'certificate_mismatch'],
      ['an unknown member and x5t#S256 without a certificate', { 'x5t#S512': 'abc', 'x5t#S256': A }, undefined, 'failed', 'certificate_missing'],
      ['no cnf', undefined, certA, 'unbound', undefined],
      ['an empty cnf', {}, undefined, 'unbound', undefined],
    ])('%s', (_name, cnf, cert, kind, reason) => {
      const outcome = checkBinding(cnf, { certificate: cert }, undefined, 'ignore');
      expect(outcome.kind).toBe(kind);
      if (outcome.kind === 'failed') expect(outcome.reason).toBe(reason);
    });

    it("is 'reject' by default", () => {
      expect(checkBinding({ 'x5t#S512': 'abc' }, { certificate: certA })).toMatchObject({ kind: 'failed', reason: 'cnf_unsupported' });
      expect(checkBinding({ 'x5t#S512': 'abc' }, { certificate: certA }, undefined, 'reject')).toMatchObject({ kind: 'failed', reason: 'cnf_unsupported' });
    });
  });

  describe('with a second confirmation method', () => {
    function jktVerifier(result: MemberCheck): ConfirmationVerifier {
      return { member: 'jkt', method: 'dpop', verify: () => result };
    }

    it.each<[string, Record<string, unknown>, ClientCertificate | undefined, MemberCheck, BindingOutcome['kind'], string | undefined]>([
      ['both proofs match', { 'x5t#S256': A, jkt: 'k' }, certA, 'match', 'bound', undefined],
      ['the certificate matches, the key does not', { 'x5t#S256': A, jkt: 'k' }, certA, 'mismatch', 'failed', 'certificate_mismatch'],
      ['the key matches, the certificate does not', { 'x5t#S256': A, jkt: 'k' }, certB, 'match', 'failed', 'certificate_mismatch'],
      ['the certificate matches, the key proof is missing', { 'x5t#S256': A, jkt: 'k' }, certA, 'missing', 'failed', 'certificate_missing'],
      ['a missing proof then a mismatch: the mismatch is reported', { jkt: 'k', 'x5t#S256': A }, certB, 'missing', 'failed', 'certificate_mismatch'],
      ['only jkt, matching', { jkt: 'k' }, undefined, 'match', 'bound', undefined],
    ])('%s', (_name, cnf, cert, jkt, kind, reason) => {
      const outcome = checkBinding(cnf, { certificate: cert }, [x5tS256Verifier, jktVerifier(jkt)]);
      expect(outcome.kind).toBe(kind);
      if (outcome.kind === 'failed') expect(outcome.reason).toBe(reason);
    });
  });
});
