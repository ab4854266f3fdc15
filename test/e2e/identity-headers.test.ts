/**
 * Identity headers as real upstreams read them (Express 5, gunicorn, Jetty 9): two different
 * subjects or client ids never arrive as one header value, and percent-decoding what arrived gives
 * back the claim. The tokens are RFC 9068 JWTs signed here (any `sub` and `client_id`, bound to
 * client1's certificate), verified by cnfguard against this test's key set: no AS can issue a
 * token whose `sub` is `a\0b`.
 */
import { X509Certificate } from 'node:crypto';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp, type App, type StartedApp } from '../../src/app.ts';
import { loadConfigObject } from '../../src/config/load.ts';
import { createLogger } from '../../src/log.ts';
import { thumbprintS256 } from '../../src/tls/certificates.ts';
import { percentDecode } from '../fixtures/percent-decode.ts';
import { createPki, curl, LogCapture, type Pki } from '../fixtures/stack.ts';
import { missingStacks, startUpstreams, type StartedUpstreams, type UpstreamAnswer } from '../fixtures/upstreams.ts';

for (const [name, reason] of Object.entries(missingStacks())) console.warn(`identity-headers.test.ts: [SKIPPED ${name}: ${reason}; run scripts/install-test-deps.sh as root]`);

const ISS = 'https://as.identity.test';
const AUD = 'https://rs.identity.test/';

/** Values that collided or lost characters before (finding 6 of issue 26), and their neighbours. */
const VALUES = [
  'éric',
  '%C3%A9ric',
  'a\u0000b',
  'a\tb',
  'ab',
  'a b',
  ' ab',
  'ab ',
  'a\r\nx-admin: 1',
  '50%',
  '50%25',
  'a+b',
  '日本',
  '😀',
  'lone \ud800',
  'lone \udc00',
];


let pki: Pki;
let upstreams: StartedUpstreams;
let app: App;
let started: StartedApp;
let key: CryptoKey;
let jwk: JWK;
let thumbprint: string;

beforeAll(async () => {
  [pki, upstreams] = await Promise.all([createPki(), startUpstreams()]);
  const pair = await generateKeyPair('ES256');
  key = pair.privateKey;
  jwk = { ...(await exportJWK(pair.publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' };
  thumbprint = thumbprintS256(new X509Certificate(pki.certs.clients.client1.cert).raw);
  const loaded = loadConfigObject(
    {
      listen: { host: '127.0.0.1', port: 0 },
      admin: { host: '127.0.0.1', port: 0 },
      tls: { cert: pki.files.server.cert, key: pki.files.server.key, clientCa: pki.files.ca },
      // Never called: every route validates JWTs locally.
      introspection: { url: 'https://127.0.0.1:9/introspect', clientId: 'rs', clientSecret: 'unused', probeAtStartup: false },
      jwt: { issuer: ISS, jwksUri: 'https://127.0.0.1:9/jwks', algorithms: ['ES256'] },
      validation: 'jwt',
      audience: AUD,
      upstream: upstreams.stacks[0]?.url,
      routes: upstreams.stacks.map((stack) => ({ pathPrefix: `/${stack.name}`, upstream: stack.url })),
    },
    'identity-headers.test.ts',
  );
  app = createApp(loaded, { logger: createLogger('warn', new LogCapture().stream), fetchJwks: () => Promise.resolve({ keys: [jwk] }), defaultMetrics: false, watchCertificates: false, probeIntrospection: false });
  started = await app.start();
}, 120_000);

afterAll(async () => {
  await app?.stop(1000);
  await upstreams?.close();
  await pki?.cleanup();
});

function tokenFor(value: string): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ iss: ISS, aud: AUD, sub: value, client_id: value, scope: 'read', iat: now, exp: now + 300, jti: crypto.randomUUID(), cnf: { 'x5t#S256': thumbprint } })
    .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: 'k1' })
    .sign(key);
}

describe('identity headers through real upstreams', () => {
  it('keep different subjects and client ids apart, and percent-decode back to the claim', async () => {
    const tokens = await Promise.all(VALUES.map(tokenFor));
    const collided: string[] = [];
    for (const stack of upstreams.stacks) {
      const seen = new Map<string, string>();
      for (const [index, value] of VALUES.entries()) {
        const res = await curl(pki, `${started.url}/${stack.name}/whoami`, { token: tokens[index], cert: pki.files.client1 });
        expect(res.status, `${stack.name} ${JSON.stringify(value)}`).toBe(200);
        const { identity } = res.json<UpstreamAnswer>();
        expect(identity.subject, stack.name).toMatch(/^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$/);
        expect(identity.clientId, stack.name).toBe(identity.subject);
        expect(percentDecode(identity.subject ?? ''), `${stack.name} ${JSON.stringify(value)}`).toBe(value);
        const earlier = seen.get(identity.subject ?? '');
        if (earlier !== undefined) collided.push(`${stack.name}: ${JSON.stringify(earlier)} and ${JSON.stringify(value)} both read ${JSON.stringify(identity.subject)}`);
        seen.set(identity.subject ?? '', value);
        // Plain ASCII (the common case) arrives as it is.
        if (/^[\x21-\x24\x26-\x7e][\x20-\x24\x26-\x7e]*[\x21-\x24\x26-\x7e]$/.test(value)) expect(identity.subject, stack.name).toBe(value);
      }
    }
    expect(collided).toEqual([]);
    expect(upstreams.stacks.length).toBeGreaterThan(0);
  }, 120_000);
});
