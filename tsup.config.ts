import { defineConfig } from 'tsup';

export default defineConfig({
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
  },
  format: ['esm', 'cjs'],
  dts: true,
  target: 'node20',
  platform: 'node',
  splitting: true,
  sourcemap: true,
  clean: true,
  // Peer dependencies stay external: a user of oncely/redis never loads pg.
  external: ['pg', 'better-sqlite3', 'redis', 'ioredis', 'hono', 'express', 'fastify'],
});
