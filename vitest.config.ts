import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // Two cores, three files at a time: most e2e time is waiting on child processes and sockets
    // (two at a time left ~25% of the CPU idle and took 293 s, three 233 s).
    maxWorkers: 3,
    // Tests that spawn bin/cnfguard.js test the sources, not a build that may sit in dist/.
    env: { CNFGUARD_FROM_SOURCE: '1' },
  },
});
