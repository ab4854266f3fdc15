/**
 * Issue 26, "one cross-edge contract test": every row of test/fixtures/edge-contract-rows.ts (the
 * decision rows, challenges, identity and claim headers, DPoP, RFC 9728 metadata, header limits)
 * goes through every edge (HTTP/1.1, HTTP/2, the websocket upgrade edge, the decision API behind a
 * real nginx with the README recipe, over TCP and over the Unix socket `decisionApi.socket`, and as
 * Envoy and Traefik call it, gRPC) of ONE deployment, and
 * each field is compared with the one expected answer. A failure names edge, row, field, expected
 * and actual. No cell is excused: a drift between edges fails the test.
 */
import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { calculateJwkThumbprint, exportJWK, type JWK } from 'jose';
import { generateKeyPair, generateProof } from 'dpop';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../../src/app.ts';
import { loadConfigFile } from '../../src/config/load.ts';
import { createLogger } from '../../src/log.ts';
import { sha256, subjectAltNames, subjectRfc4514, thumbprintS256 } from '../../src/tls/certificates.ts';
import { configureFrontClaims, configureFrontHttpsig, EDGES, FRONT_ADDRESS, isNginx, NotSendable, send, stallHeaders, startRecipeNginx, UNIX_SOCKET_ENTRY, type EdgeId, type EdgeTargets } from '../fixtures/edge-clients.ts';
import { actualFields, DECISION_EDGES, expectedFields, useAssertionJwks } from '../fixtures/edge-contract-fields.ts';
import { ASSERTION_ISSUER, STEP_UP, stepUpAnswers } from '../fixtures/edge-contract-trust-rows.ts';
import { HEADER_COUNT, URL_BYTES, IDENTITY_HEADERS, ORIGIN, ROUTE_METHODS, ROUTE_PREFIX, ROWS as CORE_ROWS, type Env, type Row } from '../fixtures/edge-contract-rows.ts';
import { HTTPSIG_ROWS, httpsigEnv, nginxWithHttpsig } from '../fixtures/edge-contract-httpsig-rows.ts';
import { startIntrospectionStub, type IntrospectionStub } from '../fixtures/introspection-stub.ts';
import type { Nginx } from '../fixtures/nginx.ts';
import { baseConfig, LogCapture, startDeployment, type Deployment } from '../fixtures/stack.ts';
import { waitFor } from '../fixtures/wait.ts';

const STALL_WAIT_MS = 8000;
const ROWS: readonly Row[] = [...CORE_ROWS, ...HTTPSIG_ROWS];
/** Routes under `binding: report-only`. */
const REPORT_ROUTES: readonly string[] = ['report', 'sigreport'];

let d: Deployment;
let stub: IntrospectionStub;
let app: ReturnType<typeof createApp>;
let logs: LogCapture;
let nginx: Nginx | undefined;
/** The same recipe asking over the decision API's Unix socket. */
let nginxUnix: Nginx | undefined;
let decisionSocket: string;
let env: Env;
let targets: EdgeTargets;
/** The guard's clock runs `skew` ms ahead of the real one (DPoP nonces rotate with it). */
let skew = 0;
let table: Promise<Map<string, Cell>>;
let stalls: Promise<Map<EdgeId, string>>;

interface Cell {
  row: string;
  edge: EdgeId;
  skipped?: string;
  expected: Record<string, string>;
  actual: Record<string, string>;
}

// ------------------------------------------------------------------------------------ running

const SPOOFED = IDENTITY_HEADERS.map((h) => [h, 'spoofed'] as const);
let sent = 0;

async function accessLine(path: string, count: number): Promise<Record<string, unknown> | undefined> {
  const lines = () => logs.entries().filter((e) => e.msg !== undefined && e.reqId !== undefined && e.path === path);
  // A missing line is a compared field ("(no access line)"), not an error of the whole table.
  return waitFor(() => lines()[count - 1], `access line ${count} of ${path}`).catch(() => undefined);
}

async function runCell(row: Row, edge: EdgeId): Promise<Cell> {
  const method = edge === 'grpc' ? 'POST' : 'GET';
  const path = row.path ?? `${ROUTE_PREFIX[row.route]}/${row.id}/${edge}`;
  const cell = { row: row.id, edge, expected: expectedFields(row, edge, method, env), actual: {} };
  const skipped = isNginx(edge) && nginx === undefined ? 'nginx is not installed' : row.skip?.[edge];
  if (skipped !== undefined) return { ...cell, skipped };
  const built = await row.build({ env, edge, method, path });
  const marker = `${row.id}/${edge}/${++sent}`;
  const cert = built.cert === undefined ? undefined : d.pki.certs.clients[built.cert];
  const request = (mark: string) => ({ method, target: `${path}${row.query ?? ''}`, host: 'api.test', lines: [['x-contract-cell', mark] as const, ...(row.path === undefined ? SPOOFED : []), ...built.lines], cert, ...(row.padTo !== undefined && { padTo: row.padTo }) });
  try {
    if (row.twice === true) {
      await send(edge, targets, request(`${marker}-first`));
      await accessLine(path, 1);
    }
    const seen = await send(edge, targets, request(marker));
    const upstream = seen.upstream ?? d.upstream.requests.find((r) => r.headers['x-contract-cell'] === marker)?.headers;
    const line = row.path === undefined ? await accessLine(path, row.twice === true ? 2 : 1) : undefined;
    return { ...cell, actual: actualFields(seen, upstream, line) };
  } catch (err) {
    if (err instanceof NotSendable) return { ...cell, skipped: err.message };
    throw err;
  }
}

async function pool<T>(tasks: (() => Promise<T>)[], width: number): Promise<T[]> {
  const results: T[] = [];
  let next = 0;
  await Promise.all(Array.from({ length: width }, async () => {
    while (next < tasks.length) {
      const i = next++;
      results[i] = await (tasks[i] as () => Promise<T>)();
    }
  }));
  return results;
}

async function runTable(): Promise<Map<string, Cell>> {
  const cells = new Map<string, Cell>();
  const keep = (c: Cell) => cells.set(`${c.edge}:${c.row}`, c);
  const main = ROWS.filter((r) => r.asDown !== true).flatMap((row) => EDGES.map((edge) => () => runCell(row, edge)));
  for (const c of await pool(main, 4)) keep(c);
  // The AS answers 500 to everyone: one cell at a time, each with a token not cached yet.
  stub.mode = { kind: 'status', status: 500 };
  try {
    for (const row of ROWS.filter((r) => r.asDown === true)) for (const edge of EDGES) keep(await runCell(row, edge));
  } finally {
    stub.mode = { kind: 'normal' };
  }
  return cells;
}

/**
 * The front's connection (or a client's, h1) stalls mid-headers: answered with 408 per
 * limits.headersTimeoutMs. For `nginx-unix`, a connection to the decision API's socket: its
 * listener has the same limits as the TCP one.
 */
async function runStalls(): Promise<Map<EdgeId, string>> {
  const describe = (r: { afterMs: number | undefined; status: number | undefined }) => (r.afterMs === undefined ? `no answer within ${STALL_WAIT_MS} ms` : String(r.status ?? 'closed without an answer'));
  const [h1, ...fronts] = await Promise.all([
    stallHeaders(targets.proxyPort, { ca: d.pki.certs.ca.cert, waitMs: STALL_WAIT_MS }),
    ...DECISION_EDGES.map((edge) =>
      edge === 'nginx-unix' ? stallHeaders({ socketPath: decisionSocket }, { waitMs: STALL_WAIT_MS }) : stallHeaders(targets.decisionPort, { from: FRONT_ADDRESS[edge as keyof typeof FRONT_ADDRESS], waitMs: STALL_WAIT_MS }),
    ),
  ]);
  return new Map<EdgeId, string>([['h1', describe(h1!)], ...DECISION_EDGES.map((edge, i) => [edge, describe(fronts[i]!)] as [EdgeId, string])]);
}

// -------------------------------------------------------------------------------------- setup

beforeAll(async () => {
  d = await startDeployment();
  stub = await startIntrospectionStub(d.pki.certs.server);
  const key = await generateKeyPair('ES256');
  const other = await generateKeyPair('ES256');
  const jkt = await calculateJwkThumbprint((await exportJWK(key.publicKey)) as JWK, 'sha256');
  const otherJkt = await calculateJwkThumbprint((await exportJWK(other.publicKey)) as JWK, 'sha256');
  const x509 = new X509Certificate(d.pki.certs.clients.client1.cert);
  const sans = subjectAltNames(x509);
  const client1 = { thumbprint: thumbprintS256(x509.raw), xfcc: [`Hash=${sha256(x509.raw).toString('hex')}`, `Subject="${subjectRfc4514(x509)}"`, ...sans.uri.map((u) => `URI=${u}`), ...sans.dns.map((n) => `DNS=${n}`)].join(';') };
  const exp = Math.floor(Date.now() / 1000) + 3600;
  const answer = (sub: string, clientId: string, extra: Record<string, unknown>) => ({ active: true, sub, client_id: clientId, scope: 'read', exp, ...extra });
  const tokens = {
    ...{ bound: 'tok-bound', unbound: 'tok-unbound', dpop: 'tok-dpop', dpopOther: 'tok-dpop-other', both: 'tok-both', unknown: 'tok-unknown', expired: 'tok-expired', cnfUnknown: 'tok-cnf-unknown' },
    ...{ stepUpMet: 'tok-stepup-met', stepUpNoAcr: 'tok-stepup-no-acr', stepUpWrongAcr: 'tok-stepup-wrong-acr', stepUpStale: 'tok-stepup-stale', stepUpNoAuthTime: 'tok-stepup-no-auth-time', stepUpDpop: 'tok-stepup-dpop' },
  };
  stub.answers.set(tokens.expired, answer('alice', 'app', { cnf: { 'x5t#S256': client1.thumbprint }, exp: exp - 7200 }));
  stub.answers.set(tokens.cnfUnknown, answer('alice', 'app', { cnf: { 'x5t#S256': client1.thumbprint, 'x5t#S512': 'AAAA' } }));
  stub.answers.set(tokens.bound, answer('alice', 'app', { cnf: { 'x5t#S256': client1.thumbprint }, tenant_id: 'acme' }));
  stub.answers.set(tokens.unbound, answer('bob', 'plain-app', {}));
  stub.answers.set(tokens.dpop, answer('carol', 'dpop-app', { cnf: { jkt }, token_type: 'DPoP', tenant_id: 'globex' }));
  stub.answers.set(tokens.dpopOther, answer('carol', 'dpop-app', { cnf: { jkt: otherJkt }, token_type: 'DPoP' }));
  stub.answers.set(tokens.both, answer('dave', 'both-app', { cnf: { 'x5t#S256': client1.thumbprint, jkt }, token_type: 'DPoP', tenant_id: 'acme' }));
  const sig = httpsigEnv(() => (Date.now() + skew) / 1000);
  const sigAnswer = (cnf: Record<string, unknown>) => answer('sig-user', 'sig-app', { cnf, token_type: 'httpsig' });
  stub.answers.set(sig.tokens.ed25519, sigAnswer(sig.keys.ed25519.cnf));
  stub.answers.set(sig.tokens.es256, sigAnswer(sig.keys.es256.cnf));
  stub.answers.set(sig.tokens.htsk, sigAnswer(sig.keys.htsk.cnf));
  stub.answers.set(sig.tokens.withCert, answer('sig-user', 'sig-app', { cnf: { 'x5t#S256': client1.thumbprint, ...sig.keys.ed25519.cnf } }));
  let fresh = 0;
  const freshToken = async () => {
    const token = `tok-fresh-${++fresh}`;
    stub.answers.set(token, answer('erin', 'app', { cnf: { 'x5t#S256': client1.thumbprint } }));
    return token;
  };
  const routes = Object.entries(ROUTE_PREFIX)
    .filter(([name]) => name !== 'default')
    .map(([name, pathPrefix]) => ({
      ...{ name, pathPrefix, methods: ROUTE_METHODS[name], ...(name === 'optional' && { binding: 'optional', assertion: false }), ...(REPORT_ROUTES.includes(name) && { binding: 'report-only' }), ...(name === 'admin' && { scopes: ['admin'] }) },
      ...(STEP_UP[name] !== undefined && { stepUp: STEP_UP[name] }),
    }));
  // The signed assertion on every route but `optional` (assertion: false).
  const assertionKey = join(d.pki.dir, 'assertion.key');
  decisionSocket = join(d.pki.dir, 'decision.sock');
  await writeFile(assertionKey, generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, { mode: 0o600 });
  const config = baseConfig(d.pki, d.as, d.upstream, {
    listen: { host: '127.0.0.1', port: 0, http2: true },
    introspection: { url: stub.url, clientId: 'rs', clientSecret: 'rs-secret', ca: d.pki.files.ca, timeoutMs: 1500, probeAtStartup: false, circuitBreaker: { failureThreshold: 100_000 }, budget: { perPeerPerSecond: 0, totalPerSecond: 0 } },
    resource: `${ORIGIN}/`,
    authorizationServers: ['https://as.test'],
    publicOrigin: ORIGIN,
    claimHeaders: { 'x-tenant': 'claims.tenant_id' },
    dpop: { nonce: true, nonceRotationSeconds: 300, proofMaxAgeSeconds: 900 },
    limits: { headerCount: HEADER_COUNT, urlBytes: URL_BYTES, headersTimeoutMs: 2000 },
    trustedProxies: [
      { cidrs: [`${FRONT_ADDRESS.nginx}/32`], header: 'x-client-cert', format: 'pem-urlencoded' },
      { cidrs: [`${FRONT_ADDRESS.envoy}/32`], header: 'x-forwarded-client-cert', format: 'xfcc' },
      { cidrs: [`${FRONT_ADDRESS.traefik}/32`], header: 'x-forwarded-tls-client-cert', format: 'base64-der' },
      UNIX_SOCKET_ENTRY,
    ],
    // The socket beside the port: one deployment, one contract, whichever way nginx asks.
    decisionApi: { host: '127.0.0.1', port: 0, socket: decisionSocket },
    assertion: { keyFile: assertionKey, issuer: ASSERTION_ISSUER },
    routes,
  });
  const configFile = join(d.pki.dir, 'edge-contract.yaml');
  await writeFile(configFile, stringify(config));
  logs = new LogCapture();
  app = createApp(loadConfigFile(configFile, process.env), { logger: createLogger('info', logs.stream), defaultMetrics: false, now: () => Date.now() + skew });
  const started = await app.start();
  // The assertion header is in every recipe; the claim header is added to each as its comments say.
  configureFrontClaims(['x-tenant']);
  configureFrontHttpsig();
  const recipe = (decisionUrl: string) => startRecipeNginx({ serverCert: d.pki.files.server.cert, serverKey: d.pki.files.server.key, decisionUrl, upstreamUrl: d.upstream.url, claimHeaders: ['x-tenant'], patch: nginxWithHttpsig });
  [nginx, nginxUnix] = await Promise.all([recipe(started.decisionUrl as string), recipe(`unix:${started.decisionSocket as string}`)]);
  targets = { ca: d.pki.certs.ca.cert, proxyPort: started.port, decisionPort: started.decisionPort as number, nginxPort: nginx?.port ?? 0, nginxUnixPort: nginxUnix?.port ?? 0 };
  // The clock moved 1 s into a nonce period, its nonce taken, then moved one period on: that nonce
  // is now the previous one (accepted, with a fresh DPoP-Nonce), and the run has ~5 minutes before
  // the next turn. Proofs then look up to ~10 minutes old: dpop.proofMaxAgeSeconds allows 15.
  const nonceNow = async () => {
    const r = await send('h1', targets, { method: 'GET', target: '/dpop/nonce', host: 'api.test', lines: [['Authorization', `DPoP ${tokens.dpop}`], ['DPoP', await generateProof(key, `${ORIGIN}/dpop/nonce`, 'GET', undefined, tokens.dpop)]], cert: undefined });
    return r.headers['dpop-nonce']?.[0] ?? '';
  };
  const rotation = 300_000;
  skew = rotation - (Date.now() % rotation) + 1000;
  const previous = await nonceNow();
  skew += rotation;
  // Step-up answers on the guard's clock (skew set); the assertion keys as an upstream fetches them.
  const stepUpBase = answer('alice', 'app', { cnf: { 'x5t#S256': client1.thumbprint }, tenant_id: 'acme' });
  const stepUpDpopBase = answer('carol', 'dpop-app', { cnf: { jkt }, token_type: 'DPoP' });
  for (const [token, stepUpAnswer] of stepUpAnswers(tokens, stepUpBase, stepUpDpopBase, Math.floor((Date.now() + skew) / 1000))) stub.answers.set(token, stepUpAnswer);
  const jwks = (await (await fetch(`${started.adminUrl}/jwks.json`)).json()) as { keys: { kid: string }[] };
  useAssertionJwks(jwks);
  const assertion = { aud: new URL(d.upstream.url).origin, kid: jwks.keys[0]?.kid ?? '(none published)' };
  env = { tokens, key, nonces: { previous, current: await nonceNow() }, client1, jkt, httpsig: sig, freshToken, assertion };
  expect(env.nonces.current).not.toBe(previous);
  stalls = runStalls();
  table = runTable();
  await Promise.allSettled([table]);
}, 120_000);

afterAll(async () => {
  await stalls?.catch(() => undefined);
  await nginx?.stop();
  await nginxUnix?.stop();
  await app?.stop(1000);
  await stub?.stop();
  await d?.stop();
});

// -------------------------------------------------------------------------------------- checks

function problems(cell: Cell): string[] {
  const out: string[] = [];
  for (const [field, expected] of Object.entries(cell.expected)) {
    const actual = cell.actual[field];
    if (actual !== expected) out.push(`${cell.edge}:${cell.row}:${field}\n    expected ${JSON.stringify(expected)}\n    actual   ${JSON.stringify(actual)}`);
  }
  return out;
}

describe('one contract through every edge', () => {
  it.each(EDGES)('%s: every row, field by field', async (edge) => {
    const cells = [...(await table).values()].filter((c) => c.edge === edge && c.skipped === undefined);
    expect(cells.flatMap(problems)).toEqual([]);
  });

  it('the decision API times a stalled front by limits.headersTimeoutMs, as the proxy listener times a client', async () => {
    const seen = await stalls;
    const out: string[] = [];
    for (const [edge, actual] of seen) if (actual !== '408') out.push(`${edge}:headers-stalled:status\n    expected "408"\n    actual   ${JSON.stringify(actual)}`);
    expect(out).toEqual([]);
    // Each with its access line: the proxy listener's, and one per front on the decision API (TCP and socket).
    const timedOut = (edge: string | undefined) => logs.entries().filter((e) => e.msg === 'request' && e.reason === 'request_timeout' && e.edge === edge).length;
    expect({ proxy: timedOut(undefined), decision: timedOut('decision-api') }).toEqual({ proxy: 1, decision: DECISION_EDGES.length });
  });

  it('CONNECT: never forwarded; where cnfguard sees it, refused 501 method_unsupported with its access line', async () => {
    await table; // after the table: its cells count access lines by path
    const out: Record<string, string> = {};
    for (const edge of EDGES) {
      // gRPC calls are POSTs; the modelled Envoy routes no CONNECT (its recipe sets no upgrade_configs for it).
      if (edge === 'grpc' || edge === 'envoy' || (isNginx(edge) && nginx === undefined)) continue;
      const marker = `connect/${edge}/${++sent}`;
      const authority = `connect-${edge}.test:443`;
      const seen = await send(edge, targets, { method: 'CONNECT', target: authority, host: authority, lines: [['x-contract-cell', marker], ['Authorization', `Bearer ${env.tokens.bound}`]], cert: d.pki.certs.clients.client1 });
      const forwarded = d.upstream.requests.some((r) => r.headers['x-contract-cell'] === marker);
      // nginx refuses a CONNECT itself (cnfguard is not asked); Traefik asks with X-Forwarded-Method and relays the 501.
      const line = isNginx(edge) ? undefined : await waitFor(() => logs.entries().find((e) => e.method === 'CONNECT' && e.reqId === seen.headers['x-request-id']?.[0]), `the CONNECT access line (${edge})`).catch(() => undefined);
      out[edge] = `${seen.status} forwarded=${forwarded} line=${line === undefined ? '-' : `${String(line.status)}/${String(line.reason)}`}`;
    }
    console.log(`CONNECT on every edge: ${JSON.stringify(out)}`);
    const refused = '501 forwarded=false line=501/method_unsupported';
    for (const [edge, seen] of Object.entries(out)) expect(seen, edge).toMatch(isNginx(edge as EdgeId) ? /^[45]\d\d forwarded=false line=-$/ : new RegExp(`^${refused}$`));
    expect(Object.keys(out)).toEqual(EDGES.filter((e) => e !== 'grpc' && e !== 'envoy' && (nginx !== undefined || !isNginx(e))));
  });

  it('a header value with a control byte: 400 http_malformed wherever it arrives as HTTP/1.1, with an access line (nginx relays the decision API\'s refusal, not a 500)', async () => {
    await table;
    const out: Record<string, string> = {};
    for (const edge of ['h1', 'nginx', 'nginx-unix'] as const) {
      if (isNginx(edge) && nginx === undefined) continue;
      const before = logs.entries().filter((e) => e.msg === 'request' && e.reason === 'http_malformed').length;
      const seen = await send(edge, targets, { method: 'GET', target: `/control-byte/${edge}`, host: 'api.test', lines: [['Authorization', `Bearer ${env.tokens.bound}`], ['X-Control', 'a\x7fb']], cert: d.pki.certs.clients.client1 });
      const lines = await waitFor(() => { const n = logs.entries().filter((e) => e.msg === 'request' && e.reason === 'http_malformed').length - before; return n > 0 ? n : undefined; }, `the line (${edge})`).catch(() => 0);
      out[edge] = `${seen.status} lines=${lines}`;
    }
    expect(out).toEqual(Object.fromEntries(Object.keys(out).map((edge) => [edge, '400 lines=1'])));
  });

  it('the table size: every edge runs most rows', async () => {
    const cells = [...(await table).values()];
    const run = cells.filter((c) => c.skipped === undefined);
    for (const edge of EDGES) expect(run.filter((c) => c.edge === edge).length, edge).toBeGreaterThan(ROWS.length / 2);
    console.log(`edge contract: ${ROWS.length} rows x ${EDGES.length} edges = ${cells.length} cells, ${run.length} run (${cells.length - run.length} not sendable), ${run.reduce((n, c) => n + Object.keys(c.expected).length, 4)} fields compared`);
  });
});
