import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // Two cores: end-to-end files start several servers each; more parallel files only add noise.
    maxWorkers: 2,
    // Tests that spawn bin/cnfguard.js test the sources, not a build that may sit in dist/.
    env: { CNFGUARD_FROM_SOURCE: '1' },
  },
});
