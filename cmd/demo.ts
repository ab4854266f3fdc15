/**
 * `npm run demo`: the whole story on one machine, on embedded defaults. Starts a real
 * authorization server (oidc-provider, issuing certificate-bound tokens and answering
 * introspection), an echo upstream, and cnfguard on freshly made dev certificates; shows a bound
 * request succeed, the same token fail on another certificate and without one; then keeps running
 * so you can try it with curl. Ctrl-C stops everything. `--once` exits after the walkthrough.
 */
import { mkdir, open, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { Agent, request } from 'undici';
import { AS_CLIENTS, startAuthorizationServer } from '../demo/authorization-server.ts';
import { startEchoUpstream } from '../demo/echo-upstream.ts';
import { createApp, type App } from '../src/app.ts';
import { loadConfigObject } from '../src/config/load.ts';
import { createLogger } from '../src/log.ts';
import { writeDevCertificates, type PemPair } from '../src/tls/dev-certs.ts';

const once = process.argv.includes('--once');
const dir = join(process.cwd(), '.tmp', 'demo');
const show = (path: string) => relative(process.cwd(), path) || '.';
const say = (line = '') => process.stdout.write(`${line}\n`);

async function startGuard(config: Record<string, unknown>, logFile: string): Promise<{ app: App; url: string; adminUrl: string }> {
  const log = await open(logFile, 'a');
  // The same logger as `run` (levels as words, service and pid), to the demo's log file.
  const logger = createLogger('info', log.createWriteStream());
  // Port 8443 when free, any port otherwise (a second demo, or a real service there).
  for (const port of [8443, 0]) {
    const app = createApp(loadConfigObject({ ...config, listen: { host: '127.0.0.1', port } }, 'demo (embedded defaults)'), { logger });
    try {
      const started = await app.start();
      return { app, url: started.url, adminUrl: started.adminUrl ?? '(none)' };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || port === 0) throw err;
    }
  }
  throw new Error('unreachable');
}

async function main(): Promise<void> {
  await mkdir(dir, { recursive: true });
  const files = await writeDevCertificates(dir);
  const read = (name: string) => readFile(files[name] as string, 'utf8');
  const ca = await read('ca.crt');
  const pair = async (name: string): Promise<PemPair> => ({ cert: await read(`${name}.crt`), key: await read(`${name}.key`) });
  const [server, client1, client2] = [await pair('tls'), await pair('client1'), await pair('client2')];

  const as = await startAuthorizationServer({ tls: server });
  const upstream = await startEchoUpstream();
  const logFile = join(dir, 'cnfguard.log');
  const guard = await startGuard(
    {
      tls: { cert: files['tls.crt'], key: files['tls.key'] },
      introspection: { url: as.introspectionUrl, clientId: 'rs', clientSecret: AS_CLIENTS.rs, ca: files['ca.crt'] },
      upstream: upstream.url,
      binding: 'required',
      admin: { host: '127.0.0.1', port: 0 },
    },
    logFile,
  );

  say('cnfguard demo: certificate-bound access tokens (RFC 8705)');
  say(`  authorization server  ${as.issuer}  (oidc-provider; token and introspection endpoints)`);
  say(`  upstream              ${upstream.url}  (echoes what it receives)`);
  say(`  cnfguard              ${guard.url}  (admin ${guard.adminUrl}; logs in ${show(logFile)})`);
  say(`  certificates          ${show(dir)}/  (dev CA, server, client1, client2)`);
  say();

  const token = await as.issueToken({ clientCert: client1, caCert: ca });
  say('1. client1 gets a token from the AS over mTLS; the AS binds it to client1\'s certificate (cnf.x5t#S256).');

  const call = async (label: string, client: PemPair | undefined) => {
    const agent = new Agent({ connect: { ca, ...(client ?? {}) } });
    try {
      const r = await request(`${guard.url}/hello`, { dispatcher: agent, headers: { authorization: `Bearer ${token}` } });
      const body = await r.body.text();
      say(`${label}: HTTP ${r.statusCode}`);
      if (r.statusCode === 200) {
        const headers = (JSON.parse(body) as { headers: Record<string, string> }).headers;
        for (const name of ['x-auth-client-id', 'x-auth-scope', 'x-auth-cert-thumbprint', 'x-forwarded-client-cert']) say(`     upstream saw ${name}: ${headers[name]}`);
      } else {
        say(`     WWW-Authenticate: ${String(r.headers['www-authenticate'])}`);
      }
      return r.statusCode;
    } finally {
      await agent.close();
    }
  };
  const results = [
    await call('2. client1 calls cnfguard with its own certificate   ', client1),
    await call('3. the same token replayed with client2\'s certificate', client2),
    await call('4. the same token with no certificate at all        ', undefined),
  ];
  say();

  const stop = async () => {
    await guard.app.stop(1000);
    await Promise.all([as.stop(), upstream.stop()]);
  };
  const expected = [200, 401, 401];
  if (results.some((status, i) => status !== expected[i])) {
    say(`unexpected results ${results.join(', ')} (expected ${expected.join(', ')})`);
    await stop();
    process.exitCode = 1;
    return;
  }
  if (once) {
    say('walkthrough complete: bound token accepted, stolen token refused.');
    await stop();
    return;
  }

  const c = (name: string) => `--cacert ${show(files['ca.crt'] as string)} --cert ${show(files[`${name}.crt`] as string)} --key ${show(files[`${name}.key`] as string)}`;
  say('Try it with curl (from this directory):');
  say(`  TOKEN=$(curl -s ${c('client1')} -u app:${AS_CLIENTS.app} -d grant_type=client_credentials -d 'scope=read write' ${as.tokenUrl} | sed -E 's/.*"access_token":"([^"]+)".*/\\1/')`);
  say(`  curl ${c('client1')} -H "Authorization: Bearer $TOKEN" ${guard.url}/hello     # 200, forwarded`);
  say(`  curl ${c('client2')} -H "Authorization: Bearer $TOKEN" ${guard.url}/hello     # 401 invalid_token`);
  say('Running; press Ctrl-C to stop.');

  await new Promise<void>((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
  say('\nstopping…');
  await stop();
}

await main();
