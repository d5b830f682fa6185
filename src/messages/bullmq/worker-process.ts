/**
 * A BullMQ worker process for the cross-process tests (`node --import tsx worker-process.ts`).
 * It consumes ONCELY_QUEUE through `idempotentProcessor` on a RedisStore (prefix
 * ONCELY_STORE_PREFIX), keyed by `job.data.order`, and appends one line per run of the handler,
 * "<order> <downstreamKey> <pid>", to ONCELY_EFFECTS. With ONCELY_HANG=1 the handler prints
 * "effect" after its write and never returns (the parent SIGKILLs the process before the ack).
 * Prints "ready" once the worker runs; exits on SIGTERM after `worker.close()`.
 */
import { appendFileSync } from 'node:fs';
import { Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { RedisStore } from '../../stores/redis/index.js';
import { idempotentProcessor } from './index.js';

const env = process.env as Record<string, string>;
const connection = { host: '127.0.0.1', port: 6379, maxRetriesPerRequest: null };
const client = new Redis(connection);
const store = new RedisStore({ client, prefix: env.ONCELY_STORE_PREFIX! });

const processor = idempotentProcessor<{ order: string }>(
  async (job, { downstreamKey }) => {
    appendFileSync(env.ONCELY_EFFECTS!, `${job.data.order} ${downstreamKey} ${process.pid}\n`);
    if (env.ONCELY_HANG === '1') {
      process.stdout.write('effect\n');
      await new Promise(() => setInterval(() => undefined, 1000));
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
    return { by: process.pid };
  },
  { store, key: (job) => job.data.order, leaseMs: Number(env.ONCELY_LEASE_MS), backoff: { baseMs: 200, maxMs: 200 } },
);

const worker = new Worker(env.ONCELY_QUEUE!, processor, { connection, concurrency: 4, lockDuration: 1000, stalledInterval: 300 });
worker.on('error', (error) => process.stderr.write(`worker error: ${String(error)}\n`));
await worker.waitUntilReady();
process.stdout.write('ready\n');
process.once('SIGTERM', () => {
  void worker.close().then(() => client.quit()).then(() => process.exit(0));
});
