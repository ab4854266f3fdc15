/**
 * Differential tests against real upstream stacks (Express 5, gunicorn 20, Jetty 9): what cnfguard
 * judged a request to be must be what the upstream dispatches it as. cnfguard runs in the README's
 * rollout shape (default route `binding: off`, `/admin` required with scope admin, written `/admin`
 * and, for Host slash.test, `/admin/`; a required host route for `admin.example`), one guard per
 * stack. The path corpus is test/fixtures/path-corpus.ts, shared with the other edges
 * (test/e2e/path-corpus-edges.test.ts). The client is a raw TLS socket, so the exact
 * bytes of every spelling arrive (curl and undici normalise paths and headers).
 *
 * The attacker holds a valid token without the admin scope and no certificate: it must never get a
 * 200 from an admin handler, never have a forged identity or forwarding header believed, and never
 * make the upstream see the protected vhost in X-Forwarded-Host. Each test collects every
 * offending spelling per stack and asserts the list is empty, so a failure shows all of them.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PemPair } from '../../src/tls/dev-certs.ts';
import { HAND_CORPUS, SLASH_HOST, corpusRoutes, generatedCorpus } from '../fixtures/path-corpus.ts';
import { mapLimited, rawRequest, sendRaw, type RawResponse } from '../fixtures/raw-http.ts';
import { baseConfig, startDeployment, startGuard, type Deployment, type Guard } from '../fixtures/stack.ts';
import { STACK_NAMES, missingStacks, startUpstreams, type StackName, type StartedUpstreams, type UpstreamAnswer } from '../fixtures/upstreams.ts';

const absent = missingStacks();
for (const [name, reason] of Object.entries(absent)) {
  console.warn(`upstream-differential.test.ts: [SKIPPED ${name}: ${reason}; run scripts/install-test-deps.sh as root]`);
}
const VERBOSE = process.env.UPSTREAM_DIFF_VERBOSE === '1';
/** fast-check seed for the generated spellings; fixed so a failure names the same spellings every run. */
const SEED = Number(process.env.UPSTREAM_DIFF_SEED ?? 8705);
const GENERATED_RUNS = 150;
const PROTECTED_HOST = 'admin.example';

let d: Deployment;
let upstreams: StartedUpstreams;
const guards = new Map<StackName, Guard>();
/** Valid, unbound, scope `read`: passes the public route, must fail both protected ones. */
let attacker: string;
/** Bound to client1, with the admin scope: the control that the admin handlers are reachable at all. */
let admin: string;

beforeAll(async () => {
  const started = performance.now();
  [d, upstreams] = await Promise.all([startDeployment({ scope: 'read write admin' }), startUpstreams()]);
  const upAt = performance.now();
  for (const stack of upstreams.stacks) {
    guards.set(
      stack.name,
      await startGuard(
        d.pki,
        baseConfig(d.pki, d.as, d.upstream, {
          upstream: stack.url,
          binding: 'off',
          routes: corpusRoutes([{ host: PROTECTED_HOST, binding: 'required' }]),
        }),
      ),
    );
  }
  [attacker, admin] = await Promise.all([
    d.as.issueToken({ clientId: 'plain-app', scope: 'read', caCert: d.pki.certs.ca.cert }),
    d.tokenFor('client1', 'read write admin'),
  ]);
  const startups = upstreams.stacks.map((s) => `${s.name} ${Math.round(s.startupMs)} ms`).join(', ');
  console.log(`upstream-differential: stacks up (${startups}); everything up in ${Math.round(performance.now() - started)} ms (stacks ${Math.round(upAt - started)} ms)`);
});

afterAll(async () => {
  for (const guard of guards.values()) await guard.stop();
  await upstreams?.close();
  await d?.stop();
});

// ---- a raw HTTP/1.x client over TLS ----

/** Sends `request` (exact bytes) on a fresh TLS connection and reads until the server closes. */
const send = (port: number, request: Buffer, client?: PemPair): Promise<RawResponse> => sendRaw({ port, tls: { ca: d.pki.certs.ca.cert, ...(client && { client }) } }, request);

/** One GET with `Connection: close` and the token; `host: null` leaves Host out. */
function rawGet(target: string, token: string, options: { headers?: [string, string][]; version?: '1.0' | '1.1'; host?: string | null } = {}): Buffer {
  return rawRequest(target, { ...options, headers: [['Authorization', `Bearer ${token}`], ...(options.headers ?? [])] });
}

/** The route cnfguard logged for a request, by the x-request-id of its response. */
function routeOf(guard: Guard, response: RawResponse): string {
  const id = response.headers['x-request-id'];
  const entry = guard.logs.entries().find((e) => e.reqId === id && e.msg === 'request');
  return typeof entry?.route === 'string' ? entry.route : '?';
}

// ---- the path corpus (test/fixtures/path-corpus.ts), each spelling under both hosts ----

/** Host 127.0.0.1 meets the route written `/admin`; SLASH_HOST the one written `/admin/`. */
const CORPUS_HOSTS = ['127.0.0.1', SLASH_HOST] as const;

interface Outcome {
  spelling: string;
  host: string;
  response: RawResponse;
}

async function tryCorpus(stack: StackName, corpus: readonly string[]): Promise<{ outcomes: Outcome[]; offending: string[] }> {
  const guard = guards.get(stack)!;
  const requests = corpus.flatMap((spelling) => CORPUS_HOSTS.map((host) => ({ spelling, host })));
  const outcomes = await mapLimited(requests, 8, async ({ spelling, host }) => ({ spelling, host, response: await send(guard.started.port, rawGet(spelling, attacker, { host })) }));
  if (VERBOSE) {
    for (const { spelling, host, response } of outcomes) {
      console.log(`${stack}\t${host}\t${JSON.stringify(spelling)}\t${response.status}\t${response.answer ? `${response.answer.handler} ${JSON.stringify(response.answer.path)}` : response.body.slice(0, 60)}`);
    }
  }
  const offending = outcomes
    .filter(({ response }) => response.status === 200 && response.answer?.handler === 'admin')
    .map(({ spelling, host, response }) => `${JSON.stringify(spelling)} (Host ${host}) -> 200 from the admin handler (${stack} path ${JSON.stringify(response.answer!.path)}; cnfguard route ${routeOf(guard, response)})`);
  return { outcomes, offending };
}

// ---- headers ----

const EXPECTED_IDENTITY: UpstreamAnswer['identity'] = { subject: null, clientId: 'plain-app', scope: 'read', thumbprint: null, clientCert: null };

/** Forged copies of the identity headers, one set per spelling of their names. */
const FORGED_IDENTITY: Record<string, [string, string][]> = {
  plain: [
    ['x-auth-subject', 'forged-subject'],
    ['x-auth-client-id', 'forged-client'],
    ['x-auth-scope', 'admin'],
    ['x-auth-cert-thumbprint', 'forged-thumbprint'],
    ['x-forwarded-client-cert', 'Hash=forged'],
  ],
  underscores: [
    ['x_auth_subject', 'forged-subject'],
    ['x_auth_client_id', 'forged-client'],
    ['x_auth_scope', 'admin'],
    ['x_auth_cert_thumbprint', 'forged-thumbprint'],
    ['x_forwarded_client_cert', 'Hash=forged'],
  ],
  'upper-case underscores': [
    ['X_AUTH_SUBJECT', 'forged-subject'],
    ['X_AUTH_CLIENT_ID', 'forged-client'],
    ['X_AUTH_SCOPE', 'admin'],
    ['X_AUTH_CERT_THUMBPRINT', 'forged-thumbprint'],
    ['X_FORWARDED_CLIENT_CERT', 'Hash=forged'],
  ],
  'mixed - and _': [
    ['X-Auth_Subject', 'forged-subject'],
    ['X_Auth-Client_Id', 'forged-client'],
    ['x-auth_scope', 'admin'],
    ['X-Auth-Cert_Thumbprint', 'forged-thumbprint'],
    ['X_Forwarded-Client_Cert', 'Hash=forged'],
  ],
};

/** Client-sent forwarding headers, one spelling per request; none may reach the upstream as sent. */
const FORGED_FORWARDING: [string, string][] = [
  ['X-Forwarded-For', '6.6.6.6'],
  ['x_forwarded_for', '6.6.6.6'],
  ['Forwarded', 'for=6.6.6.6;host=admin.example;proto=https'],
  ['X-Real-IP', '6.6.6.6'],
  ['x_real_ip', '6.6.6.6'],
  ['X-Original-URL', '/admin/users'],
  ['x_original_url', '/admin/users'],
  ['X-Rewrite-URL', '/admin/users'],
  ['x_rewrite_url', '/admin/users'],
];

/** What the upstream may see for each forwarding header: the peer only for XFF, nothing for the others. */
function forwardingProblems(forwarding: UpstreamAnswer['forwarding']): string[] {
  const problems: string[] = [];
  if (forwarding.xForwardedFor !== '127.0.0.1') problems.push(`xForwardedFor=${JSON.stringify(forwarding.xForwardedFor)} (want the peer only, "127.0.0.1")`);
  for (const key of ['forwarded', 'xRealIp', 'xOriginalUrl', 'xRewriteUrl'] as const) {
    if (forwarding[key] !== null) problems.push(`${key}=${JSON.stringify(forwarding[key])}`);
  }
  return problems;
}

/** Ways to make cnfguard judge by one Host while the upstream is told X-Forwarded-Host: admin.example. */
const HOST_SPELLINGS: Record<string, Parameters<typeof rawGet>[2]> = {
  'Host public.example + X-Forwarded-Host': { host: 'public.example', headers: [['X-Forwarded-Host', PROTECTED_HOST]] },
  'Connection: host + X-Forwarded-Host': { host: 'public.example', headers: [['Connection', 'host, close'], ['X-Forwarded-Host', PROTECTED_HOST]] },
  'Connection: x-forwarded-host + X-Forwarded-Host': { host: 'public.example', headers: [['Connection', 'x-forwarded-host, close'], ['X-Forwarded-Host', PROTECTED_HOST]] },
  'HTTP/1.0 without Host + X-Forwarded-Host': { version: '1.0', host: null, headers: [['X-Forwarded-Host', PROTECTED_HOST]] },
  'HTTP/1.0 without Host + x_forwarded_host': { version: '1.0', host: null, headers: [['x_forwarded_host', PROTECTED_HOST]] },
  'Host public.example + x_forwarded_host': { host: 'public.example', headers: [['x_forwarded_host', PROTECTED_HOST]] },
  'Connection: host + Forwarded host=': { host: 'public.example', headers: [['Connection', 'host, close'], ['Forwarded', `host=${PROTECTED_HOST}`]] },
};

// ---- the tests, per stack ----

for (const stack of STACK_NAMES) {
  const skipNote = absent[stack] === undefined ? '' : ` [SKIPPED: ${absent[stack]}; run scripts/install-test-deps.sh as root]`;
  describe.skipIf(absent[stack] !== undefined)(`${stack} behind cnfguard${skipNote}`, () => {
    const port = () => guards.get(stack)!.started.port;

    it('controls: the admin handler answers an admin token on its certificate; the attacker reaches public, not admin', async () => {
      const allowed = await send(port(), rawGet('/admin/users', admin), d.pki.certs.clients.client1);
      expect(allowed.status).toBe(200);
      expect(allowed.answer).toMatchObject({ handler: 'admin', path: '/admin/users' });
      const publicAnswer = await send(port(), rawGet('/public/x', attacker));
      expect(publicAnswer.status).toBe(200);
      expect(publicAnswer.answer).toMatchObject({ handler: 'public', identity: EXPECTED_IDENTITY });
      const refused = await send(port(), rawGet('/admin/users', attacker));
      expect([401, 403]).toContain(refused.status);
      expect(refused.answer).toBeUndefined();
    });

    it('no spelling of /admin in the hand-written corpus reaches the admin handler with the attacker token', async () => {
      const { outcomes, offending } = await tryCorpus(stack, HAND_CORPUS);
      // The canonical spellings are refused by cnfguard itself (the corpus run is not vacuous).
      const canonical = outcomes.filter((o) => o.spelling === '/admin/users' || o.spelling === '/admin');
      expect(canonical).toHaveLength(2 * CORPUS_HOSTS.length);
      for (const { response } of canonical) expect([401, 403]).toContain(response.status);
      if (offending.length > 0) console.log(`${stack}: ${offending.length} hand-written spellings reach the admin handler:\n  ${offending.join('\n  ')}`);
      expect(offending).toEqual([]);
    });

    it(`no generated spelling of /admin (fast-check, seed ${SEED}, ${GENERATED_RUNS} runs) reaches the admin handler with the attacker token`, async () => {
      const corpus = generatedCorpus(GENERATED_RUNS, SEED);
      expect(corpus.length).toBeGreaterThan(GENERATED_RUNS / 2);
      const { offending } = await tryCorpus(stack, corpus);
      if (offending.length > 0) console.log(`${stack}: ${offending.length} generated spellings reach the admin handler:\n  ${offending.join('\n  ')}`);
      expect(offending).toEqual([]);
    });

    it('forged identity headers (plain, with underscores, mixed) are never what the upstream reads as identity', async () => {
      const offending: string[] = [];
      for (const [variant, headers] of Object.entries(FORGED_IDENTITY)) {
        const response = await send(port(), rawGet('/public/whoami', attacker, { headers }));
        if (response.status !== 200 || response.answer === undefined) {
          offending.push(`${variant}: no upstream answer (status ${response.status})`);
          continue;
        }
        const identity = response.answer.identity;
        for (const key of Object.keys(EXPECTED_IDENTITY) as (keyof UpstreamAnswer['identity'])[]) {
          if (identity[key] !== EXPECTED_IDENTITY[key]) offending.push(`${variant}: ${key}=${JSON.stringify(identity[key])} (want ${JSON.stringify(EXPECTED_IDENTITY[key])})`);
        }
      }
      if (offending.length > 0) console.log(`${stack}: forged identity believed:\n  ${offending.join('\n  ')}`);
      expect(offending).toEqual([]);
    });

    it('client-sent forwarding headers never reach the upstream: X-Forwarded-For is the peer only; Forwarded, X-Real-IP, X-Original-URL, X-Rewrite-URL are gone', async () => {
      const offending: string[] = [];
      const clean = await send(port(), rawGet('/public/x', attacker));
      expect(clean.answer?.forwarding).toMatchObject({ xForwardedFor: '127.0.0.1', forwarded: null, xRealIp: null, xOriginalUrl: null, xRewriteUrl: null });
      for (const header of FORGED_FORWARDING) {
        const response = await send(port(), rawGet('/public/x', attacker, { headers: [header] }));
        if (response.answer === undefined) {
          offending.push(`${header[0]}: no upstream answer (status ${response.status})`);
          continue;
        }
        for (const problem of forwardingProblems(response.answer.forwarding)) offending.push(`${header[0]}: ${problem}`);
      }
      if (offending.length > 0) console.log(`${stack}: forwarding headers passed on:\n  ${offending.join('\n  ')}`);
      expect(offending).toEqual([]);
    });

    it(`X-Forwarded-Host never names the protected vhost ${PROTECTED_HOST} when cnfguard judged the request by another route`, async () => {
      // Controls: the protected vhost refuses the attacker and forwards the admin token with its own name.
      expect([401, 403]).toContain((await send(port(), rawGet('/x', attacker, { host: PROTECTED_HOST }))).status);
      const vhost = await send(port(), rawGet('/x', admin, { host: PROTECTED_HOST }), d.pki.certs.clients.client1);
      expect(vhost.status).toBe(200);
      expect(vhost.answer?.forwarding.xForwardedHost).toBe(PROTECTED_HOST);
      const offending: string[] = [];
      for (const [name, options] of Object.entries(HOST_SPELLINGS)) {
        const response = await send(port(), rawGet('/x', attacker, options));
        const seen = response.answer?.forwarding;
        if (response.status === 200 && (seen?.xForwardedHost?.toLowerCase().includes(PROTECTED_HOST) || seen?.forwarded?.toLowerCase().includes(PROTECTED_HOST))) {
          offending.push(`${name}: upstream saw X-Forwarded-Host=${JSON.stringify(seen.xForwardedHost)} Forwarded=${JSON.stringify(seen.forwarded)} (cnfguard route ${routeOf(guards.get(stack)!, response)})`);
        }
      }
      if (offending.length > 0) console.log(`${stack}: protected vhost named to the upstream:\n  ${offending.join('\n  ')}`);
      expect(offending).toEqual([]);
    });
  });
}
