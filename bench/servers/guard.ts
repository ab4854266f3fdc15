/**
 * Benchmark child: cnfguard itself, built by createApp from a YAML file loaded through the real
 * config loader, with the production defaults (its own pino logger at the config's `logLevel`
 * writing to stdout, process metrics on). The orchestrator sends stdout to /dev/null.
 *
 *   guard.ts CONFIG.yaml          (BENCH_GUARD_DEPS='{"defaultMetrics":false}' for experiments)
 *
 * IPC `stats` answers the token cache size and memory use; `heapSample` { seconds } samples what
 * survives young-generation GC meanwhile (see lib/heap-sample.ts).
 */
import { createApp, type AppDependencies } from '../../src/app.ts';
import { loadConfigFile } from '../../src/config/load.ts';
import { failChild, serveChild } from '../lib/children.ts';
import { sampleHeap } from '../lib/heap-sample.ts';

try {
  const file = process.argv[2];
  if (file === undefined) throw new Error('usage: guard.ts CONFIG.yaml');
  // Experiment knob: createApp dependencies as JSON, e.g. {"defaultMetrics":false}.
  const deps = JSON.parse(process.env.BENCH_GUARD_DEPS ?? '{}') as AppDependencies;
  const app = createApp(loadConfigFile(file, process.env), deps);
  const started = await app.start();
  serveChild({ url: started.url, adminUrl: started.adminUrl }, () => app.stop(500), {
    // resources: what keeps the event loop busy besides requests (sockets, timers), by type.
    stats: async () => ({ cacheSize: app.tokens.size, rssMb: process.memoryUsage().rss / 2 ** 20, resources: process.getActiveResourcesInfo() }),
    heapSample: async (message) => sampleHeap(Number(message.seconds ?? 2)),
  });
} catch (err) {
  failChild(err);
}
