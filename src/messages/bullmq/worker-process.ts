/**
 * A BullMQ worker process for the cross-process tests (`node --import tsx worker-process.ts`).
 * It consumes ONCELY_QUEUE through `idempotentProcessor`, keyed by `job.data.order`, and
 * appends one line per run of the handler, "<order> <downstreamKey> <pid>", to ONCELY_EFFECTS.
 *
 * - Lease mode (default): on a RedisStore (prefix ONCELY_STORE_PREFIX).
 * - Transaction mode (ONCELY_TRANSACTION=1): `transaction: true` on a PostgresStore (table
 *   ONCELY_STORE_TABLE, migrated by the parent) at ONCELY_POSTGRES_URL; after the line above,
 *   the handler INSERTs "(order, downstream_key, pid)" into the table ONCELY_EFFECTS_TABLE
 *   through `context.transaction`, so that row commits with the job's outcome or not at all.
 *
 * With ONCELY_HANG=1 the handler prints "effect" after its writes and never returns (the parent
 * SIGKILLs the process before the job completes; in transaction mode, before the COMMIT).
 * Prints "ready" once the worker runs; exits on SIGTERM after `worker.close()`.
 */
import { appendFileSync } from 'node:fs';
import { Worker, type Job } from 'bullmq';
import { Redis } from 'ioredis';
import pg from 'pg';
import { PostgresStore } from '../../stores/postgres/index.js';
import { RedisStore } from '../../stores/redis/index.js';
import type { MessageContext } from '../protocol.js';
import { idempotentProcessor } from './index.js';

const env = process.env as Record<string, string>;
const transaction = env.ONCELY_TRANSACTION === '1';
const connection = { host: '127.0.0.1', port: 6379, maxRetriesPerRequest: null };
const client = transaction ? undefined : new Redis(connection);
// One connection for the transaction, the others for claims and lease heartbeats beside it.
const pool = transaction ? new pg.Pool({ connectionString: env.ONCELY_POSTGRES_URL!, max: 3 }) : undefined;
const store = pool ? new PostgresStore({ pool, table: env.ONCELY_STORE_TABLE! }) : new RedisStore({ client: client!, prefix: env.ONCELY_STORE_PREFIX! });

const processor = idempotentProcessor<{ order: string }>(
  async (job: Job<{ order: string }>, { downstreamKey, transaction: tx }: MessageContext) => {
    appendFileSync(env.ONCELY_EFFECTS!, `${job.data.order} ${downstreamKey} ${process.pid}\n`);
    if (transaction) {
      await (tx as pg.PoolClient).query(`INSERT INTO "${env.ONCELY_EFFECTS_TABLE!}" (order_id, downstream_key, pid) VALUES ($1, $2, $3)`, [job.data.order, downstreamKey, process.pid]);
    }
    if (env.ONCELY_HANG === '1') {
      process.stdout.write('effect\n');
      await new Promise(() => setInterval(() => undefined, 1000));
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
    return { by: process.pid };
  },
  { store, transaction, key: (job) => job.data.order, leaseMs: Number(env.ONCELY_LEASE_MS), backoff: { baseMs: 200, maxMs: 200 } },
);

const worker = new Worker(env.ONCELY_QUEUE!, processor, { connection, concurrency: 4, lockDuration: 1000, stalledInterval: 300 });
worker.on('error', (error) => process.stderr.write(`worker error: ${String(error)}\n`));
await worker.waitUntilReady();
process.stdout.write('ready\n');
process.once('SIGTERM', () => {
  void worker
    .close()
    .then(() => store.close())
    .then(() => Promise.all([client?.quit(), pool?.end()]))
    .then(() => process.exit(0));
});
