/**
 * cnfguard started the way operators start it: `cnfguard run --config FILE` (cmd/cnfguard.ts), so
 * `workers: N` (node:cluster) is measured too. Ports are chosen up front; ready when the admin
 * listener's /readyz answers 200 (with workers, once every worker serves).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { request } from 'undici';
import { childPids, pinnedCommand } from './machine.ts';

export interface CliServer {
  pid: number;
  pids(): number[];
  alive(): boolean;
  stop(): Promise<void>;
}

export async function startCli(options: { entry: string; configFile: string; adminUrl: string; cpus: string | undefined; nodeFlags: string[]; stdout: boolean }): Promise<CliServer> {
  const [command, args] = pinnedCommand(options.cpus, process.execPath, ['--disable-warning=ExperimentalWarning', ...options.nodeFlags, options.entry, 'run', '--config', options.configFile]);
  const child: ChildProcess = spawn(command, args, { stdio: ['ignore', options.stdout ? 'inherit' : 'ignore', 'inherit'] });
  const exited = once(child, 'exit');
  const reap = () => child.kill('SIGKILL');
  process.once('exit', reap);
  void exited.then(() => process.off('exit', reap));
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`cnfguard run exited with code ${child.exitCode}`);
    try {
      const res = await request(`${options.adminUrl}/readyz`, { headersTimeout: 1000, bodyTimeout: 1000 });
      await res.body.dump();
      if (res.statusCode === 200) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error('cnfguard run was not ready within 30 s');
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const pid = child.pid as number;
  return {
    pid,
    pids: () => [pid, ...childPids(pid)],
    alive: () => child.exitCode === null && child.signalCode === null,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
      await exited;
      clearTimeout(timer);
    },
  };
}
