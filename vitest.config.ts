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
          include: ['replica/**/*.test.ts', 'operator/**/*.test.ts'],
          exclude: ['**/node_modules/**', '**/*.cluster.test.ts'],
        },
      },
    ],
  },
});
