/**
 * tls.minVersion and tls.ciphers on the proxy listener, seen by a real client (openssl s_client):
 * a TLS 1.2 handshake is refused under minVersion TLSv1.3, and a TLS 1.2 cipher outside the list
 * is refused while one in it is accepted. A refused handshake is s_client's exit 1.
 */
import { execFile } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { baseConfig, startDeployment, startGuard, type Deployment, type Guard } from '../fixtures/stack.ts';

/** Whether a handshake with these s_client options completes, and the protocol and cipher it chose. */
function handshake(port: number, options: string[]): Promise<{ ok: boolean; protocol?: string; cipher?: string }> {
  return new Promise((resolve) => {
    const child = execFile('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-servername', 'localhost', ...options], { timeout: 20_000 }, (err, stdout) => {
      const chosen = /New, (TLSv[\d.]+), Cipher is (\S+)/.exec(stdout);
      resolve({ ok: err === null && chosen !== null, protocol: chosen?.[1], cipher: chosen?.[2] });
    });
    child.stdin?.end();
  });
}

describe('tls.minVersion and tls.ciphers', () => {
  let d: Deployment;
  const guards: Guard[] = [];
  beforeAll(async () => {
    d = await startDeployment();
  });
  afterAll(async () => {
    await Promise.all(guards.map((g) => g.stop()));
    await d.stop();
  });
  const guard = async (tls: Record<string, unknown>) => {
    const config = baseConfig(d.pki, d.as, d.upstream);
    const g = await startGuard(d.pki, { ...config, tls: { ...(config.tls as object), ...tls } });
    guards.push(g);
    return g.started.port;
  };

  it('by default, TLS 1.2 and TLS 1.3 handshakes complete', async () => {
    const port = await guard({});
    expect(await handshake(port, ['-tls1_2'])).toMatchObject({ ok: true, protocol: 'TLSv1.2' });
    expect(await handshake(port, ['-tls1_3'])).toMatchObject({ ok: true, protocol: 'TLSv1.3' });
  });

  it('minVersion TLSv1.3 refuses a TLS 1.2 handshake and accepts TLS 1.3', async () => {
    const port = await guard({ minVersion: 'TLSv1.3' });
    expect((await handshake(port, ['-tls1_2'])).ok).toBe(false);
    expect(await handshake(port, ['-tls1_3'])).toMatchObject({ ok: true, protocol: 'TLSv1.3' });
  });

  it('ciphers: a TLS 1.2 cipher outside the list is refused, one in it is used, TLS 1.3 still works', async () => {
    const port = await guard({ ciphers: 'ECDHE-RSA-AES128-GCM-SHA256' });
    expect((await handshake(port, ['-tls1_2', '-cipher', 'ECDHE-RSA-AES256-GCM-SHA384'])).ok).toBe(false);
    expect(await handshake(port, ['-tls1_2', '-cipher', 'ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384'])).toMatchObject({ ok: true, cipher: 'ECDHE-RSA-AES128-GCM-SHA256' });
    expect(await handshake(port, ['-tls1_3'])).toMatchObject({ ok: true, protocol: 'TLSv1.3' });
  });
});

describe('resumed TLS sessions', () => {
  // A resumed session skips the certificate exchange: the certificate checked must still be the
  // one of the session's first handshake, the client's own (RFC 8705 §3 binds to it).
  let d: Deployment;
  let g: Guard;
  let token: string;
  beforeAll(async () => {
    d = await startDeployment();
    g = await startGuard(d.pki, baseConfig(d.pki, d.as, d.upstream));
    token = await d.tokenFor('client1');
  });
  afterAll(async () => {
    await g?.stop();
    await d?.stop();
  });

  for (const [version, options] of [['TLS 1.3', ['--tlsv1.3']], ['TLS 1.2', ['--tls-max', '1.2']]] as const) {
    it(`${version}: on every resumed connection the token's own certificate passes and another is refused`, async () => {
      for (const [who, status] of [['client1', '200'], ['client2', '401']] as const) {
        // curl keeps the session between the connections of one run; `Connection: close` makes each request a new one.
        const { stdout, stderr } = await new Promise<{ stdout: string; stderr: string }>((resolve) =>
          execFile('curl', ['-sS', '-v', '--http1.1', ...options, '--cacert', d.pki.files.ca, '--cert', d.pki.files[who].cert, '--key', d.pki.files[who].key, '-H', `Authorization: Bearer ${token}`, '-H', 'Connection: close', '-o', '/dev/null', '-w', '%{http_code} %{num_connects}\\n', `${g.started.url}/resumed/[1-4]`], { timeout: 20_000 }, (_err, out, err) => resolve({ stdout: out, stderr: err })),
        );
        expect(stdout.trim().split('\n')).toEqual([`${status} 1`, `${status} 1`, `${status} 1`, `${status} 1`]);
        expect(stderr.match(/SSL re-using session ID/g)?.length).toBe(3);
      }
    });
  }
});
