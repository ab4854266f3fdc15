/**
 * After start-up, `cnfguard run` gives back what V8 grew and kept (src/serve/settle-memory.ts):
 * here a young generation grown by many surviving objects, then dropped, as loading modules and
 * the config does. A regular full collection keeps those pages; the memory-reducing one returns them.
 */
import v8 from 'node:v8';
import { expect, it } from 'vitest';
import { releaseStartupMemory } from '../../src/serve/settle-memory.ts';

const youngMb = () => (v8.getHeapSpaceStatistics().find((space) => space.space_name === 'new_space')?.physical_space_size ?? 0) / 1048576;

it('returns the young generation start-up grew to the OS', () => {
  // Survivors of several scavenges (the young generation grows), dropped when the function returns.
  (() => {
    const survivors: { i: number; s: string }[] = [];
    for (let i = 0; i < 300_000; i++) survivors.push({ i, s: `x${i}` });
    return survivors.length;
  })();
  expect(youngMb()).toBeGreaterThan(8);
  const settled = releaseStartupMemory();
  expect(youngMb()).toBeLessThan(2);
  expect(settled.rssAfterMb).toBeLessThan(settled.rssBeforeMb - 8);
  expect(settled.ms).toBeGreaterThanOrEqual(0);
});

it('leaves no gc() on the global object', () => {
  releaseStartupMemory();
  expect('gc' in globalThis).toBe(false);
});
