/**
 * A consumer process for the cross-process tests (crash.test.ts): consumes a queue with
 * consumeIdempotently(), in one of two store modes:
 *   lease mode (`-`): a SqliteStore on the database file, shared with the other processes;
 *   transaction mode (`<records table>,<effects table>`): `transaction: true` on a PostgresStore
 *     with that records table (ONCELY_POSTGRES_URL, default postgres://postgres@127.0.0.1:5432/test);
 *     each run then also INSERTs its effect (key, downstreamKey, pid) into the effects table
 *     through `context.transaction`, after appending its line to the effects file (outside the
 *     transaction), so a kill while it hangs comes before the COMMIT and the ack.
 * Each run of the handler appends `<messageId> <downstreamKey> <pid>` to the effects file; every
 * observer event is printed as a JSON line; "ready" once consuming. On stdin's end it closes and
 * exits 0.
 *
 * argv: <queue> <mode> <effects file> <database file> <leaseMs> <transaction>. Modes:
 *   run   — the handler takes 20 ms and returns.
 *   crash — after the effect it prints "effect" and never returns (the parent SIGKILLs it).
 */
import { appendFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import amqp from 'amqplib';
import pg from 'pg';
import { PostgresStore } from '../../stores/postgres/index.js';
import { SqliteStore } from '../../stores/sqlite/index.js';
import { consumeIdempotently } from './index.js';

const [queue, mode, effects, database, leaseMs, transaction = '-'] = process.argv.slice(2) as [string, 'run' | 'crash', string, string, string, string?];
const [records, effectsTable] = transaction === '-' ? [] : transaction.split(',');
const PREFETCH = 4;

const connection = await amqp.connect(process.env.ONCELY_RABBITMQ_URL ?? 'amqp://guest:guest@127.0.0.1:5672');
const channel = await connection.createChannel();
await channel.prefetch(PREFETCH);
// Transaction mode: one connection for each of the prefetched messages' transactions, one for claims and heartbeats.
const pool = records ? new pg.Pool({ connectionString: process.env.ONCELY_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test', max: PREFETCH + 1 }) : undefined;
const store = pool ? new PostgresStore({ pool, table: records! }) : new SqliteStore({ path: database });
const consumer = await consumeIdempotently(
  channel,
  queue,
  async (message, { downstreamKey, key, transaction: tx }) => {
    appendFileSync(effects, `${String(message.properties.messageId)} ${downstreamKey} ${process.pid}\n`);
    if (pool) await (tx as pg.PoolClient).query(`INSERT INTO "${effectsTable}" (key, downstream_key, pid) VALUES ($1, $2, $3)`, [key, downstreamKey, process.pid]);
    if (mode === 'crash') {
      process.stdout.write('effect\n');
      await new Promise(() => setInterval(() => undefined, 1_000));
    }
    await sleep(20);
  },
  {
    store,
    leaseMs: Number(leaseMs),
    observer: (event) => process.stdout.write(`${JSON.stringify({ type: event.type, key: event.key })}\n`),
    ...(pool ? { transaction: true } : {}),
  },
);
process.stdout.write('ready\n');
process.stdin.resume();
process.stdin.once('end', async () => {
  await consumer.close();
  await connection.close();
  await store.close();
  await pool?.end();
  process.exit(0);
});
