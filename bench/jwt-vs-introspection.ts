// node bench/jwt-vs-introspection.ts: latency through a real cnfguard (in-process) in front of the
// demo oidc-provider AS, JWT (local verification) vs opaque (introspection), cache hit and first sight.
// Sequential requests over one keep-alive mTLS connection; loopback only, bounded counts.
import { Agent, request } from 'undici';
import { startAuthorizationServer } from '../demo/authorization-server.ts';
import { startEchoUpstream } from '../demo/echo-upstream.ts';
import { baseConfig, createPki, startGuard } from '../test/fixtures/stack.ts';

const JWT_RS = 'https://jwt-rs.cnfguard.test/';
const N = Number(process.env.N ?? 300);
const pki = await createPki();
const as = await startAuthorizationServer({ tls: pki.certs.server, jwtResource: JWT_RS });
const upstream = await startEchoUpstream();
const guard = await startGuard(pki, {
  ...baseConfig(pki, as, upstream, { jwt: { issuer: as.issuer, jwksUri: `${as.issuer}/jwks`, algorithms: ['RS256'] }, validation: 'jwt-then-introspection' }),
  logLevel: 'warn',
});
const client = pki.certs.clients.client1;
const dispatcher = new Agent({ connect: { ca: pki.certs.ca.cert, cert: client.cert, key: client.key } });
const issue = (resource?: string) => as.issueToken({ clientCert: client, caCert: pki.certs.ca.cert, ...(resource !== undefined && { resource }) });

async function once(token: string): Promise<number> {
  const started = performance.now();
  const res = await request(`${guard.started.url}/x`, { dispatcher, headers: { authorization: `Bearer ${token}` } });
  await res.body.dump();
  if (res.statusCode !== 200) throw new Error(`status ${res.statusCode}`);
  return performance.now() - started;
}
const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))] as number;
const row = (name: string, xs: number[]) => console.log(`${name.padEnd(32)} n=${xs.length} p50=${pct(xs, 50).toFixed(3)}ms p99=${pct(xs, 99).toFixed(3)}ms`);

const jwt = await issue(JWT_RS);
const opaque = await issue();
await once(jwt);
await once(opaque);
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
row('JWT, cache hit', hitJwt);
row('opaque, cache hit', hitOpaque);
row('JWT, never seen (RS256 verify)', missJwt);
row('opaque, never seen (introspect)', missOpaque);
await dispatcher.close();
await guard.stop();
await upstream.stop();
await as.stop();
await pki.cleanup();
