import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    pool: 'forks',
    testTimeout: 120_000,
    hookTimeout: 120_000,
    projects: [
      {
        extends: true,
        test: {
          name: 'unit',
          include: ['replica/**/*.test.ts', 'operator/**/*.test.ts', 'e2e/src/**/*.test.ts'],
          exclude: ['**/node_modules/**', '**/*.cluster.test.ts'],
        },
      },
      {
        // One real local control plane (e2e/test/global-setup.ts) shared by every file here.
        extends: true,
        test: {
          name: 'cluster',
          include: ['e2e/test/**/*.test.ts', 'operator/**/*.cluster.test.ts'],
          exclude: ['**/node_modules/**'],
          globalSetup: ['e2e/test/global-setup.ts'],
          // Files share one node; running them one at a time keeps pod IPs, ports and timing predictable on 2 cores.
          fileParallelism: false,
        },
      },
    ],
  },
});
