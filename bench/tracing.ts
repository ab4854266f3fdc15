// node bench/tracing.ts: what traces cost (issue 28). Two `cnfguard run` processes, default config,
// one without `tracing` and one with it (sampleRatio 1, every request exported over OTLP/HTTP to
// the test receiver process), loaded in turn round after round at cache hit: 32 keep-alive mTLS
// connections (autocannon); median req/s of each and the ratio on/off as the median of per-round
// ratios. Loopback only; bounded counts (ROUNDS, SECONDS). `RATIO=0.1` samples a tenth.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { startAuthorizationServer } from '../demo/authorization-server.ts';
import { startOtlpReceiver } from '../test/fixtures/otlp.ts';
import { baseConfig, createPki } from '../test/fixtures/stack.ts';
import { spawnChild } from './lib/children.ts';
import { startCli } from './lib/cli-target.ts';
import { runLoad } from './lib/load.ts';
import { machineInfo } from './lib/machine.ts';
import { freePort } from './lib/nginx.ts';
import { median } from './lib/table.ts';

const ROUNDS = Number(process.env.ROUNDS ?? 5);
const SECONDS = Number(process.env.SECONDS ?? 3);
const RATIO = Number(process.env.RATIO ?? 1);
const CONNECTIONS = 32;

const machine = machineInfo(false);
console.log(`machine: ${machine.cpuModel} x${machine.cores}, ${machine.node}, load ${machine.loadavg.join(' ')}`);
const pki = await createPki();
const as = await startAuthorizationServer({ tls: pki.certs.server });
const upstream = await spawnChild({ name: 'upstream', script: join(import.meta.dirname, 'servers', 'upstream.ts') });
const receiver = await startOtlpReceiver(pki.dir);

async function guard(name: string, extra: Record<string, unknown>) {
  const [port, adminPort] = [await freePort(), await freePort()];
  const configFile = join(pki.dir, `${name}.yaml`);
  const base = baseConfig(pki, as, { url: upstream.ready.url } as Parameters<typeof baseConfig>[2], extra);
  await writeFile(configFile, stringify({ ...base, logLevel: 'warn', listen: { host: '127.0.0.1', port }, admin: { host: '127.0.0.1', port: adminPort } }));
  const cli = await startCli({ entry: 'cmd/cnfguard.ts', configFile, adminUrl: `http://127.0.0.1:${adminPort}`, cpus: undefined, nodeFlags: [], stdout: false });
  return { cli, url: `https://localhost:${port}` };
}

const off = await guard('tracing-off', {});
const on = await guard('tracing-on', { tracing: { otlpEndpoint: receiver.url, sampleRatio: RATIO } });
const client = pki.certs.clients.client1;
try {
  const token = await as.issueToken({ clientCert: client, caCert: pki.certs.ca.cert });
  const load = (target: typeof off) => runLoad({ url: target.url, token, cert: client.cert, key: client.key, connections: CONNECTIONS, durationSeconds: SECONDS, path: '/x', serverPids: target.cli.pids, sidePids: () => [upstream.pid] });
  await load(off);
  await load(on);
  const rps = { off: [] as number[], on: [] as number[] };
  const ratios: number[] = [];
  for (let round = 1; round <= ROUNDS; round++) {
    const order = round % 2 === 1 ? (['off', 'on'] as const) : (['on', 'off'] as const);
    for (const kind of order) {
      const result = await load(kind === 'off' ? off : on);
      if (result.non2xx + result.errors > 0) throw new Error(`${kind}: ${result.non2xx} non-2xx, ${result.errors} errors`);
      rps[kind].push(result.rps);
    }
    ratios.push((rps.on.at(-1) as number) / (rps.off.at(-1) as number));
  }
  console.log(`cache hit, ${CONNECTIONS} connections, ${ROUNDS} rounds x ${SECONDS} s, sampleRatio ${RATIO}: off ${rps.off.join(' ')} req/s; on ${rps.on.join(' ')} req/s`);
  console.log(`  median off ${median(rps.off)} req/s, on ${median(rps.on)} req/s; on/off ${median(ratios).toFixed(3)}x (median of per-round ratios)`);
  console.log(`  spans received: ${receiver.spans().length}`);
} finally {
  await on.cli.stop();
  await off.cli.stop();
  await receiver.stop();
  await upstream.stop();
  await as.stop();
  await pki.cleanup();
}
