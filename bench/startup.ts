/**
 * The command line's start-up cost (issue 18; goals: `check` and `--help` <= 0.3 s, `run`
 * listening <= 0.5 s after exec), and the idle server's RSS:
 *
 *   node bench/startup.ts [--rounds 5] [--baseline DIR] [--out FILE]
 *
 * Runs bin/cnfguard.js as users do (a fresh process each time; see lib/startup.ts for cold, warm
 * and no-cache). The config is the README's shape on port 0 with an AS nobody listens on (the
 * start-up probe is off: it runs after listening and does not change the figures).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createPki } from '../test/fixtures/stack.ts';
import { machineInfo } from './lib/machine.ts';
import { measureStartup, writeIdleConfig } from './lib/startup.ts';
import { fixed, table } from './lib/table.ts';

const ROOT = join(import.meta.dirname, '..');
// --baseline DIR: also `run` to listening from another checkout's bin/cnfguard.js (its build when fresh), for before/after.
const { values } = parseArgs({ options: { rounds: { type: 'string' }, out: { type: 'string' }, baseline: { type: 'string' } } });
const rounds = Number(values.rounds ?? process.env.BENCH_ROUNDS ?? 5);
const out = values.out ?? join(ROOT, '.tmp', 'bench', 'startup.json');

const pki = await createPki();
try {
  const config = writeIdleConfig(pki);
  const machine = machineInfo(false);
  console.log(`machine: ${machine.cpuModel}, ${machine.cores} cores, ${machine.memoryGb} GB, Node ${machine.node}, load ${machine.loadavg.join(' ')}`);
  const results = await measureStartup(
    join(ROOT, 'bin', 'cnfguard.js'),
    [
      { name: '--help', args: ['--help'] },
      { name: 'version', args: ['version'] },
      { name: 'check', args: ['check', '-c', config] },
      { name: 'run (listening)', args: ['run', '-c', config], until: 'cnfguard started' },
    ],
    rounds,
  );
  if (values.baseline !== undefined) {
    const [before] = await measureStartup(join(values.baseline, 'bin', 'cnfguard.js'), [{ name: `run (listening), baseline ${values.baseline}`, args: ['run', '-c', config], until: 'cnfguard started' }], rounds);
    if (before !== undefined) results.push(before);
  }
  console.log(`\nexec -> exit (run: exec -> "cnfguard started"), ms; median of ${rounds} runs; cold = an empty compile cache; warm CPU = user+system of the warm runs`);
  console.log(
    table(
      ['command', 'cold', 'warm', 'warm runs', 'warm CPU', 'no cache', 'peak RSS MB', 'idle RSS MB'],
      results.map((r) => [r.name, fixed(r.coldMs, 0), fixed(r.warmMs, 0), r.warmRunsMs.join(' '), fixed(r.warmCpuMs, 0), fixed(r.noCacheMs, 0), fixed(r.maxRssMb, 1), fixed(r.idleRssMb, 1)]),
    ),
  );
  mkdirSync(join(out, '..'), { recursive: true });
  writeFileSync(out, `${JSON.stringify({ at: new Date().toISOString(), machine, rounds, results }, null, 2)}\n`);
  console.log(`\nwritten to ${out}`);
} finally {
  await pki.cleanup();
}
