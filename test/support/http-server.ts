/**
 * A child-process HTTP server for the crash tests: the fetch adapter on the store named by
 * ONCELY_WORKER_STORE (same variables as idempotent-worker.ts), served on an ephemeral port
 * that it prints. Each execution appends a line to ONCELY_WORKER_EFFECTS; `X-Sleep-Ms` delays
 * the answer.
 */
import { appendFileSync } from 'node:fs';
import { serve } from '@hono/node-server';
import { Redis } from 'ioredis';
import pg from 'pg';
import type { IdempotencyStore } from '../../src/core/types.js';
import { withIdempotency } from '../../src/http/fetch/index.js';
import { PostgresStore } from '../../src/stores/postgres/index.js';
import { RedisStore } from '../../src/stores/redis/index.js';
import { SqliteStore } from '../../src/stores/sqlite/index.js';

const env = process.env as Record<string, string>;

function makeStore(): IdempotencyStore {
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

const handler = withIdempotency(
  async (request) => {
    appendFileSync(env.ONCELY_WORKER_EFFECTS!, `${process.pid}\n`);
    await new Promise((resolve) => setTimeout(resolve, Number(request.headers.get('x-sleep-ms') ?? 0)));
    return Response.json({ servedBy: process.pid }, { status: 201 });
  },
  { store: makeStore(), required: true, leaseMs: Number(env.ONCELY_WORKER_LEASE_MS ?? 30_000) },
);

const server = serve({ fetch: handler, port: 0, hostname: '127.0.0.1' }, (info) => process.stdout.write(`listening ${info.port}\n`));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
