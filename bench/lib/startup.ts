/**
 * Start-up cost of the command line (issue 18): wall time from exec to exit for `--help`,
 * `version` and `check`, and from exec to the "cnfguard started" line (both listeners bound) for
 * `run`, then the idle server's RSS. Each command runs once cold (an empty compile cache), then
 * `rounds` times warm (the cache that first run filled), then `rounds` times with the compile cache
 * off (NODE_DISABLE_COMPILE_CACHE=1), so the cache's share is visible. Medians; no pinning.
 * Wall time swings with the machine's load; the CPU time the process used (GNU time for the
 * commands that exit, /proc at the "started" line for run) is the steadier figure.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { processCpuSeconds, rssMbOf } from './machine.ts';
import { median } from './table.ts';

/**
 * The config start-up and idle memory are measured on: the default config (introspection, info
 * logging, metrics), one scoped route, nothing that answers; written into the PKI's folder.
 */
export function writeIdleConfig(pki: { dir: string; files: { ca: string; server: { cert: string; key: string } } }): string {
  const config = join(pki.dir, 'cnfguard.yaml');
  writeFileSync(
    config,
    stringify({
      listen: { host: '127.0.0.1', port: 0 },
      tls: { cert: pki.files.server.cert, key: pki.files.server.key, clientCa: pki.files.ca },
      introspection: { url: 'https://127.0.0.1:9/introspect', clientId: 'rs', clientSecret: 'rs-secret', ca: pki.files.ca, probeAtStartup: false },
      upstream: 'http://127.0.0.1:9',
      routes: [{ pathPrefix: '/admin', scopes: ['admin'] }],
      admin: { host: '127.0.0.1', port: 0 },
    }),
  );
  return config;
}

export interface StartupCase {
  name: string;
  args: string[];
  /** Wait for this log message instead of the exit (the process is then stopped by SIGTERM). */
  until?: string;
}

export interface StartupResult {
  name: string;
  coldMs: number;
  warmMs: number;
  /** Every warm run, in order (the median is warmMs). */
  warmRunsMs: number[];
  noCacheMs: number;
  /** User+system CPU of the warm runs (median), ms; 10 ms resolution. */
  warmCpuMs?: number;
  /** Peak RSS of a warm run (median) of the commands that exit, MB. */
  maxRssMb?: number;
  /** For `run`: RSS of the idle server one second after it logged "cnfguard started". */
  idleRssMb?: number;
}

interface OneRun {
  ms: number;
  cpuMs?: number;
  maxRssMb?: number;
  idleRssMb?: number;
}

const GNU_TIME = '/usr/bin/time';

async function once(bin: string, c: StartupCase, scratch: string, env: NodeJS.ProcessEnv): Promise<OneRun> {
  const timed = c.until === undefined && existsSync(GNU_TIME);
  const timeFile = join(scratch, 'time.txt');
  const [command, args] = timed ? [GNU_TIME, ['-f', '%U %S %M', '-o', timeFile, process.execPath, bin, ...c.args]] : [process.execPath, [bin, ...c.args]];
  const started = performance.now();
  const child = spawn(command, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr.on('data', (chunk: Buffer) => (err += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  if (c.until === undefined) {
    child.stdout.resume();
    const code = await exited;
    const ms = performance.now() - started;
    if (code !== 0) throw new Error(`${c.name} exited ${String(code)}: ${err}`);
    if (!timed) return { ms };
    const [user = 0, system = 0, maxKb = 0] = readFileSync(timeFile, 'utf8').trim().split('\n').at(-1)?.split(' ').map(Number) ?? [];
    return { ms, cpuMs: (user + system) * 1000, maxRssMb: maxKb / 1024 };
  }
  const until = c.until;
  let cpu: number | undefined;
  const ms = await new Promise<number>((resolve, reject) => {
    child.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      if (out.split('\n').some((line) => line.includes(`"msg":"${until}"`))) {
        const at = performance.now() - started;
        cpu = child.pid === undefined ? undefined : processCpuSeconds(child.pid);
        resolve(at);
      }
    });
    void exited.then((code) => reject(new Error(`${c.name} exited ${String(code)} before "${until}": ${out}${err}`)));
  });
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const idleRssMb = child.pid === undefined ? undefined : rssMbOf(child.pid);
  child.kill('SIGTERM');
  await exited;
  return { ms, idleRssMb, ...(cpu !== undefined && { cpuMs: cpu * 1000 }) };
}

/** Runs every case cold, warm and without the compile cache; `bin` is bin/cnfguard.js. */
export async function measureStartup(bin: string, cases: readonly StartupCase[], rounds: number): Promise<StartupResult[]> {
  const cacheDir = mkdtempSync(join(tmpdir(), 'cnfguard-bench-cc-'));
  const scratch = cacheDir;
  try {
    const results: StartupResult[] = [];
    for (const c of cases) {
      const cold = await once(bin, c, scratch, { NODE_COMPILE_CACHE: join(cacheDir, c.name.replaceAll(/\W/g, '_')) });
      const warm: OneRun[] = [];
      for (let i = 0; i < rounds; i++) warm.push(await once(bin, c, scratch, { NODE_COMPILE_CACHE: join(cacheDir, c.name.replaceAll(/\W/g, '_')) }));
      const off: OneRun[] = [];
      for (let i = 0; i < rounds; i++) off.push(await once(bin, c, scratch, { NODE_DISABLE_COMPILE_CACHE: '1' }));
      const known = (values: (number | undefined)[]) => values.filter((v): v is number => v !== undefined);
      const rss = known(warm.map((r) => r.idleRssMb));
      const cpu = known(warm.map((r) => r.cpuMs));
      const peak = known(warm.map((r) => r.maxRssMb));
      results.push({
        name: c.name,
        coldMs: cold.ms,
        warmMs: median(warm.map((r) => r.ms)),
        warmRunsMs: warm.map((r) => Math.round(r.ms)),
        noCacheMs: median(off.map((r) => r.ms)),
        ...(cpu.length > 0 && { warmCpuMs: median(cpu) }),
        ...(peak.length > 0 && { maxRssMb: median(peak) }),
        ...(rss.length > 0 && { idleRssMb: median(rss) }),
      });
    }
    return results;
  } finally {
    rmSync(cacheDir, { recursive: true, force: true });
  }
}
