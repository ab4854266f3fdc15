/**
 * Where a process's CPU went, from Linux perf's samples (on-CPU time, the kernel's share included)
 * rather than the V8 profiler's: on a core shared with other processes, a V8 profile's self times
 * also count the time the thread waited for its turn, and it cannot see the system calls' work.
 *
 *   node bench/run.ts ... --node-flags="--perf-basic-prof" &    # JIT frames named in /tmp/perf-PID.map
 *   perf record -a -C 0 -F 1999 -g -o perf.data -- sleep 10     # the server CPU, while the load runs
 *   perf script -i perf.data -F pid,ip,sym > perf.txt
 *   node bench/perf-summary.ts perf.txt [--frame decision-api.ts | --pid N] [--top 40]
 *
 * Prints each process's share of the samples; then, for one process (--pid, or the busiest whose
 * stacks hold --frame), the functions by inclusive share (cnfguard's, Node's, the system calls),
 * and where each sample's time went in a few coarse parts (first match from the leaf up).
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

interface Sample {
  pid: number;
  /** Leaf first. */
  frames: string[];
}

export function parsePerfScript(text: string): Sample[] {
  const samples: Sample[] = [];
  let current: Sample | undefined;
  for (const line of text.split('\n')) {
    const pid = /^\s*(\d+)\s*$/.exec(line);
    if (pid !== null) {
      current = { pid: Number(pid[1]), frames: [] };
      samples.push(current);
    } else if (current !== undefined && line.trim() !== '') {
      // "ffffffff81000000 symbol name": the address, then the symbol.
      current.frames.push(line.trim().replace(/^[0-9a-f]+\s+/, ''));
    }
  }
  return samples;
}

/** Coarse parts, matched against a sample's frames from the leaf up: the first part any frame matches. */
const PARTS: readonly [string, RegExp][] = [
  ['kernel: write (to the peer; loopback runs its receive path too)', /^(ksys_write|__x64_sys_write|__x64_sys_writev)$/],
  ['kernel: read', /^(ksys_read|__x64_sys_read|__x64_sys_recvfrom)$/],
  ['kernel: epoll', /epoll/],
  ['kernel: other', /^(do_syscall_64|entry_SYSCALL_64.*|asm_.*)$/],
  ['GC', /^v8::internal::(Heap::|Scavenger|MarkCompact|ConcurrentMarking|Sweeper)/],
  ['cnfguard: access line and counts', /(observe\/access-log\.ts|src\/log\.ts|admin\/(counter|histogram)-tally\.ts|sonic-boom)/],
  ['cnfguard: pipeline', /src\/(pipeline|validation|introspection|proof)\//],
  ['cnfguard: edge', /src\/(edge|proxy|serve)\//],
  ['undici (upstream calls)', /node_modules\/undici|undici/],
  ['node: TLS and crypto (OpenSSL)', /TLSWrap|node:_tls|node:tls|SSL_|ssl3_|tls13_|EVP_|aes|gcm/i],
  ['node: http', /node:_http|http_parser|llhttp/],
  ['node: streams, events, timers', /node:(internal\/streams|events|timers|internal\/timers|internal\/process\/task_queues|net)/],
];

export function partOf(frames: readonly string[]): string {
  for (const frame of frames) for (const [name, pattern] of PARTS) if (pattern.test(frame)) return name;
  return 'other (V8 and Node runtime, unattributed)';
}

const pct = (n: number, of: number): string => `${((100 * n) / of).toFixed(2).padStart(6)}%`;

function main(): void {
  const { values, positionals } = parseArgs({ allowPositionals: true, options: { pid: { type: 'string' }, frame: { type: 'string' }, top: { type: 'string' } } });
  const file = positionals[0];
  if (file === undefined) throw new Error('usage: node bench/perf-summary.ts PERF_SCRIPT_OUTPUT [--frame TEXT | --pid N] [--top N]');
  const samples = parsePerfScript(readFileSync(file, 'utf8'));
  const byPid = new Map<number, Sample[]>();
  for (const s of samples) {
    const list = byPid.get(s.pid);
    if (list === undefined) byPid.set(s.pid, [s]);
    else list.push(s);
  }
  const ranked = [...byPid.entries()].sort((a, b) => b[1].length - a[1].length);
  console.log(`${file}: ${samples.length} samples`);
  for (const [pid, list] of ranked.slice(0, 6)) console.log(`  pid ${String(pid).padStart(7)} ${pct(list.length, samples.length)}`);
  const frame = values.frame;
  const pid = values.pid !== undefined ? Number(values.pid) : ranked.find(([, list]) => frame === undefined || list.some((s) => s.frames.some((f) => f.includes(frame))))?.[0];
  const mine = pid === undefined ? [] : (byPid.get(pid) ?? []);
  if (mine.length === 0) throw new Error(`no samples for ${values.pid !== undefined ? `pid ${values.pid}` : `a process with frame ${frame}`}`);
  const n = mine.length;
  console.log(`\npid ${pid}: ${n} samples (${pct(n, samples.length).trim()} of all)`);
  const parts = new Map<string, number>();
  for (const s of mine) {
    const part = partOf(s.frames);
    parts.set(part, (parts.get(part) ?? 0) + 1);
  }
  console.log('\nwhere the time went (each sample counted once, by its first matching frame from the leaf up):');
  for (const [name, count] of [...parts.entries()].sort((a, b) => b[1] - a[1])) console.log(`${pct(count, n)}  ${name}`);
  const inclusive = new Map<string, number>();
  const self = new Map<string, number>();
  for (const s of mine) {
    const leaf = s.frames[0];
    if (leaf !== undefined) self.set(leaf, (self.get(leaf) ?? 0) + 1);
    for (const f of new Set(s.frames)) inclusive.set(f, (inclusive.get(f) ?? 0) + 1);
  }
  const top = Number(values.top ?? 40);
  console.log('\nJS functions and system calls by inclusive share (self share beside):');
  const shown = [...inclusive.entries()].filter(([f]) => f.startsWith('JS:') || /^(ksys_|__x64_sys_)/.test(f)).sort((a, b) => b[1] - a[1]).slice(0, top);
  for (const [f, count] of shown) console.log(`${pct(count, n)} ${pct(self.get(f) ?? 0, n)}  ${f.slice(0, 140)}`);
}

if (import.meta.url === `file://${process.argv[1]}`) main();
