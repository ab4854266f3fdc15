/**
 * Every process a benchmark started (the descendants of this one), with the CPUs it may run on and
 * the CPU time it used between two snapshots, so a bench can show that nothing of its own (a
 * redis-server, a sentinel) sits on the server's CPU or works harder in one side's rounds.
 */
import { readFileSync } from 'node:fs';
import { childPids, processCpuSeconds } from './machine.ts';

export interface CensusEntry {
  pid: number;
  /** A short name: the command and, for redis, its port (`redis-server :6379`, `redis-sentinel :26379`). */
  name: string;
  /** Cpus_allowed_list of /proc/PID/status, e.g. `1` or `0-1`. */
  cpus: string;
}

function nameOf(pid: number): string {
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter((s) => s.length > 0);
    const comm = readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
    // redis-server rewrites its argv to `redis-server 127.0.0.1:PORT` (`... [sentinel]` for a sentinel).
    if (comm.startsWith('redis')) return argv.join(' ').replace(/^\S*\/?(redis-\S+)/, '$1');
    const script = argv.find((a) => a.endsWith('.ts') || a.endsWith('.js'));
    return script === undefined ? comm : `${comm} ${script.split('/').pop()}${argv.at(-1)?.endsWith('.yaml') ? ` ${argv.at(-1)?.split('/').pop()}` : ''}`;
  } catch {
    return '?';
  }
}

function cpusOf(pid: number): string {
  try {
    return /^Cpus_allowed_list:\s*(\S+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? '?';
  } catch {
    return '?';
  }
}

/** The descendants of `root` (default: this process), depth first. */
export function census(root = process.pid): CensusEntry[] {
  const out: CensusEntry[] = [];
  const visit = (pid: number) => {
    for (const child of childPids(pid)) {
      out.push({ pid: child, name: nameOf(child), cpus: cpusOf(child) });
      visit(child);
    }
  };
  visit(root);
  return out;
}

/** CPU seconds of each process now, by pid. */
export function cpuSnapshot(entries: readonly CensusEntry[]): Map<number, number> {
  return new Map(entries.map((e) => [e.pid, processCpuSeconds(e.pid) ?? 0]));
}

/** CPU seconds each process used between two snapshots. */
export function cpuBetween(before: Map<number, number>, after: Map<number, number>): Map<number, number> {
  return new Map([...after].map(([pid, s]) => [pid, s - (before.get(pid) ?? s)]));
}
