/**
 * What start-up leaves behind, given back once (issue 32). Loading the modules and the config
 * grows V8's young generation to its largest (16 MB a semi-space) and leaves freed pages in V8's
 * pool for reuse; an idle server never collects again, so it keeps them all. One memory-reducing
 * full collection ("last resort": shrinks the young generation, compacts, returns pooled pages to
 * the OS) shortly after listening takes ~10 MB off idle RSS. Nothing is capped: the young
 * generation grows back to the same maximum under load, so the request path pays nothing after
 * this one pause (tens of ms, once, logged at debug with its duration and the RSS before/after).
 */
import v8 from 'node:v8';
import vm from 'node:vm';

type Collect = (options: { type: 'major'; execution: 'sync'; flavor: 'last-resort' }) => void;

/** V8's gc() without exposing it to any code: the flag only for one fresh context's global. */
function collector(): Collect {
  if (typeof globalThis.gc === 'function') return globalThis.gc as unknown as Collect;
  v8.setFlagsFromString('--expose-gc');
  try {
    return vm.runInNewContext('gc') as Collect;
  } finally {
    v8.setFlagsFromString('--no-expose-gc');
  }
}

export interface Settled {
  rssBeforeMb: number;
  rssAfterMb: number;
  ms: number;
}

/** One memory-reducing full collection now. */
export function releaseStartupMemory(): Settled {
  const rssBefore = process.memoryUsage.rss();
  const started = performance.now();
  collector()({ type: 'major', execution: 'sync', flavor: 'last-resort' });
  const ms = performance.now() - started;
  const mb = (bytes: number) => Math.round((bytes / 1048576) * 10) / 10;
  return { rssBeforeMb: mb(rssBefore), rssAfterMb: mb(process.memoryUsage.rss()), ms: Math.round(ms) };
}

/** {@link releaseStartupMemory} once, `delayMs` after now (the timer does not keep the process up). */
export function settleMemoryAfterStart(delayMs: number, onSettled: (settled: Settled) => void): void {
  setTimeout(() => onSettled(releaseStartupMemory()), delayMs).unref();
}
