/**
 * The store a child process of the tests uses, named by ONCELY_WORKER_STORE (sqlite, postgres,
 * redis), on the same file / table / prefix as its parent (ONCELY_WORKER_SQLITE,
 * ONCELY_WORKER_POSTGRES + ONCELY_WORKER_TABLE, ONCELY_WORKER_REDIS + ONCELY_WORKER_PREFIX).
 */
import { Redis } from 'ioredis';
import pg from 'pg';
import type { IdempotencyStore } from '../../src/core/types.js';
import { PostgresStore } from '../../src/stores/postgres/index.js';
import { RedisStore } from '../../src/stores/redis/index.js';
import { SqliteStore } from '../../src/stores/sqlite/index.js';

export function storeFromEnv(env: Record<string, string | undefined> = process.env): IdempotencyStore {
  switch (env.ONCELY_WORKER_STORE) {
    case 'sqlite':
      return new SqliteStore({ path: env.ONCELY_WORKER_SQLITE! });
    case 'postgres':
      return new PostgresStore({ pool: new pg.Pool({ connectionString: env.ONCELY_WORKER_POSTGRES }), table: env.ONCELY_WORKER_TABLE });
    case 'redis':
      return new RedisStore({ client: new Redis(env.ONCELY_WORKER_REDIS!), prefix: env.ONCELY_WORKER_PREFIX });
    default:
      throw new Error(`unknown store ${env.ONCELY_WORKER_STORE}`);
  }
}
