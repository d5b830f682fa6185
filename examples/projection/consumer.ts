/**
 * The balance projection's consumer: one process. It consumes `PaymentReceived` events from
 * JetStream with `oncely/nats` in transaction mode on a PostgresStore: for each event it adds
 * the payment to the account's balance and logs it in the table `applied`, both through
 * `context.transaction`, the transaction the message's outcome commits in.
 *
 * argv: <stream> <consumer> <records table> <balances table> <applied table> <name> <crash-at event id | ->
 *   With an event id: after writing that event (before COMMIT and the ack) it prints "written"
 *   and hangs: the parent SIGKILLs it there. "-" handles events until SIGTERM, then exits 0.
 * stdout: one JSON line per thing worth telling (`ready`, `written`, the consumer's events).
 */
import { jetstream } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { consumeIdempotently } from 'oncely/nats';
import { PostgresStore } from 'oncely/postgres';
import pg from 'pg';
import { childSide } from '../support/child-consumers.js';
import { NATS_URL } from '../support/jetstream.js';

export interface PaymentReceived {
  type: 'PaymentReceived';
  eventId: string;
  account: string;
  cents: number;
}

const [stream, durable, records, balances, applied, name, crashAt] = process.argv.slice(-7) as [string, string, string, string, string, string, string];
const { say, hang, ready } = childSide(name);

const nc = await connect({ servers: NATS_URL });
// One connection for the transaction, the others for claims and lease heartbeats beside it (README: pool sizing).
const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test', max: 3 });
const store = new PostgresStore({ pool, table: records });

const consumer = await consumeIdempotently(
  await jetstream(nc).consumers.get(stream, durable),
  async (msg, context) => {
    const event = msg.json<PaymentReceived>();
    const tx = context.transaction as pg.PoolClient;
    await tx.query(`UPDATE "${balances}" SET cents = cents + $2 WHERE account = $1`, [event.account, event.cents]);
    await tx.query(`INSERT INTO "${applied}" (event_id, account, cents, worker) VALUES ($1, $2, $3, $4)`, [event.eventId, event.account, event.cents, name]);
    if (event.eventId === crashAt) {
      say({ event: 'written', eventId: event.eventId, delivery: msg.info.deliveryCount, account: event.account, cents: event.cents });
      await hang(); // never commits, never acks
    }
    return { account: event.account };
  },
  {
    store,
    transaction: true,
    leaseMs: 1_500, // a killed consumer's claim lapses after 1.5 s (production: the 30 s default)
    observer: (event) => say({ event: event.type, eventId: event.key, delivery: event.attempt }),
  },
);
ready(consumer, nc, store, { close: () => pool.end() });
