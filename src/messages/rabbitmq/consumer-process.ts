/**
 * A consumer process for the cross-process tests (crash.test.ts): consumes a queue with
 * consumeIdempotently() on a SQLite file shared with the other processes. Each run of the
 * handler appends `<messageId> <downstreamKey> <pid>` to the effects file; every observer event
 * is printed as a JSON line; "ready" once consuming. On stdin's end it closes and exits 0.
 *
 * argv: <queue> <mode> <effects file> <database file> <leaseMs>. Modes:
 *   run   — the handler takes 20 ms and returns.
 *   crash — after the effect it prints "effect" and never returns (the parent SIGKILLs it).
 */
import { appendFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import amqp from 'amqplib';
import { SqliteStore } from '../../stores/sqlite/index.js';
import { consumeIdempotently } from './index.js';

const [queue, mode, effects, database, leaseMs] = process.argv.slice(2) as [string, 'run' | 'crash', string, string, string];

const connection = await amqp.connect(process.env.ONCELY_RABBITMQ_URL ?? 'amqp://guest:guest@127.0.0.1:5672');
const channel = await connection.createChannel();
await channel.prefetch(4);
const store = new SqliteStore({ path: database });
const consumer = await consumeIdempotently(
  channel,
  queue,
  async (message, { downstreamKey }) => {
    appendFileSync(effects, `${String(message.properties.messageId)} ${downstreamKey} ${process.pid}\n`);
    if (mode === 'crash') {
      process.stdout.write('effect\n');
      await new Promise(() => setInterval(() => undefined, 1_000));
    }
    await sleep(20);
  },
  { store, leaseMs: Number(leaseMs), observer: (event) => process.stdout.write(`${JSON.stringify({ type: event.type, key: event.key })}\n`) },
);
process.stdout.write('ready\n');
process.stdin.resume();
process.stdin.once('end', async () => {
  await consumer.close();
  await connection.close();
  await store.close();
  process.exit(0);
});
