/**
 * Differential tests against real upstream stacks (Express 5, gunicorn 20, Jetty 9): what cnfguard
 * judged a request to be must be what the upstream dispatches it as. cnfguard runs in the README's
 * rollout shape (default route `binding: off`, `/admin` required with scope admin, a required host
 * route for `admin.example`), one guard per stack. The client is a raw TLS socket, so the exact
 * bytes of every spelling arrive (curl and undici normalise paths and headers).
 *
 * The attacker holds a valid token without the admin scope and no certificate: it must never get a
 * 200 from an admin handler, never have a forged identity or forwarding header believed, and never
 * make the upstream see the protected vhost in X-Forwarded-Host. Each test collects every
 * offending spelling per stack and asserts the list is empty, so a failure shows all of them.
 */
import { once } from 'node:events';
import tls from 'node:tls';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PemPair } from '../../src/tls/dev-certs.ts';
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
          routes: [
            { host: PROTECTED_HOST, binding: 'required' },
            { pathPrefix: '/admin', binding: 'required', scopes: ['admin'] },
          ],
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

interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
  /** The upstream's answer, when the body is one. */
  answer: UpstreamAnswer | undefined;
}

function dechunk(body: Buffer): Buffer {
  const out: Buffer[] = [];
  let at = 0;
  for (;;) {
    const lineEnd = body.indexOf('\r\n', at);
    if (lineEnd === -1) break;
    const size = parseInt(body.subarray(at, lineEnd).toString('latin1'), 16);
    if (!(size > 0)) break;
    out.push(body.subarray(lineEnd + 2, lineEnd + 2 + size));
    at = lineEnd + 2 + size + 2;
  }
  return Buffer.concat(out);
}

function parseResponse(raw: Buffer): RawResponse {
  const end = raw.indexOf('\r\n\r\n');
  const head = (end === -1 ? raw : raw.subarray(0, end)).toString('latin1').split('\r\n');
  const headers: Record<string, string> = {};
  for (const line of head.slice(1)) {
    const colon = line.indexOf(':');
    if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  let bodyBytes = end === -1 ? Buffer.alloc(0) : raw.subarray(end + 4);
  if (/chunked/i.test(headers['transfer-encoding'] ?? '')) bodyBytes = dechunk(bodyBytes);
  const body = bodyBytes.toString('utf8');
  let answer: UpstreamAnswer | undefined;
  try {
    const parsed = JSON.parse(body) as Partial<UpstreamAnswer>;
    if (parsed.handler === 'admin' || parsed.handler === 'public') answer = parsed as UpstreamAnswer;
  } catch {
    // not an upstream answer (a refusal from cnfguard, or an upstream's own error page)
  }
  return { status: Number(head[0]?.split(' ')[1]), headers, body, answer };
}

/** Sends `request` (exact bytes) on a fresh TLS connection and reads until the server closes. */
async function send(port: number, request: Buffer | string, client?: PemPair): Promise<RawResponse> {
  const socket = tls.connect({ host: '127.0.0.1', port, ca: d.pki.certs.ca.cert, ...(client && { cert: client.cert, key: client.key }) });
  await once(socket, 'secureConnect');
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  socket.on('error', () => {});
  socket.write(request);
  await Promise.race([once(socket, 'close'), new Promise((resolve) => setTimeout(resolve, 5000))]);
  socket.destroy();
  return parseResponse(Buffer.concat(chunks));
}

/** One GET with `Connection: close`; `host: null` leaves Host out. The target goes out as its UTF-8 bytes. */
function rawGet(target: string, token: string, options: { headers?: [string, string][]; version?: '1.0' | '1.1'; host?: string | null } = {}): Buffer {
  const host = options.host === undefined ? '127.0.0.1' : options.host;
  const lines = [`GET ${target} HTTP/${options.version ?? '1.1'}`];
  if (host !== null) lines.push(`Host: ${host}`);
  lines.push(`Authorization: Bearer ${token}`);
  for (const [name, value] of options.headers ?? []) lines.push(`${name}: ${value}`);
  if (!(options.headers ?? []).some(([name]) => name.toLowerCase() === 'connection')) lines.push('Connection: close');
  return Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'utf8');
}

/** Runs `work` over `items`, `limit` at a time, keeping order. */
async function mapLimited<T, R>(items: readonly T[], limit: number, work: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array<R>(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const index = next++;
        results[index] = await work(items[index]!);
      }
    }),
  );
  return results;
}

/** The route cnfguard logged for a request, by the x-request-id of its response. */
function routeOf(guard: Guard, response: RawResponse): string {
  const id = response.headers['x-request-id'];
  const entry = guard.logs.entries().find((e) => e.reqId === id && e.msg === 'request');
  return typeof entry?.route === 'string' ? entry.route : '?';
}

// ---- the path corpus ----

/** Spellings of /admin/users (and /admin) that some parser somewhere reads as the admin path. */
const HAND_CORPUS: readonly string[] = [
  // control: the canonical spelling must be refused
  '/admin/users',
  '/admin',
  // case
  '/ADMIN/users',
  '/Admin/users',
  '/aDmIn/users',
  '/ADMIN',
  // path parameters
  '/admin;x=1/users',
  '/admin;/users',
  '/admin;jsessionid=0123/users',
  '/admin;x=1',
  '/public/..;/admin/users',
  '/public;x=1/../admin/users',
  '/public/%2e%2e;/admin/users',
  // %2e dot segments
  '/public/%2e%2e/admin/users',
  '/public/%2E%2E/admin/users',
  '/public/.%2e/admin/users',
  '/%2e/admin/users',
  '/public/%2e%2e%2fadmin/users',
  // percent-encoded and double-encoded letters and dots
  '/%61dmin/users',
  '/%41DMIN/users',
  '/ad%6Din/users',
  '/%2561dmin/users',
  '/ad%256din/users',
  '/public/%252e%252e/admin/users',
  '/%252e/admin/users',
  '/public/%25%32%65%25%32%65/admin/users',
  // blanks and trailing dots
  '/admin%20/users',
  '/admin%20',
  '/admin./users',
  '/admin../users',
  '/admin%2e/users',
  '/admin.',
  // repeated slashes
  '//admin/users',
  '///admin/users',
  '/public//..//admin/users',
  // unicode and overlong UTF-8
  '/%C0%AE%C0%AE/admin',
  '/public/%C0%AE%C0%AE/admin/users',
  '/%C0%AFadmin/users',
  '/public/%E0%80%AE%E0%80%AE/admin/users',
  '/ａdmin/users',
  '/%EF%BD%81dmin/users',
  '/admın',
  '/adm%C4%B1n/users',
  '/%C4%B0admin/users',
  // backslashes and encoded slashes
  '/admin\\users',
  '/public\\..\\admin\\users',
  '/admin%5cusers',
  '/public/..%5cadmin/users',
  '/admin%2fusers',
  '/public/..%2fadmin/users',
  // tabs, NUL and other escapes
  '/admin%09/users',
  '/admin%09',
  '/%09admin/users',
  '/admin%00/users',
  '/admin%3b/users',
  '/admin%23/users',
  // fragment and query
  '/admin#x',
  '/admin?x=1',
];

const PREFIXES = ['/', '/public/..', '/public/%2e%2e', '/public/.%2e', '/public/%252e%252e', '/public/..;', '/public;x/..', '/.', '/%2e', '/%252e'];
const PARAMS = [';', ';x=1', ';jsessionid=abc', '%3b', '%3bx'];
const TRAILERS = ['.', '..', '%2e', '%252e', '%20', '%09'];
const RESTS = ['', '/', '/users;x', '/%2e/users', '/%252e/users'];

/** Usually `plain`, sometimes one of `others`: most spellings carry one or two changes, so each kind is tried alone too. */
const mostly = (plain: string, others: readonly string[]) =>
  fc.oneof({ arbitrary: fc.constant(plain), weight: 3 }, { arbitrary: fc.constantFrom(...others), weight: 2 });

/** One character of `admin`, spelled one of the ways a parser may fold back to it. */
const spelledChar = (c: string) => {
  const hex = c.charCodeAt(0).toString(16);
  return mostly(c, [c.toUpperCase(), c.toUpperCase(), `%${hex}`, `%${hex.toUpperCase()}`, `%${c.toUpperCase().charCodeAt(0).toString(16).toUpperCase()}`, `%25${hex}`]);
};

/**
 * Generated spellings: random case flips and percent-(double-)encodings of the letters, `;params`
 * and trailing dots or blanks after the segment, a dot-segment detour before it, and sometimes a
 * doubled slash or a rest of the path with a parameter or dot segment of its own.
 */
const generatedSpelling = fc
  .record({
    prefix: mostly('', PREFIXES),
    letters: fc.tuple(...[...'admin'].map(spelledChar)),
    params: mostly('', PARAMS),
    trailer: mostly('', TRAILERS),
    slash: mostly('/', ['//']),
    rest: mostly('/users', RESTS),
  })
  .map(({ prefix, letters, params, trailer, slash, rest }) => `${prefix}${slash}${letters.join('')}${params}${trailer}${rest}`);

function generatedCorpus(): string[] {
  const seen = new Set(HAND_CORPUS);
  return fc.sample(generatedSpelling, { numRuns: GENERATED_RUNS, seed: SEED }).filter((s) => !seen.has(s) && (seen.add(s), true));
}

interface Outcome {
  spelling: string;
  response: RawResponse;
}

async function tryCorpus(stack: StackName, corpus: readonly string[]): Promise<{ outcomes: Outcome[]; offending: string[] }> {
  const guard = guards.get(stack)!;
  const outcomes = await mapLimited(corpus, 8, async (spelling) => ({ spelling, response: await send(guard.started.port, rawGet(spelling, attacker)) }));
  if (VERBOSE) {
    for (const { spelling, response } of outcomes) {
      console.log(`${stack}\t${JSON.stringify(spelling)}\t${response.status}\t${response.answer ? `${response.answer.handler} ${JSON.stringify(response.answer.path)}` : response.body.slice(0, 60)}`);
    }
  }
  const offending = outcomes
    .filter(({ response }) => response.status === 200 && response.answer?.handler === 'admin')
    .map(({ spelling, response }) => `${JSON.stringify(spelling)} -> 200 from the admin handler (${stack} path ${JSON.stringify(response.answer!.path)}; cnfguard route ${routeOf(guard, response)})`);
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
      expect(canonical).toHaveLength(2);
      for (const { response } of canonical) expect([401, 403]).toContain(response.status);
      if (offending.length > 0) console.log(`${stack}: ${offending.length} hand-written spellings reach the admin handler:\n  ${offending.join('\n  ')}`);
      expect(offending).toEqual([]);
    });

    it(`no generated spelling of /admin (fast-check, seed ${SEED}, ${GENERATED_RUNS} runs) reaches the admin handler with the attacker token`, async () => {
      const corpus = generatedCorpus();
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
