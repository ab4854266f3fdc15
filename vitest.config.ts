import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // Two cores, three files at a time: end-to-end files wait on their servers more than they
    // compute (measured: 214 s against 277 s with two, every file's time well inside its timeout).
    maxWorkers: 3,
    // Tests that spawn bin/cnfguard.js test the sources, not a build that may sit in dist/.
    env: { CNFGUARD_FROM_SOURCE: '1' },
  },
});
