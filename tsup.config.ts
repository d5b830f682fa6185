import { readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { basename, isAbsolute, join, relative, resolve } from 'node:path';
import { defineConfig } from 'tsup';

// The two builds below run at once, so neither may `clean`: empty dist/ once, here.
rmSync('dist', { recursive: true, force: true });

const drivers = ['pg', 'better-sqlite3', 'redis', 'ioredis'];

/**
 * tsup's CommonJS code-splitting pass (sucrase) names each chunk by its absolute path in the
 * source map (`sources`, `file`): rewrite those paths relative to dist/, so no map shipped
 * carries the build machine's directories.
 */
async function relativeCjsSourceMaps(): Promise<void> {
  const dist = resolve('dist');
  for (const name of readdirSync(dist).filter((file) => file.endsWith('.cjs.map'))) {
    const path = join(dist, name);
    const map = JSON.parse(readFileSync(path, 'utf8')) as { sources: string[]; file?: string };
    map.sources = map.sources.map((source) => (isAbsolute(source) ? relative(dist, source) : source));
    if (map.file) map.file = basename(map.file);
    writeFileSync(path, JSON.stringify(map));
  }
}

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
      messages: 'src/messages/index.ts',
      sqs: 'src/messages/sqs/index.ts',
      bullmq: 'src/messages/bullmq/index.ts',
      mqtt: 'src/messages/mqtt/index.ts',
      rabbitmq: 'src/messages/rabbitmq/index.ts',
      nats: 'src/messages/nats/index.ts',
      testing: 'src/testing/index.ts',
      client: 'src/client/index.ts',
    },
    format: ['esm', 'cjs'],
    dts: true,
    target: 'node20',
    platform: 'node',
    splitting: true,
    sourcemap: true,
    // Keep `node:` specifiers: `node:test` (oncely/testing) has no unprefixed name.
    removeNodeProtocol: false,
    // Peer dependencies stay external: a user of oncely/redis never loads pg.
    external: [...drivers, 'hono', 'express', 'fastify'],
    onSuccess: relativeCjsSourceMaps,
  },
  {
    // The CLI is a program, not a library: one ESM file behind `bin`. It reaches the stores
    // through the package's own subpaths, loaded on demand, so `oncely check` needs no driver.
    entry: { cli: 'src/cli/main.ts' },
    format: ['esm'],
    target: 'node20',
    platform: 'node',
    sourcemap: true,
    removeNodeProtocol: false,
    banner: { js: '#!/usr/bin/env node' },
    external: [...drivers, /^oncely(\/|$)/],
  },
]);
