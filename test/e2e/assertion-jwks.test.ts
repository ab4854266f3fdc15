/**
 * The assertion JWKS on the proxy listener (docs/signed-trust.md, "Published keys"): a path that
 * is cnfguard's with or without `assertion`. Without it, 404 on the proxy listener (never judged,
 * never forwarded, a token or not) and on the decision API's own port, while a front's check
 * request for that path is judged as any other. With it, the keys are served as the admin
 * listener serves them (application/jwk-set+json, never cached: the previous key is published for
 * one lifetime only), and the RFC 9728 metadata keep their own type and max-age.
 */
import { generateKeyPairSync } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { baseConfig, curl, startDeployment, startGuard, type Deployment, type Guard } from '../fixtures/stack.ts';

const JWKS_PATH = '/.well-known/cnfguard/jwks.json';

let d: Deployment;
let plain: Guard;
let signing: Guard;

beforeAll(async () => {
  d = await startDeployment();
  plain = await startGuard(
    d.pki,
    baseConfig(d.pki, d.as, d.upstream, {
      trustedProxies: [{ cidrs: ['127.0.0.1/32'], header: 'x-client-cert', format: 'pem-urlencoded' }],
      decisionApi: { host: '127.0.0.1', port: 0 },
    }),
  );
  const keyFile = join(d.pki.dir, 'assertion-jwks.key');
  await writeFile(keyFile, generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, { mode: 0o600 });
  signing = await startGuard(
    d.pki,
    baseConfig(d.pki, d.as, d.upstream, {
      resource: 'https://api.test/',
      assertion: { keyFile, issuer: 'https://cnfguard.test', lifetimeSeconds: 10 },
    }),
  );
}, 60_000);

afterAll(async () => {
  await plain?.stop();
  await signing?.stop();
  await d?.stop();
});

function ask(port: number, method: string, path: string, headers: Record<string, string>): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, headers }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('without assertion', () => {
  it('the proxy listener answers 404 for the JWKS path, with or without a token, and forwards nothing', async () => {
    const before = d.upstream.requests.length;
    const bare = await curl(d.pki, `${plain.started.url}${JWKS_PATH}`);
    expect(bare.status).toBe(404);
    expect(bare.headers['cache-control']).toBe('no-store');
    expect(bare.headers['www-authenticate']).toBeUndefined();
    const token = await d.tokenFor('client1');
    const withToken = await curl(d.pki, `${plain.started.url}${JWKS_PATH}`, { token, cert: d.pki.files.client1 });
    expect(withToken.status).toBe(404);
    expect((await curl(d.pki, `${plain.started.url}${JWKS_PATH}`, { extra: ['--head'] })).status).toBe(404);
    expect(d.upstream.requests.length).toBe(before);
  });

  it("the decision API: 404 on its own port; a front's check request for the path is judged as any other", async () => {
    const port = plain.started.decisionPort as number;
    expect((await ask(port, 'GET', JWKS_PATH, { host: 'api.test' })).status).toBe(404);
    // Not a published document, so not allowed without an identity: no token, the usual 401.
    const check = await ask(port, 'GET', '/nginx', { host: 'api.test', 'x-original-method': 'GET', 'x-original-uri': JWKS_PATH });
    expect(check.status).toBe(401);
    expect(check.headers['www-authenticate']).toMatch(/^Bearer realm=/);
  });
});

describe('with assertion', () => {
  it('the proxy listener serves the JWKS as the admin listener does: application/jwk-set+json, no-store', async () => {
    const proxy = await curl(d.pki, `${signing.started.url}${JWKS_PATH}`);
    expect(proxy.status).toBe(200);
    expect(proxy.headers['content-type']).toBe('application/jwk-set+json');
    expect(proxy.headers['cache-control']).toBe('no-store');
    const keys = proxy.json<{ keys: { kid: string; kty: string }[] }>().keys;
    expect(keys).toEqual([expect.objectContaining({ kty: 'EC', kid: expect.any(String) })]);
    const admin = await fetch(`${signing.started.adminUrl}/jwks.json`);
    expect(admin.headers.get('content-type')).toBe(proxy.headers['content-type']);
    expect(admin.headers.get('cache-control')).toBe(proxy.headers['cache-control']);
    expect(await admin.text()).toBe(proxy.body);
  });

  it('the RFC 9728 metadata keep application/json and max-age=300', async () => {
    const metadata = await curl(d.pki, `${signing.started.url}/.well-known/oauth-protected-resource`, { headers: ['Host: api.test'] });
    expect(metadata.status).toBe(200);
    expect(metadata.headers['content-type']).toBe('application/json');
    expect(metadata.headers['cache-control']).toBe('max-age=300');
  });
});
