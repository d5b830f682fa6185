import { rmSync } from 'node:fs';
import { defineConfig } from 'tsup';

// The two builds below run at once, so neither may `clean`: empty dist/ once, here.
rmSync('dist', { recursive: true, force: true });

const drivers = ['pg', 'better-sqlite3', 'redis', 'ioredis'];

export default defineConfig([
  {
    entry: {
      index: 'src/index.ts',
      sqlite: 'src/stores/sqlite/index.ts',
      postgres: 'src/stores/postgres/index.ts',
      redis: 'src/stores/redis/index.ts',
      express: 'src/http/express/index.ts',
      fastify: 'src/http/fastify/index.ts',
      fetch: 'src/http/fetch/index.ts',
      hono: 'src/http/hono/index.ts',
      testing: 'src/testing/index.ts',
      client: 'src/client/index.ts',
    },
    format: ['esm', 'cjs'],
    dts: true,
    target: 'node20',
    platform: 'node',
    splitting: true,
    sourcemap: true,
    // Peer dependencies stay external: a user of oncely/redis never loads pg.
    external: [...drivers, 'hono', 'express', 'fastify'],
  },
  {
    // The CLI is a program, not a library: one ESM file behind `bin`. It reaches the stores
    // through the package's own subpaths, loaded on demand, so `oncely check` needs no driver.
    entry: { cli: 'src/cli/main.ts' },
    format: ['esm'],
    target: 'node20',
    platform: 'node',
    sourcemap: true,
    banner: { js: '#!/usr/bin/env node' },
    external: [...drivers, /^oncely(\/|$)/],
  },
]);
