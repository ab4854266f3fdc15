/**
 * The path-spelling corpus (test/fixtures/path-corpus.ts) through every edge but the HTTP/1.1
 * proxy (test/e2e/upstream-differential.test.ts runs that one), in front of real Express 5,
 * gunicorn and Jetty 9 (test/fixtures/upstreams.ts), issue 26:
 * - HTTP/2: the same guard's port over h2, each spelling as `:path` (its UTF-8 bytes);
 * - the upgrade edge: the same port, each spelling as a websocket upgrade request (the stacks
 *   answer it as a plain request, which cnfguard relays);
 * - the decision API behind a real nginx running the README recipe (examples/decision-api/nginx.conf),
 *   which forwards the target as received to the stack once cnfguard allows it; `nginx-unix`: the
 *   same recipe asking over the decision API's Unix socket (`decisionApi.socket`, beside the port);
 * - the decision API as Envoy's ext_authz and Traefik's forwardAuth ask (test/fixtures/fronts.ts),
 *   and after an allow the raw target sent to the stack with the headers that front would set.
 * Each spelling goes out twice: for a host whose admin route is written `/admin`, and for one whose
 * route is written `/admin/`. The attacker holds a valid token with scope `read` and no certificate.
 * A bypass is a 200 from a stack's admin handler: the edge judged the spelling by the weaker route.
 */
import http2 from 'node:http2';
import net from 'node:net';
import { join } from 'node:path';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { envoyApply, envoyCheckRequest, loadEnvoyRecipe, loadTraefikRecipe, traefikApply, traefikAuthRequest, type ClientRequest, type DecisionAnswer, type FrontOutcome } from '../fixtures/fronts.ts';
import { findNginx, type Nginx } from '../fixtures/nginx.ts';
import { startAuthNginx } from '../fixtures/nginx-auth.ts';
import { UNIX_SOCKET_ENTRY } from '../fixtures/edge-clients.ts';
import { HAND_CORPUS, SLASH_HOST, corpusRoutes, generatedCorpus } from '../fixtures/path-corpus.ts';
import { mapLimited, rawRequest, sendRaw, upstreamAnswerOf, type RawResponse } from '../fixtures/raw-http.ts';
import type { PemPair } from '../../src/tls/dev-certs.ts';
import { baseConfig, startDeployment, startGuard, type Deployment, type Guard } from '../fixtures/stack.ts';
import { STACK_NAMES, missingStacks, startUpstreams, type StackName, type StartedUpstreams, type UpstreamAnswer, type UpstreamStack } from '../fixtures/upstreams.ts';

const absent = missingStacks();
const noNginx = findNginx() === undefined;
const SEED = Number(process.env.UPSTREAM_DIFF_SEED ?? 8705);
const GENERATED_RUNS = 100;
const CONCURRENCY = 8;
const ENVOY = '127.0.0.11';
const TRAEFIK = '127.0.0.12';
/** HTTP/2 and upgrade clients connect from here: 127.0.0.1 is nginx, a trusted proxy whose certificate header would stand in for the TLS one. */
const H2_CLIENT = '127.0.0.13';
/** Host 127.0.0.1 meets the admin route written `/admin`; SLASH_HOST the one written `/admin/`. */
const HOSTS = ['127.0.0.1', SLASH_HOST] as const;
const EDGES = ['http2', 'upgrade', 'nginx', 'nginx-unix', 'envoy', 'traefik'] as const;
type Edge = (typeof EDGES)[number];

interface Setup {
  stack: UpstreamStack;
  guard: Guard;
  nginx: Nginx | undefined;
  nginxUnix: Nginx | undefined;
  h2: http2.ClientHttp2Session | undefined;
}

let d: Deployment;
let upstreams: StartedUpstreams;
const setups = new Map<StackName, Setup>();
let attacker: string;
let admin: string;
const envoy = loadEnvoyRecipe();
const traefik = loadTraefikRecipe();
const corpus = [...HAND_CORPUS, ...generatedCorpus(GENERATED_RUNS, SEED)];

beforeAll(async () => {
  [d, upstreams] = await Promise.all([startDeployment({ scope: 'read write admin' }), startUpstreams()]);
  const trustedProxies = [
    { cidrs: ['127.0.0.1/32'], header: 'x-client-cert', format: 'pem-urlencoded' },
    { cidrs: [`${ENVOY}/32`], header: 'x-forwarded-client-cert', format: 'xfcc' },
    { cidrs: [`${TRAEFIK}/32`], header: 'x-forwarded-tls-client-cert', format: 'base64-der' },
    UNIX_SOCKET_ENTRY,
  ];
  await Promise.all(
    upstreams.stacks.map(async (stack) => {
      const socket = join(d.pki.dir, `decision-${stack.name}.sock`);
      const guard = await startGuard(d.pki, baseConfig(d.pki, d.as, d.upstream, { upstream: stack.url, binding: 'off', trustedProxies, decisionApi: { host: '127.0.0.1', port: 0, socket }, routes: corpusRoutes() }));
      const recipe = (decisionUrl: string) => (noNginx ? undefined : startAuthNginx({ serverCert: d.pki.files.server.cert, serverKey: d.pki.files.server.key, decisionUrl, upstreamUrl: stack.url }));
      const [nginx, nginxUnix] = await Promise.all([recipe(guard.started.decisionUrl as string), recipe(`unix:${socket}`)]);
      setups.set(stack.name, { stack, guard, nginx, nginxUnix, h2: undefined });
    }),
  );
  [attacker, admin] = await Promise.all([d.as.issueToken({ clientId: 'plain-app', scope: 'read', caCert: d.pki.certs.ca.cert }), d.tokenFor('client1', 'read write admin')]);
});

afterAll(async () => {
  for (const setup of setups.values()) {
    setup.h2?.destroy();
    await setup.nginx?.stop();
    await setup.nginxUnix?.stop();
    await setup.guard.stop();
  }
  await upstreams?.close();
  await d?.stop();
});

/** What a client got back through an edge: the status, and the stack's answer when one reached it. */
interface Result {
  status: number;
  answer: UpstreamAnswer | undefined;
}

const fromRaw = (r: RawResponse): Result => ({ status: r.status, answer: r.answer });

/** The `:path` bytes of a spelling over h2: its UTF-8, carried as latin-1 characters (one per byte, as HTTP/1.1 has them). */
const wire = (spelling: string) => Buffer.from(spelling, 'utf8').toString('latin1');

/** One stream on the stack's shared h2 session, or on a fresh one with client1's certificate (closed after). */
function viaHttp2(setup: Setup, spelling: string, host: string, token: string, withCert: boolean): Promise<Result> {
  const port = setup.guard.started.port;
  const socket = (client?: PemPair) => tls.connect({ socket: net.connect({ host: '127.0.0.1', port, localAddress: H2_CLIENT }), host: '127.0.0.1', ALPNProtocols: ['h2'], ca: d.pki.certs.ca.cert, ...(client && { cert: client.cert, key: client.key }) });
  const connect = (client?: PemPair) => http2.connect(`https://127.0.0.1:${port}`, { createConnection: () => socket(client) }).on('error', () => {});
  const session = withCert ? connect(d.pki.certs.clients.client1) : (setup.h2 ??= connect());
  return new Promise((resolve) => {
    const done = (result: Result): void => {
      if (withCert) session.close();
      resolve(result);
    };
    let req: http2.ClientHttp2Stream;
    try {
      req = session.request({ ':method': 'GET', ':path': wire(spelling), ':authority': host, authorization: `Bearer ${token}` });
    } catch {
      done({ status: 0, answer: undefined }); // the client refuses to send it
      return;
    }
    let status = 0;
    let body = '';
    req.setEncoding('utf8');
    req.on('response', (headers) => (status = Number(headers[':status'])));
    req.on('data', (c: string) => (body += c));
    req.on('error', () => done({ status, answer: undefined }));
    req.on('close', () => done({ status, answer: upstreamAnswerOf(body) }));
    req.end();
  });
}

/** A websocket upgrade request on the proxy listener (HTTP/1.1), from the h2 clients' address. */
async function viaUpgrade(setup: Setup, spelling: string, host: string, token: string, withCert: boolean): Promise<Result> {
  const upgrade: [string, string][] = [['Connection', 'Upgrade'], ['Upgrade', 'websocket'], ['Sec-WebSocket-Version', '13'], ['Sec-WebSocket-Key', 'dGhlIHNhbXBsZSBub25jZQ==']];
  const peer = { port: setup.guard.started.port, localAddress: H2_CLIENT, tls: { ca: d.pki.certs.ca.cert, ...(withCert && { client: d.pki.certs.clients.client1 }) } };
  return fromRaw(await sendRaw(peer, rawRequest(spelling, { host, headers: [['Authorization', `Bearer ${token}`], ...upgrade] })));
}

async function viaNginx(nginx: Nginx | undefined, spelling: string, host: string, token: string, withCert: boolean): Promise<Result> {
  const port = nginx?.port as number;
  return fromRaw(await sendRaw({ port, tls: { ca: d.pki.certs.ca.cert, ...(withCert && { client: d.pki.certs.clients.client1 }) } }, rawRequest(spelling, { host, headers: [['Authorization', `Bearer ${token}`]] })));
}

/** Envoy and Go read an absolute-form target as its path. */
const originForm = (target: string) => target.replace(/^https?:\/\/[^/?#]*/i, '') || '/';

/** Asks the decision API as `front` does, then, after an allow, sends the target as received to the stack with that front's headers. */
async function viaModel(setup: Setup, front: 'envoy' | 'traefik', spelling: string, host: string, token: string, withCert: boolean): Promise<Result> {
  const target = originForm(spelling);
  const client: ClientRequest = { method: 'GET', target, host, headers: { authorization: `Bearer ${token}` }, ...(withCert && { certificates: [d.pki.certs.clients.client1] }) };
  const check = front === 'envoy' ? envoyCheckRequest(envoy, client) : traefikAuthRequest(traefik, client, '198.51.100.7');
  const asked = await sendRaw(
    { port: setup.guard.started.decisionPort as number, localAddress: front === 'envoy' ? ENVOY : TRAEFIK },
    rawRequest(check.path, { method: check.method, host: null, headers: Object.entries(check.headers) }),
  );
  const answer: DecisionAnswer = { status: asked.status, headers: asked.headers, body: asked.body };
  const outcome: FrontOutcome = front === 'envoy' ? envoyApply(envoy, client, answer) : traefikApply(traefik, client, answer);
  if (!outcome.forwarded) return { status: outcome.status, answer: undefined };
  const headers = Object.entries(outcome.upstream).filter(([name]) => name !== 'host');
  const port = Number(new URL(setup.stack.url).port);
  return fromRaw(await sendRaw({ port }, rawRequest(target, { host, headers })));
}

/** One request through `edge`; `withCert`: with client1's certificate (the admin token is bound to it). */
function through(edge: Edge, setup: Setup, spelling: string, host: string, token: string, withCert = false): Promise<Result> {
  if (edge === 'http2') return viaHttp2(setup, spelling, host, token, withCert);
  if (edge === 'upgrade') return viaUpgrade(setup, spelling, host, token, withCert);
  if (edge === 'nginx') return viaNginx(setup.nginx, spelling, host, token, withCert);
  if (edge === 'nginx-unix') return viaNginx(setup.nginxUnix, spelling, host, token, withCert);
  return viaModel(setup, edge, spelling, host, token, withCert);
}

const summary: string[] = [];

for (const stack of STACK_NAMES) {
  describe.skipIf(absent[stack] !== undefined)(`${stack}: the path corpus through HTTP/2 and the decision API`, () => {
    for (const edge of EDGES) {
      it.skipIf((edge === 'nginx' || edge === 'nginx-unix') && noNginx)(`${edge}: no spelling (${corpus.length} x ${HOSTS.length} hosts) reaches the admin handler with the attacker token`, async () => {
        const setup = setups.get(stack)!;
        // Controls: the admin handler answers the admin token on its certificate; the attacker reaches public, not admin.
        for (const host of HOSTS) {
          expect((await through(edge, setup, '/admin/users', host, admin, true)).answer?.handler, `${edge} ${host} /admin/users as admin`).toBe('admin');
          expect([401, 403], `${edge} ${host} /admin/users`).toContain((await through(edge, setup, '/admin/users', host, attacker)).status);
          expect((await through(edge, setup, '/public/x', host, attacker)).answer?.handler, `${edge} ${host} /public/x`).toBe('public');
        }
        const requests = corpus.flatMap((spelling) => HOSTS.map((host) => ({ spelling, host })));
        const results = await mapLimited(requests, CONCURRENCY, async (r) => ({ ...r, result: await through(edge, setup, r.spelling, r.host, attacker) }));
        const offending = results
          .filter(({ result }) => result.status === 200 && result.answer?.handler === 'admin')
          .map(({ spelling, host, result }) => `${JSON.stringify(spelling)} (Host ${host}) -> 200 from the admin handler (${stack} path ${JSON.stringify(result.answer?.path)})`);
        const publicCount = results.filter(({ result }) => result.answer?.handler === 'public').length;
        if (process.env.UPSTREAM_DIFF_VERBOSE === '1') for (const { spelling, host, result } of results) console.log(`${stack}/${edge}\t${host}\t${JSON.stringify(spelling)}\t${result.status}\t${result.answer?.handler ?? '-'}`);
        summary.push(`${stack}/${edge}: ${results.length} requests, ${publicCount} reached the public handler, ${results.length - publicCount - offending.length} refused (by cnfguard, the front, or not sendable), ${offending.length} bypasses`);
        if (offending.length > 0) console.log(`${stack}/${edge}: ${offending.length} spellings reach the admin handler:\n  ${offending.join('\n  ')}`);
        expect(offending).toEqual([]);
      });
    }
  });
}

afterAll(() => {
  if (summary.length > 0) console.log(`path corpus through the edges (${HAND_CORPUS.length} hand-written + ${corpus.length - HAND_CORPUS.length} generated spellings):\n  ${summary.join('\n  ')}`);
});
