/**
 * Every store of the repo on its real server, for tests that run across all of them.
 * `storesUnderTest()` connects what it can (skipping, or under CI failing, on a missing
 * server); `closeStoresUnderTest()` ends the clients and drops what the run created.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import pg from 'pg';
import type { IdempotencyStore } from '../../src/core/types.js';
import { MemoryStore } from '../../src/stores/memory/index.js';
import { PostgresStore } from '../../src/stores/postgres/index.js';
import { RedisStore } from '../../src/stores/redis/index.js';
import { SqliteStore } from '../../src/stores/sqlite/index.js';
import { POSTGRES_URL, REDIS_URL, skipUnlessReachable } from './services.js';

export interface StoreUnderTest {
  name: string;
  make: () => Promise<IdempotencyStore>;
  /** Why this store is skipped here (its server is unreachable outside CI), or false. */
  skip: string | false;
}

const cleanups: (() => Promise<void>)[] = [];

export async function storesUnderTest(): Promise<StoreUnderTest[]> {
  const directory = mkdtempSync(join(tmpdir(), 'oncely-stores-'));
  cleanups.push(async () => rmSync(directory, { recursive: true, force: true }));
  const stores: StoreUnderTest[] = [
    { name: 'memory', make: async () => new MemoryStore(), skip: false },
    { name: 'sqlite', make: async () => new SqliteStore({ path: join(directory, 'records.db') }), skip: false },
  ];

  const postgresSkip = await skipUnlessReachable('PostgreSQL', POSTGRES_URL);
  if (postgresSkip) stores.push({ name: 'postgres', make: () => Promise.reject(new Error(postgresSkip)), skip: postgresSkip });
  else {
    const pool = new pg.Pool({ connectionString: POSTGRES_URL, max: 10 });
    const table = `oncely_t_${randomUUID().slice(0, 8)}`;
    await new PostgresStore({ pool, table }).migrate();
    cleanups.push(async () => {
      await pool.query(`DROP TABLE IF EXISTS "${table}", "${table}_migrations"`);
      await pool.end();
    });
    stores.push({ name: 'postgres', make: async () => new PostgresStore({ pool, table }), skip: false });
  }

  const redisSkip = await skipUnlessReachable('Redis', REDIS_URL);
  if (redisSkip) stores.push({ name: 'redis', make: () => Promise.reject(new Error(redisSkip)), skip: redisSkip });
  else {
    const client = new Redis(REDIS_URL);
    const prefix = `oncely-t-${randomUUID()}`;
    cleanups.push(async () => {
      const keys = await client.keys(`${prefix}:*`);
      if (keys.length > 0) await client.del(...keys);
      client.disconnect();
    });
    stores.push({ name: 'redis', make: async () => new RedisStore({ client, prefix }), skip: false });
  }
  return stores;
}

export async function closeStoresUnderTest(): Promise<void> {
  for (const cleanup of cleanups.splice(0)) await cleanup();
}
