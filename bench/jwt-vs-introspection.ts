// node bench/jwt-vs-introspection.ts: JWT access tokens (local verification) against opaque tokens
// (introspection at the demo oidc-provider AS) through `cnfguard run` in its own process, default
// config apart from `jwt:`.
// 1. Cache-hit throughput: rounds alternating JWT and opaque, 32 keep-alive mTLS connections
//    (autocannon); median req/s and the ratio JWT / opaque (issue 17's goal: >= 1.0x).
// 2. Latency, sequential over one keep-alive mTLS connection: cache hit, and first sight of a token
//    (a JWT's signature check against an opaque token's AS round trip), p50 and p99.
// Loopback only; bounded counts (ROUNDS, SECONDS, N).
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { stringify } from 'yaml';
import { startAuthorizationServer } from '../demo/authorization-server.ts';
import { baseConfig, createPki } from '../test/fixtures/stack.ts';
import { spawnChild } from './lib/children.ts';
import { startCli } from './lib/cli-target.ts';
import { runLoad } from './lib/load.ts';
import { machineInfo } from './lib/machine.ts';
import { freePort } from './lib/nginx.ts';
import { median } from './lib/table.ts';

const JWT_RS = 'https://jwt-rs.cnfguard.test/';
const N = Number(process.env.N ?? 300);
const ROUNDS = Number(process.env.ROUNDS ?? 5);
const SECONDS = Number(process.env.SECONDS ?? 3);
const CONNECTIONS = 32;

const machine = machineInfo(false);
console.log(`machine: ${machine.cpuModel} x${machine.cores}, ${machine.node}, load ${machine.loadavg.join(' ')}`);
const pki = await createPki();
const as = await startAuthorizationServer({ tls: pki.certs.server, jwtResource: JWT_RS });
// The bench upstream answers every request with one small fixed body (an echo would send the JWT back).
const upstream = await spawnChild({ name: 'upstream', script: join(import.meta.dirname, 'servers', 'upstream.ts') });
const [port, adminPort] = [await freePort(), await freePort()];
const configFile = join(pki.dir, 'jwt-bench.yaml');
// One route per token kind, each with its audience (RFC 9068 §4: a JWT route must name one): the
// JWTs are for JWT_RS, the opaque tokens for the AS's default resource.
const base = baseConfig(pki, as, { url: upstream.ready.url } as Parameters<typeof baseConfig>[2], {
  jwt: { issuer: as.issuer, jwksUri: `${as.issuer}/jwks`, algorithms: ['RS256'] },
  validation: 'jwt-then-introspection',
  audience: as.resource,
  routes: [{ pathPrefix: '/jwt', audience: JWT_RS }],
});
await writeFile(
  configFile,
  stringify({
    ...base,
    // N never-seen opaque tokens from one client in a row exceed the default per-peer
    // introspection budget (50/s, burst 100), which would answer 429: off here.
    introspection: { ...(base.introspection as Record<string, unknown>), budget: { perPeerPerSecond: 0 } },
    listen: { host: '127.0.0.1', port },
    admin: { host: '127.0.0.1', port: adminPort },
  }),
);
const guard = await startCli({ entry: 'cmd/cnfguard.ts', configFile, adminUrl: `http://127.0.0.1:${adminPort}`, cpus: undefined, nodeFlags: [], stdout: false });
const url = `https://localhost:${port}`;
const client = pki.certs.clients.client1;
const dispatcher = new Agent({ connect: { ca: pki.certs.ca.cert, cert: client.cert, key: client.key, servername: 'localhost' } });
const issue = (resource?: string) => as.issueToken({ clientCert: client, caCert: pki.certs.ca.cert, ...(resource !== undefined && { resource }) });

/** The route of each token kind: JWTs (three dot-separated parts) on /jwt, opaque tokens (no dot) on the default route. */
const pathOf = (token: string) => (token.includes('.') ? '/jwt/x' : '/x');

async function once(token: string): Promise<number> {
  const started = performance.now();
  const res = await request(`${url}${pathOf(token)}`, { dispatcher, headers: { authorization: `Bearer ${token}` } });
  await res.body.dump();
  if (res.statusCode !== 200) throw new Error(`status ${res.statusCode}`);
  return performance.now() - started;
}
const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))] as number;
const row = (name: string, xs: number[]) => console.log(`${name.padEnd(34)} n=${xs.length} p50=${pct(xs, 50).toFixed(3)}ms p99=${pct(xs, 99).toFixed(3)}ms`);

try {
  const jwt = await issue(JWT_RS);
  const opaque = await issue();
  await once(jwt);
  await once(opaque);

  const load = (token: string) => runLoad({ url, token, cert: client.cert, key: client.key, connections: CONNECTIONS, durationSeconds: SECONDS, path: pathOf(token), serverPids: guard.pids, sidePids: () => [upstream.pid] });
  await load(jwt);
  await load(opaque); // warm-up of both
  const rps = { jwt: [] as number[], opaque: [] as number[] };
  for (let round = 1; round <= ROUNDS; round++) {
    // Alternate which goes first, so that a drift in the machine's load favours neither.
    const order = round % 2 === 1 ? (['jwt', 'opaque'] as const) : (['opaque', 'jwt'] as const);
    for (const kind of order) {
      const result = await load(kind === 'jwt' ? jwt : opaque);
      if (result.non2xx + result.errors > 0) throw new Error(`${kind}: ${result.non2xx} non-2xx, ${result.errors} errors`);
      rps[kind].push(result.rps);
    }
  }
  console.log(`cache hit, ${CONNECTIONS} connections, ${ROUNDS} rounds x ${SECONDS} s: JWT ${rps.jwt.join(' ')} req/s; opaque ${rps.opaque.join(' ')} req/s`);
  console.log(`  median JWT ${median(rps.jwt)} req/s / opaque ${median(rps.opaque)} req/s = ${(median(rps.jwt) / median(rps.opaque)).toFixed(3)}x (goal >= 1.0x)`);

  const hitJwt: number[] = [];
  const hitOpaque: number[] = [];
  for (let i = 0; i < N * 3; i++) {
    hitJwt.push(await once(jwt));
    hitOpaque.push(await once(opaque));
  }
  // First sight: fresh tokens, issued beforehand so that issuing is not measured.
  const freshJwt = await Promise.all(Array.from({ length: N }, () => issue(JWT_RS)));
  const freshOpaque = await Promise.all(Array.from({ length: N }, () => issue()));
  const missJwt: number[] = [];
  const missOpaque: number[] = [];
  for (let i = 0; i < N; i++) {
    missJwt.push(await once(freshJwt[i] as string));
    missOpaque.push(await once(freshOpaque[i] as string));
  }
  console.log('sequential, one keep-alive mTLS connection:');
  row('JWT, cache hit', hitJwt);
  row('opaque, cache hit', hitOpaque);
  row('JWT, never seen (RS256 verify)', missJwt);
  row('opaque, never seen (introspect)', missOpaque);
} finally {
  await dispatcher.close();
  await guard.stop();
  await upstream.stop();
  await as.stop();
  await pki.cleanup();
}
