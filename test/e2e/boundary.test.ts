/**
 * What the upstream sees is what cnfguard checked (issue 11), over raw TLS so the exact bytes
 * arrive: path spellings judged by the stricter route or refused, Host as validated, identity and
 * forwarding headers set by cnfguard alone, and nothing from an untrusted certificate.
 */
import { once } from 'node:events';
import { X509Certificate } from 'node:crypto';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { thumbprintS256 } from '../../src/tls/certificates.ts';
import { startIntrospectionStub, type IntrospectionStub } from '../fixtures/introspection-stub.ts';
import { baseConfig, startDeployment, startGuard, type Deployment, type Guard } from '../fixtures/stack.ts';

let d: Deployment;
let stub: IntrospectionStub;
let guard: Guard;
const BOUND = 'bound-read';
const UNBOUND = 'unbound-read';
const CLIENT_CREDENTIALS = 'no-sub';

beforeAll(async () => {
  d = await startDeployment();
  stub = await startIntrospectionStub(d.pki.certs.server);
  const exp = Math.floor(Date.now() / 1000) + 600;
  const thumbprint = thumbprintS256(new X509Certificate(d.pki.certs.clients.client1.cert).raw);
  stub.answers.set(BOUND, { active: true, sub: 'alice', client_id: 'app', scope: 'read', exp, cnf: { 'x5t#S256': thumbprint } });
  stub.answers.set(UNBOUND, { active: true, sub: 'bob', client_id: 'app', scope: 'read', exp });
  stub.answers.set(CLIENT_CREDENTIALS, { active: true, client_id: 'machine', scope: 'read', exp });
  guard = await startGuard(
    d.pki,
    baseConfig(d.pki, d.as, d.upstream, {
      tls: { cert: d.pki.files.server.cert, key: d.pki.files.server.key, clientCa: d.pki.files.ca },
      introspection: { url: stub.url, clientId: 'rs', clientSecret: 'rs-secret', ca: d.pki.files.ca, timeoutMs: 1000 },
      // The README's rollout: public by default, one protected route at a time.
      binding: 'off',
      routes: [
        { host: 'admin.example', binding: 'required', scopes: ['admin'] },
        { pathPrefix: '/admin', binding: 'required', scopes: ['admin'] },
      ],
    }),
  );
});
afterAll(async () => {
  await guard?.stop();
  await stub?.stop();
  await d?.stop();
});

type Client = 'client1' | 'selfSigned' | 'none';

async function send(request: string, client: Client = 'client1'): Promise<{ status: number; text: string }> {
  const identity = client === 'client1' ? d.pki.certs.clients.client1 : client === 'selfSigned' ? d.pki.selfSigned : {};
  const socket = tls.connect({ host: '127.0.0.1', port: guard.started.port, ca: d.pki.certs.ca.cert, servername: 'localhost', ...identity });
  await once(socket, 'secureConnect');
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  socket.on('error', () => {});
  // Not end(): a half-closed request is one the client abandoned (Node aborts it).
  socket.write(request);
  await once(socket, 'close');
  const text = Buffer.concat(chunks).toString('latin1');
  return { status: Number(text.split(' ')[1]), text };
}

/** What the upstream received for the last request whose path starts with `marker`. */
function seen(marker: string) {
  return d.upstream.requests.filter((r) => r.url.includes(marker)).at(-1);
}

const get = (path: string, headers = '', token = UNBOUND, host = 'api.example') =>
  `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nAuthorization: Bearer ${token}\r\nConnection: close\r\n${headers}\r\n`;

describe('path spellings are judged by the route an upstream would dispatch them to', () => {
  it.each(['/ADMIN/users', '/Admin/users', '/aDmIn', '/%41DMIN/users', '/admin;x=1/users', '/admin;/users', '/ADMIN;jsessionid=1'])('%s is judged by /admin (403 without the admin scope)', async (path) => {
    expect((await send(get(path, '', BOUND))).status).toBe(403);
  });

  it.each(['/public/..;/admin/users', '/%2561dmin/users', '/public/%252e%252e/admin/users', '/admin./users', '/admin%20/users', '/admin%2520/users', '/%EF%BD%81dmin/users'])(
    '%s reads as /admin once decoded: refused as ambiguous',
    async (path) => {
      const { status, text } = await send(get(path));
      expect(status).toBe(400);
      expect(text).toContain('invalid_request');
    },
  );

  it.each(['/%C0%AE%C0%AE/admin', '/a%252fb', '/a%00b'])('%s is refused as malformed', async (path) => {
    expect((await send(get(path))).status).toBe(400);
  });

  it('a path that means the same under every reading is forwarded as canonical', async () => {
    const { status } = await send(get('/public/./x;v=1/%7Euser'));
    expect(status).toBe(200);
    expect(seen('/public/')?.url).toBe('/public/x;v=1/~user');
  });
});

describe('Host', () => {
  it('HTTP/1.0 without Host is refused', async () => {
    const { status } = await send(`GET /nohost HTTP/1.0\r\nAuthorization: Bearer ${UNBOUND}\r\n\r\n`);
    expect(status).toBe(400);
    expect(seen('/nohost')).toBeUndefined();
  });

  it('Connection: host cannot remove Host, and the client never sets X-Forwarded-Host', async () => {
    const { status } = await send(get('/vhost-1', 'Connection: host\r\nX-Forwarded-Host: admin.example\r\n'));
    expect(status).toBe(200);
    expect(seen('/vhost-1')?.headers.host).toBe('api.example');
    expect(seen('/vhost-1')?.headers['x-forwarded-host']).toBe('api.example');
  });

  it('the protected vhost is judged by its route', async () => {
    expect((await send(get('/vhost-2', '', UNBOUND, 'ADMIN.example.'))).status).toBe(401);
  });
});

describe('identity and forwarding headers come from cnfguard alone', () => {
  const forged = [
    'x_auth_subject: forged',
    'x_auth_client_id: forged',
    'x_auth_scope: forged',
    'x_auth_cert_thumbprint: forged',
    'x_forwarded_client_cert: forged',
    'X-Auth_Subject: forged',
    'x-auth-subject: forged',
    'x_auth_binding: forged',
    'X-Forwarded-For: 6.6.6.6',
    'x_forwarded_for: 6.6.6.6',
    'Forwarded: for=6.6.6.6;host=admin.example',
    'X-Real-IP: 6.6.6.6',
    'X-Original-URL: /admin',
    'X-Rewrite-URL: /admin',
    'X-Forwarded-Proto: http',
  ]
    .map((line) => `${line}\r\n`)
    .join('');

  it('no forged header reaches the upstream, in any spelling; a token without sub forwards no subject', async () => {
    expect((await send(get('/forged', forged, CLIENT_CREDENTIALS))).status).toBe(200);
    const headers = seen('/forged')?.headers ?? {};
    expect(JSON.stringify(headers)).not.toMatch(/forged|6\.6\.6\.6|admin\.example|"\/admin"/);
    expect(headers['x-auth-subject']).toBeUndefined();
    expect(headers['x-auth-client-id']).toBe('machine');
    expect(headers['x-forwarded-for']).toBe('127.0.0.1');
    expect(headers['x-forwarded-proto']).toBe('https');
    expect(headers['x-auth-binding']).toBe('binding_off');
  });

  it('a verified binding says so', async () => {
    expect((await send(get('/admin-free/bound', '', BOUND))).status).toBe(200);
    expect(seen('/admin-free/bound')?.headers['x-auth-binding']).toBe('binding_off');
    stub.answers.set('bound-admin', { ...stub.answers.get(BOUND), scope: 'admin' });
    expect((await send(get('/admin/bound', '', 'bound-admin'))).status).toBe(200);
    expect(seen('/admin/bound')?.headers['x-auth-binding']).toBe('bound');
  });

  it('a certificate that does not chain to tls.clientCa is never forwarded as identity', async () => {
    expect((await send(get('/untrusted'), 'selfSigned')).status).toBe(200);
    const headers = seen('/untrusted')?.headers ?? {};
    expect(headers['x-forwarded-client-cert']).toBeUndefined();
    expect(headers['x-auth-cert-thumbprint']).toBeUndefined();
    expect((await send(get('/trusted'), 'client1')).status).toBe(200);
    expect(seen('/trusted')?.headers['x-forwarded-client-cert']).toMatch(/^Hash=[0-9a-f]{64};Subject="/);
  });

  it('a token in the query is found in any case and array spelling', async () => {
    for (const query of ['?ACCESS_TOKEN=x', '?access_token[]=x', '?Access_Token%5B0%5D=x']) {
      const { status, text } = await send(get(`/q${query}`));
      expect(status, query).toBe(400);
      expect(text).toContain('invalid_request');
    }
  });

  it('a scheme-less Authorization logs no part of it', async () => {
    const secret = 'tok3nWithoutAnySchemeAtAll1234567890';
    await send(`GET /noscheme HTTP/1.1\r\nHost: api.example\r\nAuthorization: ${secret}\r\nConnection: close\r\n\r\n`);
    expect(guard.logs.text()).not.toContain(secret.slice(0, 8));
  });
});
