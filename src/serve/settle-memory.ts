/**
 * What start-up leaves behind, given back once (issue 32). Loading the modules and the config
 * grows V8's young generation to its largest (16 MB a semi-space) and leaves freed pages in V8's
 * pool for reuse; an idle server never collects again, so it keeps them all. One memory-reducing
 * full collection ("last resort": shrinks the young generation, compacts, returns pooled pages to
 * the OS) shortly after listening takes ~9 MB off idle RSS. Nothing is capped: the young
 * generation grows back to the same maximum under load (same-run A/B: CPU per request unchanged
 * within the noise), after this one pause (tens of ms, once, logged at debug with its duration
 * and the RSS before/after).
 *
 * V8's gc() is there only with node's --expose-gc, which bin/cnfguard.js adds for `run`. Without it
 * (the sources run directly, a NODE_OPTIONS without it) nothing is released. Not the trick of
 * setting --expose-gc at run time for one vm context: in a same-run A/B the server then spent ~40%
 * more CPU per request for good.
 */

type Collect = (options: { type: 'major'; execution: 'sync'; flavor: 'last-resort' }) => void;

export interface Settled {
  rssBeforeMb: number;
  rssAfterMb: number;
  ms: number;
}

/** One memory-reducing full collection now; undefined when node runs without --expose-gc. */
export function releaseStartupMemory(): Settled | undefined {
  const gc = globalThis.gc as unknown as Collect | undefined;
  if (typeof gc !== 'function') return undefined;
  const rssBefore = process.memoryUsage.rss();
  const started = performance.now();
  gc({ type: 'major', execution: 'sync', flavor: 'last-resort' });
  const ms = performance.now() - started;
  const mb = (bytes: number) => Math.round((bytes / 1048576) * 10) / 10;
  return { rssBeforeMb: mb(rssBefore), rssAfterMb: mb(process.memoryUsage.rss()), ms: Math.round(ms) };
}

/** How long after listening start-up's memory is released: past the first requests' burst. */
const SETTLE_AFTER_MS = 1000;

/** {@link releaseStartupMemory} once, SETTLE_AFTER_MS from now, said at debug (the timer does not keep the process up). */
export function settleMemoryAfterStart(logger: { debug(detail: object, message: string): void }): void {
  setTimeout(() => {
    const settled = releaseStartupMemory();
    logger.debug(settled ?? {}, settled === undefined ? 'start-up memory kept: node runs without --expose-gc' : 'start-up memory released');
  }, SETTLE_AFTER_MS).unref();
}
