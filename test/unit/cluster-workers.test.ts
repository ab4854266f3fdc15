import { describe, expect, it, vi } from 'vitest';
import { cgroupCpuLimit, cpusFromCfs, cpusFromCpuMax, usableCpus, watchLauncher, workerCount } from '../../src/cluster.ts';

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

describe('watchLauncher', () => {
  it('calls back once, when the parent is no longer the launcher; never without a launcher pid', () => {
    vi.useFakeTimers();
    try {
      let parent = 4242;
      let gone = 0;
      const stop = watchLauncher(() => gone++, '4242', () => parent, 500);
      vi.advanceTimersByTime(5000);
      expect(gone).toBe(0);
      parent = 1; // re-parented: the launcher died
      vi.advanceTimersByTime(500);
      vi.advanceTimersByTime(5000);
      expect(gone).toBe(1);
      stop();
      for (const launcher of [undefined, '', 'x', '-3']) {
        watchLauncher(() => gone++, launcher, () => 1, 500);
        vi.advanceTimersByTime(5000);
      }
      expect(gone).toBe(1);
      const stopped = watchLauncher(() => gone++, '7', () => 7, 500);
      stopped();
      parent = 1;
      vi.advanceTimersByTime(5000);
      expect(gone).toBe(1);
    } finally {
      vi.useRealTimers();
    }
  });
});
