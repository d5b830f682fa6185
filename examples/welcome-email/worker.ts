/**
 * The welcome-email worker: one process of the fleet. It consumes the JetStream work queue with
 * `oncely/nats` (records in a SqliteStore file that every worker shares) and, for each
 * "send welcome email to user N", calls the email provider with `context.downstreamKey` as the
 * idempotency key. Each handler run is logged in the table `handler_runs` of the same file.
 *
 * argv: <stream> <consumer> <worker.db> <email-provider.db> <name> <crash-after-send|run>
 *   crash-after-send — after the provider answers, prints "sent" and hangs before returning,
 *                      so before the ack: the parent SIGKILLs it there.
 *   run              — handles messages until SIGTERM, then closes and exits 0.
 * stdout: one JSON line per thing worth telling (`ready`, `sent`, the consumer's events).
 */
import { jetstream } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import Database from 'better-sqlite3';
import { consumeIdempotently } from 'oncely/nats';
import { SqliteStore } from 'oncely/sqlite';
import { childSide } from '../support/child-consumers.js';
import { NATS_URL } from '../support/jetstream.js';
import { FakeEmailProvider } from './email-provider.js';

const [stream, durable, workerDb, providerDb, name, mode] = process.argv.slice(-6) as [string, string, string, string, string, string];
const { say, hang, ready } = childSide(name);

const nc = await connect({ servers: NATS_URL });
const store = new SqliteStore({ path: workerDb });
const log = new Database(workerDb, { timeout: 5_000 });
log.exec('CREATE TABLE IF NOT EXISTS handler_runs (worker TEXT NOT NULL, pid INTEGER NOT NULL, delivery INTEGER NOT NULL, downstream_key TEXT NOT NULL)');
const logRun = log.prepare<[string, number, number, string]>('INSERT INTO handler_runs (worker, pid, delivery, downstream_key) VALUES (?, ?, ?, ?)');
const provider = new FakeEmailProvider(providerDb);

const consumer = await consumeIdempotently(
  await jetstream(nc).consumers.get(stream, durable),
  async (msg, { downstreamKey }) => {
    const { userId } = msg.json<{ userId: number }>();
    logRun.run(name, process.pid, msg.info.deliveryCount, downstreamKey);
    const result = await provider.send({ to: `user-${userId}@example.com`, template: 'welcome' }, { idempotencyKey: downstreamKey });
    say({ event: 'sent', seq: msg.info.streamSequence, delivery: msg.info.deliveryCount, downstreamKey, ...result });
    if (mode === 'crash-after-send') await hang(); // never acked
    return result;
  },
  {
    store,
    leaseMs: 1_500, // a killed worker's claim lapses after 1.5 s (production: the 30 s default)
    observer: (event) => say({ event: event.type, key: event.key, delivery: event.attempt }),
  },
);
ready(consumer, nc, store, log, provider);
