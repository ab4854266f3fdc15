/**
 * Micro-benchmarks of the operations cnfguard's request path does per request, in ns per
 * operation, to put a price on each candidate of issue 7 item 2. At 10k requests/s one core has
 * 100 µs per request, so 1 µs per request is 1% of the budget.
 *
 *   node bench/micro.ts [--json OUT.json]
 *
 * Each case runs for ~150 ms after a warm-up, 5 times; the median is reported. Pinned or not, the
 * figures are noisy when other work runs on the machine (the load average is printed).
 */
import { createHash, generateKeyPairSync, hash, randomUUID, timingSafeEqual } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { Counter, Histogram, Registry } from 'prom-client';
import { createAssertionIssuer } from '../src/assertion/issuer.ts';
import { assertionKeyFrom, createAssertionKeyRing } from '../src/assertion/keys.ts';
import { INACTIVE } from '../src/introspection/token-info.ts';
import { createLogger } from '../src/log.ts';
import { loadAverage } from './lib/machine.ts';
import { median, table } from './lib/table.ts';

interface Case {
  name: string;
  /** What it stands for in cnfguard's request path. */
  where: string;
  fn: () => unknown;
}

let sink: unknown;

function measure(fn: () => unknown): number {
  for (let i = 0; i < 20_000; i++) sink = fn();
  const runs: number[] = [];
  for (let r = 0; r < 5; r++) {
    let n = 0;
    const started = performance.now();
    let now = started;
    while (now - started < 150) {
      for (let i = 0; i < 500; i++) sink = fn();
      n += 500;
      now = performance.now();
    }
    runs.push(((now - started) * 1e6) / n);
  }
  return median(runs);
}

const token = 'Hk3xq0V2Qn9Jt3bXc7mWw1yZ8pLr4sTu6vAe5dGf0hI';
const headers = (): Record<string, string | undefined> => ({
  host: 'localhost:8443',
  connection: 'keep-alive',
  authorization: `Bearer ${token}`,
  accept: '*/*',
  'user-agent': 'bench',
  'x-forwarded-for': '10.0.0.1',
});
const HOP_BY_HOP = ['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'proxy-authorization', 'expect'];
const MANAGED = ['x-auth-subject', 'x-auth-client-id', 'x-auth-scope', 'x-auth-cert-thumbprint', 'x-forwarded-client-cert'];

const registry = new Registry();
const requests = new Counter({ name: 'requests_total', help: 'h', labelNames: ['decision', 'reason', 'route'] as const, registers: [registry] });
const bound = requests.labels({ decision: 'allow', reason: 'bound', route: 'default' });
const upstream = new Histogram({ name: 'upstream_seconds', help: 'h', labelNames: ['route'] as const, buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30], registers: [registry] });
const boundHistogram = upstream.labels({ route: 'default' });
const plainCounter = new Counter({ name: 'hits_total', help: 'h', registers: [registry] });

// Serialization alone (a destination that drops the line), and with the write(2) to /dev/null that a
// synchronous destination makes per line (cnfguard's is asynchronous: sonic-boom batches its writes).
const discard = { write: (_line: string) => {} };
const devNull = pino.destination({ dest: '/dev/null', sync: true });
const infoLogger = createLogger('info', discard);
const infoLoggerWriting = createLogger('info', devNull);
const plainLogger = pino({ level: 'info', base: null, timestamp: pino.stdTimeFunctions.epochTime }, discard);
const warnLogger = createLogger('warn', discard);
const entry = () => ({
  reqId: randomUUID(),
  method: 'GET',
  path: '/bench',
  status: 200,
  decision: 'allow',
  reason: 'bound',
  route: 'default',
  clientId: 'app',
  thumbprint: 'Hk3xq0V2Qn9Jt3bXc7mWw1yZ8pLr4sTu6vAe5dGf0hI',
  latencyMs: 1.23,
});

const upstreamUrl = 'http://127.0.0.1:40000';
const thumb = Buffer.from(token);
const thumbCopy = Buffer.from(token);
let counter = 0;

// Issue 29: the signed assertion on a cache hit (reused) and when it is signed (every half lifetime per token and route).
let clock = Date.now();
const assertionKeys = createAssertionKeyRing(() => clock);
assertionKeys.use(assertionKeyFrom(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, 'ES256'), 60);
const assertions = createAssertionIssuer({ ring: assertionKeys, issuer: 'https://cnfguard.bench', header: 'x-auth-assertion', now: () => clock });
const assertedToken = { ...INACTIVE, active: true, subject: 'alice', clientId: 'app', scope: 'read', exp: 4e9, cnf: { 'x5t#S256': token } };
const assertedRoute = { id: 'default', assertion: { audience: upstreamUrl, lifetimeSeconds: 60 } };
const identity = { 'x-auth-subject': 'alice', 'x-auth-client-id': 'app', 'x-auth-scope': 'read', 'x-auth-binding': 'bound' };

const cases: Case[] = [
  { name: 'randomUUID()', where: 'x-request-id per request', fn: () => randomUUID() },
  { name: 'counter as request id', where: 'alternative: process prefix + counter', fn: () => `r${(counter++).toString(36)}` },
  { name: 'sha256(token) base64url', where: 'token cache key per request (tokenCacheKey)', fn: () => createHash('sha256').update(token).digest('base64url') },
  { name: 'crypto.hash(sha256, token)', where: 'alternative: one-shot hash (Node >= 21.7), base64url', fn: () => hash('sha256', token, 'base64url') },
  { name: 'Map.get(token)', where: 'alternative: raw-token-keyed fast path (security trade-off)', fn: () => new Map([[token, 1]]).get(token) },
  { name: 'timingSafeEqual(Buffer.from x2)', where: 'thumbprint comparison with fresh Buffers', fn: () => timingSafeEqual(Buffer.from(token), Buffer.from(token)) },
  { name: 'timingSafeEqual(prebuilt)', where: 'thumbprint comparison, Buffers kept per connection / cache entry', fn: () => timingSafeEqual(thumb, thumbCopy) },
  { name: 'counter.inc({3 labels})', where: 'cnfguard_requests_total per request', fn: () => requests.inc({ decision: 'allow', reason: 'bound', route: 'default' }) },
  { name: 'bound counter .inc()', where: 'pre-bound label set', fn: () => bound.inc() },
  { name: 'counter.inc() no labels', where: 'cache hits per request', fn: () => plainCounter.inc() },
  { name: 'histogram.observe({route})', where: 'upstream duration per request', fn: () => upstream.observe({ route: 'default' }, 0.0012) },
  { name: 'bound histogram .observe()', where: 'pre-bound label set', fn: () => boundHistogram.observe(0.0012) },
  { name: 'pino info, createLogger config', where: 'access log line per request (isoTime, redact), serialization only', fn: () => infoLogger.info(entry(), 'request') },
  { name: 'same + write(2) to /dev/null', where: 'one synchronous write per line', fn: () => infoLoggerWriting.info(entry(), 'request') },
  { name: 'pino info, no redact, epoch time', where: 'leaner logger config, same line, serialization only', fn: () => plainLogger.info(entry(), 'request') },
  { name: 'pino info below level (warn)', where: 'logLevel warn: the call and the entry object only', fn: () => warnLogger.info(entry(), 'request') },
  { name: 'access-log entry object only', where: 'building the fields even when not logged', fn: () => entry() },
  { name: 'new URL(upstream + path)', where: 'http-proxy-3 parses the target per request', fn: () => new URL('/bench?x=1', upstreamUrl) },
  { name: 'delete 9 hop-by-hop + 5 managed', where: 'removeHopByHop + stripManagedHeaders on req.headers', fn: () => {
      const h = headers();
      for (const name of HOP_BY_HOP) delete h[name];
      for (const name of MANAGED) delete h[name];
      return h;
    } },
  { name: 'check-then-delete (has before delete)', where: 'alternative: delete only present names', fn: () => {
      const h = headers();
      for (const name of HOP_BY_HOP) if (h[name] !== undefined) delete h[name];
      for (const name of MANAGED) if (h[name] !== undefined) delete h[name];
      return h;
    } },
  { name: '{...headers} copy', where: 'copying a header object', fn: () => ({ ...headers() }) },
  { name: 'headers() literal (baseline)', where: 'the object the two cases above start from', fn: () => headers() },
  { name: 'performance.now()', where: '3 per request', fn: () => performance.now() },
  { name: 'assertion reused + header spread', where: 'assertion on, a cached token: the per-request cost (issue 29)', fn: () => ({ ...identity, 'x-auth-assertion': assertions.issue(assertedToken, assertedRoute, ['mtls']) }) },
  { name: 'assertion signed (ES256)', where: 'once per token and route every half lifetime', fn: () => ((clock += 31_000), assertions.issue(assertedToken, assertedRoute, ['mtls'])) },
];

const { values } = parseArgs({ options: { json: { type: 'string' } } });
process.stdout.write(`micro-benchmarks, Node ${process.version}, load average ${loadAverage().join(' ')} (noisy when it is high)\n`);
const results = cases.map((c) => ({ name: c.name, where: c.where, ns: Math.round(measure(c.fn)) }));
process.stdout.write(`${table(['operation', 'ns/op', 'stands for'], results.map((r) => [r.name, r.ns, r.where]))}\n`);
if (sink === Symbol.for('never')) process.stdout.write('');
if (values.json !== undefined) writeFileSync(values.json, `${JSON.stringify({ node: process.version, loadavg: loadAverage(), results }, null, 2)}\n`);
