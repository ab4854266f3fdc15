/**
 * The config of issue 29: what responseFormat jwt needs, encrypted answers refused with a clear
 * message, a route's assertion object needing the top-level one, the key file checked against the
 * algorithm (a config error naming assertion.keyFile), and a description on every new key (the
 * config reference is generated from them).
 */
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { z } from 'zod';
import { readAssertionKey } from '../../src/config/files.ts';
import type { ConfigProblem } from '../../src/config/problems.ts';
import { configSchema } from '../../src/config/schema.ts';
import { assertionSchema, signedIntrospectionFields, stepUpSchema } from '../../src/config/trust-schema.ts';
import { MINIMAL_CONFIG, minimalConfig, minimalSettings } from '../fixtures/config.ts';

const issues = (config: Record<string, unknown>) => {
  const parsed = configSchema.safeParse(config);
  return parsed.success ? [] : parsed.error.issues.map((issue) => `${issue.path.join('.')}: ${issue.message}`);
};
const introspection = (extra: Record<string, unknown>) => minimalConfig({ introspection: { ...MINIMAL_CONFIG.introspection, ...extra } });

describe('signed introspection answers: config', () => {
  it('responseFormat jwt needs introspection.issuer and keys (jwksUri, or jwt.jwksUri)', () => {
    expect(issues(introspection({ responseFormat: 'jwt' }))).toEqual([
      'introspection.issuer: required with responseFormat: jwt (the iss signed answers must carry)',
      "introspection.jwksUri: required with responseFormat: jwt (the AS's keys), unless jwt.jwksUri is set",
    ]);
    expect(issues(introspection({ responseFormat: 'jwt', issuer: 'https://as.example', jwksUri: 'https://as.example/jwks' }))).toEqual([]);
    expect(issues({ ...introspection({ responseFormat: 'jwt', issuer: 'https://as.example' }), jwt: { issuer: 'https://as.example', jwksUri: 'https://as.example/jwks' } })).toEqual([]);
  });

  it('encrypted answers are a clear config error; algorithms are asymmetric only', () => {
    expect(issues(introspection({ responseFormat: 'jwe' }))).toEqual(['introspection.responseFormat: encrypted introspection answers (RFC 9701 §5) are not supported: use jwt (signed) or json']);
    expect(issues(introspection({ responseFormat: 'xml' }))).toEqual(['introspection.responseFormat: json or jwt']);
    expect(issues(introspection({ signingAlgorithms: ['HS256'] }))[0]).toMatch(/^introspection.signingAlgorithms.0/);
    expect(minimalSettings().introspection).toMatchObject({ responseFormat: 'json', signingAlgorithms: ['RS256', 'PS256', 'ES256', 'EdDSA'] });
  });
});

describe('assertion: config', () => {
  it('a route may turn it off, or set audience and lifetime only with the top-level assertion', () => {
    expect(issues(minimalConfig({ routes: [{ pathPrefix: '/a', assertion: false }] }))).toEqual([]);
    expect(issues(minimalConfig({ routes: [{ pathPrefix: '/a', assertion: { audience: 'x' } }] }))).toEqual(['routes.0.assertion: needs the top-level assertion (keyFile, issuer)']);
    expect(issues(minimalConfig({ assertion: { keyFile: '/k', issuer: 'i', lifetimeSeconds: 5 } }))[0]).toMatch(/^assertion.lifetimeSeconds/);
    expect(minimalSettings({ assertion: { keyFile: '/k', issuer: 'i' } }).assertion).toEqual({ keyFile: '/k', issuer: 'i', header: 'x-auth-assertion', algorithm: 'ES256', lifetimeSeconds: 60 });
  });

  it('the key file must fit the algorithm: a config error at assertion.keyFile', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cnfguard-assertion-'));
    const file = join(dir, 'key.pem');
    writeFileSync(file, generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }) as string);
    const problems: ConfigProblem[] = [];
    expect(readAssertionKey(minimalSettings({ assertion: { keyFile: file, issuer: 'i' } }), problems)).toBeUndefined();
    expect(problems).toEqual([{ path: 'assertion.keyFile', message: `${JSON.stringify(file)}: ES256 needs an EC P-256 key, the file holds an ed25519 key` }]);
    expect(readAssertionKey(minimalSettings({ assertion: { keyFile: file, issuer: 'i', algorithm: 'EdDSA' } }), problems)?.algorithm).toBe('EdDSA');
    expect(problems).toHaveLength(1);
  });
});

describe('every new key is described (the config reference is generated from the descriptions)', () => {
  const shapeOf = (schema: z.ZodType): Record<string, z.ZodType> => {
    let current = schema as z.ZodType & { shape?: Record<string, z.ZodType>; _zod: { def: { innerType?: z.ZodType; in?: z.ZodType } } };
    while (current.shape === undefined) current = (current._zod.def.innerType ?? current._zod.def.in) as typeof current;
    return current.shape;
  };
  it.each([
    ['stepUp', shapeOf(stepUpSchema)],
    ['assertion', shapeOf(assertionSchema)],
    ['introspection', signedIntrospectionFields as Record<string, z.ZodType>],
  ])('%s', (_name, shape) => {
    for (const [key, schema] of Object.entries(shape)) expect(schema.description, key).toMatch(/\w{4,}/);
  });
});
