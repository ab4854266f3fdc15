/**
 * The h2 path's own per-request steps, this checkout against another, in one process (issue 32):
 * reading an HTTP/2 GET's facts (edge/http-facts.ts requestFacts) and dropping the upstream
 * answer's hop-by-hop fields before Node walks the header object. The h2 phase of bench/run.ts
 * cannot resolve differences this small on a shared machine (its rounds swing +-30%); CPU time of
 * one process running both, rounds alternating, can.
 *
 *   node bench/h2-micro.ts [--baseline DIR] [--rounds 7]
 */
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { median, table } from './lib/table.ts';

const { values } = parseArgs({ options: { baseline: { type: 'string' }, rounds: { type: 'string', default: '7' } } });
const ROOT = fileURLToPath(new URL('..', import.meta.url));

type Facts = (req: unknown, certificates: unknown, connection: unknown) => unknown;
type Headers = Record<string, string | string[] | undefined>;

/** The two steps as a checkout has them (before this branch: removeHopByHop, deleting in place). */
async function stepsOf(dir: string): Promise<{ facts: Facts; hopByHop: (h: Headers) => Headers }> {
  const facts = (await import(join(dir, 'src/edge/http-facts.ts'))) as { requestFacts: Facts };
  const common = (await import(join(dir, 'src/proxy/forward-common.ts'))) as { withoutHopByHop?: (h: Headers) => Headers; removeHopByHop?: (h: Headers) => void };
  const { withoutHopByHop, removeHopByHop } = common;
  const hopByHop =
    withoutHopByHop ??
    ((h: Headers) => {
      removeHopByHop?.(h);
      return h;
    });
  return { facts: facts.requestFacts, hopByHop };
}

// An h2 GET as the compatibility API gives it: pseudo-headers and a bearer token.
const raw = [':method', 'GET', ':path', '/bench', ':scheme', 'https', ':authority', '127.0.0.1:8443', 'authorization', `Bearer ${'x'.repeat(700)}`];
const socket = { remoteAddress: '127.0.0.1', encrypted: true };
const connection = { peer: '127.0.0.1', tls: socket, counting: undefined };
const request = () => {
  const headers: Record<string, string> = {};
  for (let i = 0; i < raw.length; i += 2) headers[raw[i] as string] = raw[i + 1] as string;
  return { httpVersionMajor: 2, method: 'GET', url: '/bench', headers, rawHeaders: raw, stream: { endAfterHeaders: true } };
};
// The certificate source without trusted proxies, reading the connection as client-cert.ts does.
const certificate = { thumbprint: 't' };
const certificates = {
  certificateOf: ({ socket: s, headersDistinct }: { socket: unknown; headersDistinct: unknown }) => (s !== undefined && headersDistinct !== undefined ? certificate : undefined),
  certificateHeaderOf: () => undefined,
  isTrustedProxy: () => false,
};
// A Node HTTP/1.1 upstream's answer as undici parses it.
const answer = (): Headers => ({ 'content-type': 'text/plain', 'content-length': '2', date: 'Mon, 07 Dec 2026 08:00:00 GMT', connection: 'keep-alive', 'keep-alive': 'timeout=5' });
// What Node's compatibility writeHead does next: walks the object's keys and values.
const walk = (h: Headers): number => {
  let n = 0;
  for (const name of Object.keys(h)) n += name.length + String(h[name]).length;
  return n;
};

const sides = [{ name: 'this checkout', steps: await stepsOf(ROOT) }, ...(values.baseline === undefined ? [] : [{ name: values.baseline, steps: await stepsOf(values.baseline) }])];
const cases = sides.flatMap(({ name, steps }) => [
  { step: 'requestFacts (h2 GET)', side: name, fn: () => steps.facts(request(), certificates, connection) },
  { step: 'hop-by-hop fields, then walked', side: name, fn: () => walk(steps.hopByHop(answer())) },
]);
const N = 200_000;
const ns = new Map<(typeof cases)[number], number[]>();
let sink = 0;
for (let round = 0; round <= Number(values.rounds); round++) {
  for (const c of cases) {
    const before = process.cpuUsage();
    for (let i = 0; i < N; i++) sink += c.fn() === undefined ? 0 : 1;
    const used = process.cpuUsage(before);
    // Round 0 warms up (V8 optimizes each case) and is not counted.
    if (round > 0) ns.set(c, [...(ns.get(c) ?? []), ((used.user + used.system) * 1000) / N]);
  }
}
process.stdout.write(`${table(['step', 'checkout', 'ns/call (median)', 'rounds'], cases.map((c) => [c.step, c.side, Math.round(median(ns.get(c) ?? [])), (ns.get(c) ?? []).map(Math.round).join(' ')]))}\n`);
if (sink === 0) process.stdout.write('\n');
