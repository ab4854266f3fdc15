/**
 * Micro-benchmark of the access line at the default logLevel (issue 12): the hand-built line
 * against pino serialising the same fields, both with the request counter, to /dev/null.
 *   node bench/access-line.ts [--destination sonic]
 */
import { openSync } from 'node:fs';
import { batchedDestination, createLogger } from '../src/log.ts';
import { createMetrics } from '../src/admin/metrics.ts';
import { createAccessLog, outcomeOf, entryOf } from '../src/observe/access-log.ts';
import { configSchema } from '../src/config/schema.ts';
import { compileRoutes } from '../src/pipeline/route.ts';
import pino from 'pino';
import type { Verdict } from '../src/pipeline/pipeline.ts';
const route = compileRoutes(configSchema.parse({ tls: { cert: '/x', key: '/y' }, introspection: { url: 'https://as/i', clientId: 'a', clientSecret: 'b' }, upstream: 'http://127.0.0.1:1' })).fallback;
const verdict = { route, decision: { allow: true, reason: 'bound', identity: { subject: 'alice', clientId: 'app', scope: 'read', certificate: undefined, claims: {} } }, target: '/x', host: 'h', body: { kind: 'as-received' }, closeConnection: false } as unknown as Verdict;
// The server's own destination (batched in one string, handed to sonic-boom 32 KiB at a time):
// `--destination sonic` measures sonic-boom alone with 4 KiB batches, the destination before issue 32.
const sonicAlone = process.argv.includes('--destination') && process.argv[process.argv.indexOf('--destination') + 1] === 'sonic';
const dest = sonicAlone ? pino.destination({ dest: '/dev/null', sync: false, minLength: 4096 }) : batchedDestination(openSync('/dev/null', 'w'));
console.log(`destination: ${sonicAlone ? 'sonic-boom alone, 4 KiB batches (before issue 32)' : 'the server\'s (src/log.ts batchedDestination)'}; lines written in bursts of 32 per event-loop turn, as a busy server does`);
const logger = createLogger('info', dest);
const metrics = createMetrics({ defaultMetrics: false });
const log = createAccessLog(logger, metrics);
const req = () => ({ requestId: crypto.randomUUID(), method: 'GET', path: '/api/items', status: 200, verdict, failure: undefined, upstreamStatus: 200, thumbprint: 'JdMdWAffsPsm-X-KaooBRapvKLJ940l2LnKH-2gR__Q', latencyMs: 1.23 });
const N = 100_000;
/** CPU (all threads: the writes run on libuv's pool) per line, in bursts of 32 lines per event-loop turn; median of 5. */
async function run(name: string, fn: () => void): Promise<number> {
  const times: number[] = [];
  for (let r = 0; r < 5; r++) {
    const before = process.cpuUsage();
    for (let i = 0; i < N; i += 32) {
      for (let k = 0; k < 32; k++) fn();
      await new Promise(setImmediate);
    }
    const used = process.cpuUsage(before);
    times.push((used.user + used.system) / N);
  }
  times.sort((a, b) => a - b);
  const median = times[2] ?? 0;
  console.log(name, 'median CPU µs/line', median.toFixed(3));
  return median;
}
const ours = await run('hand-built line + count', () => log.record(req()));
const pinoLine = await run('pino serializer + count ', () => { const r = req(); const o = outcomeOf(r); metrics.requestTally.inc(o.decision, o.reason, o.route); logger.info(Object.fromEntries(entryOf(r, o).filter(([, v]) => v !== undefined)), 'request'); });
console.log('ratio pino/ours', (pinoLine / ours).toFixed(2));
const counting = await run('count only             ', () => {
  const r = req();
  const o = outcomeOf(r);
  metrics.requestTally.inc(o.decision, o.reason, o.route);
});
console.log(`line cost alone: hand-built ${(ours - counting).toFixed(3)} µs, pino ${(pinoLine - counting).toFixed(3)} µs`);
