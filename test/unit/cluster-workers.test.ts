import { describe, expect, it } from 'vitest';
import { cgroupCpuLimit, cpusFromCfs, cpusFromCpuMax, usableCpus, workerCount } from '../../src/cluster.ts';

/** A fake /sys/fs/cgroup: path -> text; every other path is missing. */
function files(entries: Record<string, string>) {
  return (path: string): string | undefined => entries[path];
}

describe('cgroup CPU limit', () => {
  it.each([
    ['max 100000\n', undefined],
    ['max', undefined],
    ['100000 100000\n', 1],
    ['200000 100000', 2],
    ['150000 100000', 2], // 1.5 CPUs: rounded up
    ['50000 100000', 1], // 500m: one worker, never zero
    ['250000', 3], // period defaults to 100000
    ['', undefined],
    ['-1 100000', undefined],
    ['100000 0', undefined],
    ['garbage', undefined],
  ] as const)('cpu.max %j -> %s', (text, cpus) => {
    expect(cpusFromCpuMax(text)).toBe(cpus);
  });

  it('reads cgroup v1 quota and period', () => {
    expect(cpusFromCfs('-1\n', '100000\n')).toBeUndefined();
    expect(cpusFromCfs('300000\n', '100000\n')).toBe(3);
    expect(cpusFromCfs('x', '100000')).toBeUndefined();
  });

  it('prefers cgroup v2, falls back to v1, else no limit', () => {
    expect(cgroupCpuLimit(files({ '/sys/fs/cgroup/cpu.max': '200000 100000' }))).toBe(2);
    expect(cgroupCpuLimit(files({ '/sys/fs/cgroup/cpu/cpu.cfs_quota_us': '100000', '/sys/fs/cgroup/cpu/cpu.cfs_period_us': '100000' }))).toBe(1);
    expect(cgroupCpuLimit(files({ '/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us': '400000', '/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us': '100000' }))).toBe(4);
    expect(cgroupCpuLimit(files({}))).toBeUndefined();
  });
});

describe('workerCount', () => {
  it('auto is the cgroup limit, capped by the CPUs available', () => {
    expect(workerCount('auto', files({ '/sys/fs/cgroup/cpu.max': '100000 100000' }), 64)).toBe(1);
    expect(workerCount('auto', files({ '/sys/fs/cgroup/cpu.max': '1600000 100000' }), 4)).toBe(4);
  });
  it('auto without a limit is availableParallelism', () => {
    expect(workerCount('auto', files({ '/sys/fs/cgroup/cpu.max': 'max 100000' }), 6)).toBe(6);
    expect(workerCount('auto', files({}), 3)).toBe(3);
  });
  it('a number is taken as it is', () => {
    expect(workerCount(5, files({ '/sys/fs/cgroup/cpu.max': '100000 100000' }), 2)).toBe(5);
  });
});

describe('usableCpus', () => {
  it('is the cgroup limit when lower than the affinity mask, else the mask', () => {
    expect(usableCpus(files({ '/sys/fs/cgroup/cpu.max': '150000 100000' }), 8)).toBe(2);
    expect(usableCpus(files({ '/sys/fs/cgroup/cpu.max': '800000 100000' }), 3)).toBe(3);
    expect(usableCpus(files({}), 1)).toBe(1);
  });
});
