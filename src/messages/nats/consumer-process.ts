/**
 * A consumer process for cross-process.test.ts: consumes the durable consumer named by argv and
 * appends one JSON line per handler run to the effects file, in one of two store modes:
 *   lease mode (`-`): a SqliteStore at <sqlite path>, shared with the other processes;
 *   transaction mode (`<records table>,<effects table>`): `transaction: true` on a PostgresStore
 *     with that records table; each run then also INSERTs its effect (key, downstreamKey, pid)
 *     into the effects table through `context.transaction`, after appending its line (outside
 *     the transaction), and prints the consumer's observer events as `event <type> <key>`.
 *
 * argv: <mode> <stream> <consumer> <sqlite path> <effects file> <leaseMs> <transaction>. Modes:
 *   crash — after its first side effect, prints "effect" and never returns (the parent SIGKILLs
 *           it; in transaction mode that is before the COMMIT and the ack).
 *   run   — handles messages until SIGTERM, then closes gracefully and exits.
 */
import { appendFileSync } from 'node:fs';
import { jetstream } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import pg from 'pg';
import { PostgresStore } from '../../stores/postgres/index.js';
import { SqliteStore } from '../../stores/sqlite/index.js';
import { consumeIdempotently } from './index.js';

const [mode, stream, durable, database, effects, leaseMs, transaction] = process.argv.slice(-7) as [string, string, string, string, string, string, string];
const [records, effectsTable] = transaction === '-' ? [] : transaction.split(',');

const nc = await connect({ servers: 'nats://127.0.0.1:4222' });
// Transaction mode: one connection for each of the 2 concurrent transactions, one for claims and heartbeats.
const pool = records ? new pg.Pool({ connectionString: process.env.ONCELY_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test', max: 3 }) : undefined;
const store = pool ? new PostgresStore({ pool, table: records! }) : new SqliteStore({ path: database });
const consumer = await consumeIdempotently(
  await jetstream(nc).consumers.get(stream, durable),
  async (msg, { downstreamKey, key, transaction: tx }) => {
    appendFileSync(effects, `${JSON.stringify({ pid: process.pid, key, body: msg.string(), downstreamKey })}\n`);
    if (pool) await (tx as pg.PoolClient).query(`INSERT INTO "${effectsTable}" (key, downstream_key, pid) VALUES ($1, $2, $3)`, [key, downstreamKey, process.pid]);
    if (mode === 'crash') {
      process.stdout.write('effect\n');
      await new Promise(() => setInterval(() => undefined, 1_000));
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  },
  {
    store,
    leaseMs: Number(leaseMs),
    concurrency: 2,
    ...(pool ? { transaction: true, observer: (event: { type: string; key?: string }) => void process.stdout.write(`event ${event.type} ${event.key}\n`) } : {}),
  },
);
process.once('SIGTERM', () => {
  void consumer
    .close()
    .then(() => nc.close())
    .then(() => store.close())
    .then(() => pool?.end())
    .then(() => process.exit(0));
});
process.stdout.write('ready\n');
