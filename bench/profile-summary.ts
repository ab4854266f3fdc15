/**
 * Summarizes a V8 .cpuprofile (from `node --cpu-prof`): where the time went, by function (self
 * time), by package / Node subsystem (self time), and which cnfguard functions cost the most
 * including what they call (inclusive time; async continuations count under whoever resumed them).
 *
 *   node bench/profile-summary.ts FILE.cpuprofile [--top 30] [--requests N] [--json OUT.json]
 *
 * With --requests (how many the process served while profiled), costs are also given in µs per request.
 *
 * Inlined functions are charged to the function they were inlined into, as V8 samples them.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { relative } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}

export interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface Row {
  name: string;
  ms: number;
  /** Share of the busy (non-idle) time. */
  pct: number;
  /** Microseconds per request served, when the number of requests is known. */
  usPerRequest?: number;
}

export interface ProfileSummary {
  totalMs: number;
  idleMs: number;
  busyMs: number;
  samples: number;
  /** Requests served while profiled (when given), and busy CPU µs per request. */
  requests?: number;
  busyUsPerRequest?: number;
  topSelf: (Row & { category: string })[];
  categories: Row[];
  cnfguardInclusive: Row[];
}

const ROOT = fileURLToPath(new URL('..', import.meta.url));

function shortUrl(url: string): string {
  if (url === '') return '';
  if (url.startsWith('node:')) return url;
  const path = url.startsWith('file://') ? fileURLToPath(url) : url;
  const nm = path.lastIndexOf('/node_modules/');
  if (nm !== -1) return path.slice(nm + '/node_modules/'.length);
  return path.startsWith(ROOT) ? relative(ROOT, path) : path;
}

/** Which package or subsystem a frame belongs to. */
export function categoryOf(frame: CallFrame): string {
  const { functionName, url } = frame;
  if (url === '') {
    if (functionName === '(garbage collector)') return 'GC';
    if (functionName === '(program)') return '(program: native, not attributed to JS)';
    if (functionName === '(idle)') return '(idle)';
    if (functionName === '(root)') return '(root)';
    return 'native (C++ bindings called from JS)';
  }
  const short = shortUrl(url);
  if (short.startsWith('node:')) {
    const mod = short.slice(5).replace(/^internal\//, '');
    if (/^(_http|http)/.test(mod)) return 'node: http';
    if (/^(_tls|tls|crypto)/.test(mod)) return 'node: tls/crypto';
    if (/^(streams?|_stream)/.test(mod)) return 'node: streams';
    if (/^(net|stream_base_commons|dns)/.test(mod)) return 'node: net';
    if (/^(timers|process\/task_queues|async_hooks|event_target|events)/.test(mod) || mod === 'events') return 'node: events/timers/microtasks';
    if (/^(url|querystring|buffer|util|validators|errors)/.test(mod)) return 'node: util/url/buffer';
    return `node: ${mod.split('/')[0]}`;
  }
  const nm = url.lastIndexOf('/node_modules/');
  if (nm !== -1) {
    const rest = url.slice(nm + '/node_modules/'.length).split('/');
    return rest[0]?.startsWith('@') === true ? `${rest[0]}/${rest[1]}` : (rest[0] ?? 'node_modules');
  }
  const local = shortUrl(url);
  if (local.startsWith('src/')) return `cnfguard ${local.split('/').slice(0, 2).join('/')}`;
  return local;
}

function frameKey(frame: CallFrame): string {
  const where = shortUrl(frame.url);
  const name = frame.functionName === '' ? '(anonymous)' : frame.functionName;
  return where === '' ? name : `${name}  ${where}:${frame.lineNumber + 1}`;
}

export function summarizeProfile(profile: CpuProfile, options: { top?: number; requests?: number } = {}): ProfileSummary {
  const top = options.top ?? 30;
  const byId = new Map<number, ProfileNode>();
  const parent = new Map<number, number>();
  for (const node of profile.nodes) {
    byId.set(node.id, node);
    for (const child of node.children ?? []) parent.set(child, node.id);
  }
  const self = new Map<string, { ms: number; category: string }>();
  const categories = new Map<string, number>();
  const inclusive = new Map<string, number>();
  let totalUs = 0;
  let idleUs = 0;
  const { samples, timeDeltas } = profile;
  for (let i = 0; i < samples.length; i++) {
    // timeDeltas[i] is the time before sample i was taken; charge sample i with the interval after it.
    const us = Math.max(0, timeDeltas[i + 1] ?? timeDeltas[i] ?? 0);
    const node = byId.get(samples[i] as number);
    if (node === undefined) continue;
    totalUs += us;
    const category = categoryOf(node.callFrame);
    if (category === '(idle)') {
      idleUs += us;
      continue;
    }
    const key = frameKey(node.callFrame);
    const entry = self.get(key) ?? { ms: 0, category };
    entry.ms += us / 1000;
    self.set(key, entry);
    categories.set(category, (categories.get(category) ?? 0) + us / 1000);
    // Inclusive time of cnfguard's own functions: each function once per sample, however deep.
    const seen = new Set<string>();
    for (let id: number | undefined = node.id; id !== undefined; id = parent.get(id)) {
      const frame = (byId.get(id) as ProfileNode).callFrame;
      if (!shortUrl(frame.url).startsWith('src/')) continue;
      const k = frameKey(frame);
      if (seen.has(k)) continue;
      seen.add(k);
      inclusive.set(k, (inclusive.get(k) ?? 0) + us / 1000);
    }
  }
  const busyMs = (totalUs - idleUs) / 1000;
  const requests = options.requests;
  const row = (name: string, ms: number): Row => ({
    name,
    ms: Math.round(ms * 10) / 10,
    pct: busyMs > 0 ? Math.round((ms / busyMs) * 1000) / 10 : 0,
    ...(requests !== undefined && requests > 0 && { usPerRequest: Math.round(((ms * 1000) / requests) * 10) / 10 }),
  });
  return {
    totalMs: Math.round(totalUs / 1000),
    idleMs: Math.round(idleUs / 1000),
    busyMs: Math.round(busyMs),
    samples: samples.length,
    ...(requests !== undefined && requests > 0 && { requests, busyUsPerRequest: Math.round(((busyMs * 1000) / requests) * 10) / 10 }),
    topSelf: [...self.entries()]
      .sort((a, b) => b[1].ms - a[1].ms)
      .slice(0, top)
      .map(([name, { ms, category }]) => ({ ...row(name, ms), category })),
    categories: [...categories.entries()].sort((a, b) => b[1] - a[1]).map(([name, ms]) => row(name, ms)),
    cnfguardInclusive: [...inclusive.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([name, ms]) => row(name, ms)),
  };
}

export function formatSummary(summary: ProfileSummary, title = 'CPU profile'): string {
  const lines: string[] = [];
  const pad = (s: string, n: number) => (s.length >= n ? s : s + ' '.repeat(n - s.length));
  const num = (n: number, w: number) => String(n).padStart(w);
  const perRequest = summary.requests === undefined ? '' : `; ${summary.requests} requests, ${summary.busyUsPerRequest} µs busy CPU per request`;
  lines.push(`${title}: ${summary.totalMs} ms sampled, ${summary.busyMs} ms busy, ${summary.idleMs} ms idle (${summary.samples} samples)${perRequest}; % of busy time`);
  const us = (r: Row) => (r.usPerRequest === undefined ? '' : `${num(r.usPerRequest, 6)} µs/req  `);
  lines.push('', 'By package / subsystem (self time):');
  for (const r of summary.categories) lines.push(`  ${num(r.pct, 5)}%  ${num(r.ms, 8)} ms  ${us(r)}${r.name}`);
  lines.push('', 'Top functions by self time:');
  for (const r of summary.topSelf) lines.push(`  ${num(r.pct, 5)}%  ${num(r.ms, 8)} ms  ${us(r)}${pad(r.category, 28)} ${r.name}`);
  lines.push('', 'cnfguard functions by inclusive time (synchronous part, callees included):');
  for (const r of summary.cnfguardInclusive) lines.push(`  ${num(r.pct, 5)}%  ${num(r.ms, 8)} ms  ${us(r)}${r.name}`);
  return lines.join('\n');
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { top: { type: 'string', default: '30' }, json: { type: 'string' }, requests: { type: 'string' } },
  });
  const file = positionals[0];
  if (file === undefined) {
    process.stderr.write('usage: node bench/profile-summary.ts FILE.cpuprofile [--top N] [--requests N] [--json OUT.json]\n');
    process.exit(2);
  }
  const summary = summarizeProfile(JSON.parse(readFileSync(file, 'utf8')) as CpuProfile, {
    top: Number(values.top),
    ...(values.requests !== undefined && { requests: Number(values.requests) }),
  });
  process.stdout.write(`${formatSummary(summary, file)}\n`);
  if (values.json !== undefined) writeFileSync(values.json, `${JSON.stringify(summary, null, 2)}\n`);
}
