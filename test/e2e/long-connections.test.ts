/**
 * One connection, many requests in sequence, from curl: what a busy client does (a script, a
 * batch job, a health checker). Every request is answered, allowed and refused alike, over
 * HTTP/1.1 and HTTP/2 to the proxy listener and through the nginx recipe to the decision API, and
 * curl never needs a second connection. nghttp (nghttp2's own client) sends as many at once on one
 * HTTP/2 connection, as far as the stream limit lets it.
 *
 * Found from outside: over HTTP/2, Node's compatibility response ended a stream with an empty
 * DATA frame after the body. curl, the body complete by its content-length, reset the stream
 * (RST_STREAM) when that frame came late, and nghttp2's rapid-reset limit (streamResetBurst)
 * took those resets for an attack: GOAWAY(INTERNAL_ERROR) after a few hundred requests, and
 * curl failed the request in flight.
 */
import { execFile, execFileSync } from 'node:child_process';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAuthNginx } from '../fixtures/nginx-auth.ts';
import type { Nginx } from '../fixtures/nginx.ts';
import { baseConfig, startDeployment, startGuard, type Deployment, type Guard } from '../fixtures/stack.ts';

const run = promisify(execFile);

/** Past nghttp2's reset burst (cnfguard's default: 400) and what its rate refills meanwhile. */
const REQUESTS = 1200;

let d: Deployment;
let guard: Guard;
/** The decision API's cnfguard: its trusted proxy (127.0.0.1) would be any loopback client of a proxy listener. */
let decider: Guard;
let nginx: Nginx | undefined;
let token: string;
/** An HTTP/2 (h2c) upstream answering every request with a short body and its length. */
let h2c: http2.Http2Server;

beforeAll(async () => {
  d = await startDeployment();
  const trustedProxies = [{ cidrs: ['127.0.0.1/32'], header: 'x-client-cert', format: 'pem-urlencoded' }];
  h2c = http2.createServer();
  h2c.on('stream', (stream) => {
    stream.respond({ ':status': 200, 'content-length': 3 });
    stream.end('h2c');
  });
  await new Promise<void>((resolve) => h2c.listen(0, '127.0.0.1', resolve));
  const h2cUpstream = `http://127.0.0.1:${(h2c.address() as AddressInfo).port}`;
  guard = await startGuard(d.pki, baseConfig(d.pki, d.as, d.upstream, { routes: [{ pathPrefix: '/h2c', upstream: h2cUpstream, upstreamHttp2: true }] }));
  decider = await startGuard(d.pki, baseConfig(d.pki, d.as, d.upstream, { trustedProxies, decisionApi: { host: '127.0.0.1', port: 0 } }));
  nginx = await startAuthNginx({ serverCert: d.pki.files.server.cert, serverKey: d.pki.files.server.key, decisionUrl: decider.started.decisionUrl as string, upstreamUrl: d.upstream.url });
  token = await d.tokenFor('client1');
});
afterAll(async () => {
  await nginx?.stop();
  await decider?.stop();
  await guard?.stop();
  h2c?.close();
  await d?.stop();
});

/** Each transfer's status and whether it opened a connection, for REQUESTS requests in sequence (curl's URL range). */
async function sequence(base: string, http: '1.1' | '2', withToken: boolean): Promise<{ statuses: Map<string, number>; connections: number; errors: string[] }> {
  const args = ['-s', `--http${http}`, '--cacert', d.pki.files.ca, '--cert', d.pki.files.client1.cert, '--key', d.pki.files.client1.key, '-o', '/dev/null', '-w', '%{http_code} %{num_connects} %{errormsg}\\n'];
  if (withToken) args.push('-H', `Authorization: Bearer ${token}`);
  args.push(`${base}/seq/[1-${REQUESTS}]`);
  // curl exits non-zero when a transfer failed; its lines still say which.
  const { stdout } = await run('curl', args, { maxBuffer: 16 * 1024 * 1024 }).catch((err: { stdout?: string }) => ({ stdout: err.stdout ?? '' }));
  const statuses = new Map<string, number>();
  const errors: string[] = [];
  let connections = 0;
  for (const line of stdout.trim().split('\n')) {
    const [status = '', connects = '0', ...error] = line.split(' ');
    statuses.set(status, (statuses.get(status) ?? 0) + 1);
    connections += Number(connects);
    if (error.join(' ').trim() !== '') errors.push(error.join(' ').trim());
  }
  return { statuses, connections, errors: [...new Set(errors)] };
}

const WAYS_IN = [
  { edge: 'the proxy listener', http: '1.1', base: () => guard.started.url, connections: 1 },
  { edge: 'the proxy listener', http: '2', base: () => guard.started.url, connections: 1 },
  { edge: 'the proxy listener to an HTTP/2 upstream', http: '2', base: () => `${guard.started.url}/h2c`, connections: 1 },
  // The recipe's nginx listens for HTTP/1.1, and its checks reach cnfguard on kept-alive
  // connections; nginx itself closes a client connection after 1000 requests (keepalive_requests).
  { edge: 'the decision API behind the nginx recipe', http: '1.1', base: () => (nginx === undefined ? undefined : `https://127.0.0.1:${nginx.port}`), connections: Math.ceil(REQUESTS / 1000) },
] as const;

/** Whether `command` runs here (scripts/install-test-deps.sh installs nghttp2-client as root). */
function installed(command: string): boolean {
  try {
    execFileSync(command, ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** nghttp's statistics: one line per request, its status in the fifth column. */
async function multiplexed(base: string, withToken: boolean): Promise<{ statuses: Map<string, number>; errors: string[] }> {
  const args = ['-ns', '-m', String(REQUESTS), '--cert', d.pki.files.client1.cert, '--key', d.pki.files.client1.key];
  if (withToken) args.push('-H', `Authorization: Bearer ${token}`);
  args.push(`${base}/many`);
  // nghttp has no CA option; OpenSSL's default verify paths follow SSL_CERT_FILE.
  const { stdout, stderr } = await run('nghttp', args, { maxBuffer: 16 * 1024 * 1024, env: { ...process.env, SSL_CERT_FILE: d.pki.files.ca } }).catch((err: { stdout?: string; stderr?: string; message: string }) => ({ stdout: err.stdout ?? '', stderr: err.stderr || err.message }));
  const statuses = new Map<string, number>();
  for (const line of stdout.split('\n')) {
    const status = /^\s*\d+\s+\+\S+\s+\+\S+\s+\S+\s+(\d{3})\s/.exec(line)?.[1];
    if (status !== undefined) statuses.set(status, (statuses.get(status) ?? 0) + 1);
  }
  return { statuses, errors: stderr.trim() === '' ? [] : [stderr.trim()] };
}

describe('one HTTP/2 connection, many requests at once (nghttp)', () => {
  for (const [what, withToken, status] of [['allowed', true, '200'], ['refused', false, '401']] as const) {
    it.skipIf(!installed('nghttp'))(`the proxy listener, ${what}: all ${REQUESTS} answered ${status}`, async () => {
      // By name: nghttp checks the certificate's DNS names, not its IP addresses.
      const { statuses, errors } = await multiplexed(guard.started.url.replace('127.0.0.1', 'localhost'), withToken);
      expect({ statuses: Object.fromEntries(statuses), errors }).toEqual({ statuses: { [status]: REQUESTS }, errors: [] });
    });
  }
});

describe('one connection, many requests in sequence (curl)', () => {
  for (const { edge, http, base, connections: most } of WAYS_IN) {
    for (const [what, withToken, status] of [['allowed', true, '200'], ['refused', false, '401']] as const) {
      it(`${edge}, HTTP/${http}, ${what}: all ${REQUESTS} answered ${status}, on ${most === 1 ? 'one connection' : `${most} connections (nginx's limit)`}`, async (context) => {
        const url = base();
        if (url === undefined) return context.skip(); // no nginx on this machine (scripts/install-test-deps.sh installs it)
        const { statuses, connections, errors } = await sequence(url, http, withToken);
        expect({ statuses: Object.fromEntries(statuses), errors }).toEqual({ statuses: { [status]: REQUESTS }, errors: [] });
        expect(connections).toBe(most);
      });
    }
  }
});
