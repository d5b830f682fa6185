/**
 * An event-sourced balance projection that is killed between its write and its ack.
 *
 * `PaymentReceived` events go through JetStream, each published twice with one `Nats-Msg-Id`
 * (a producer that retried). Consumer 1, a child process running `oncely/nats` with
 * `transaction: true` on a PostgresStore, adds each payment to a balance through
 * `context.transaction`; on the third event it is SIGKILLed after the UPDATE and before the
 * COMMIT and the ack. PostgreSQL rolls that transaction back, the write and the message's
 * outcome together; consumer 2, another process, gets the redelivery after consumer 1's lease
 * and applies it; every second copy is acked without running. The balances and the events
 * applied are read from PostgreSQL afterwards, and the program exits 1 unless every balance is
 * the sum of its account's distinct events, each applied once.
 *
 * Needs PostgreSQL (DATABASE_URL, default postgres://postgres@127.0.0.1:5432/test) and
 * nats-server with JetStream (NATS_URL, default nats://127.0.0.1:4222).
 * Run: npm run example:projection
 */
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { PostgresStore } from 'oncely/postgres';
import pg from 'pg';
import { conclude, fail, killChildren, startChild, tell, waitFor, type ChildLine } from '../support/child-consumers.js';
import { JetStreamQueue } from '../support/jetstream.js';
import type { PaymentReceived } from './consumer.js';

const DATABASE_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const CONSUMER = fileURLToPath(new URL('./consumer.ts', import.meta.url));

const EVENTS: PaymentReceived[] = [
  { type: 'PaymentReceived', eventId: 'pay-1', account: 'alice', cents: 5_000 },
  { type: 'PaymentReceived', eventId: 'pay-2', account: 'bob', cents: 1_250 },
  { type: 'PaymentReceived', eventId: 'pay-3', account: 'alice', cents: 2_500 }, // consumer 1 dies writing this one
  { type: 'PaymentReceived', eventId: 'pay-4', account: 'carol', cents: 999 },
  { type: 'PaymentReceived', eventId: 'pay-5', account: 'bob', cents: 750 },
];
const CRASH_AT = 'pay-3';
const ACCOUNTS = [...new Set(EVENTS.map((event) => event.account))];

const money = (cents: number) => (cents / 100).toFixed(2);

const run = randomUUID().slice(0, 8);
const stream = `projection_${run}`;
const durable = 'balances';
const records = `oncely_projection_${run}`;
const balances = `projection_${run}_balances`;
const applied = `projection_${run}_applied`;

const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 2 });
const queue = await JetStreamQueue.connect(stream, durable);

console.log('oncely example: a balance projection killed between its write and its ack (transaction mode, PostgreSQL).');
console.log(`JetStream stream ${stream}, consumer ${durable}; PostgreSQL tables ${balances}, ${applied}, ${records}\n`);

try {
  const store = new PostgresStore({ pool, table: records });
  await store.migrate();
  await store.close();
  await pool.query(`CREATE TABLE "${balances}" (account text PRIMARY KEY, cents bigint NOT NULL)`);
  await pool.query(`INSERT INTO "${balances}" (account, cents) SELECT unnest($1::text[]), 0`, [ACCOUNTS]);
  // No unique constraint: a payment applied twice would show as two rows.
  await pool.query(`CREATE TABLE "${applied}" (event_id text NOT NULL, account text NOT NULL, cents bigint NOT NULL, worker text NOT NULL)`);
  // A 100 ms dedupe window stands in for a producer that retries later than JetStream's window
  // (2 min by default): the second copy is stored and delivered. AckWait 1 s (≥ leaseMs / 2).
  await queue.create();

  for (const event of EVENTS) await publish(event);
  for (const event of EVENTS) await publish(event);
  tell(`producer: published ${EVENTS.length} PaymentReceived events, then each again with the same Nats-Msg-Id (${EVENTS.length * 2} stream messages)`);

  const consumer1 = await startConsumer('consumer 1', CRASH_AT);
  const atCrash = await consumer1.line('written');
  const seen = await balanceOf(String(atCrash.account));
  tell(`outside the transaction, ${String(atCrash.account)}'s balance still reads ${money(seen)}: the UPDATE is not committed`);
  await consumer1.kill();
  tell('consumer 1: SIGKILLed between the write and the COMMIT/ack; PostgreSQL rolls its transaction back');

  const consumer2 = await startConsumer('consumer 2', '-');
  const total = EVENTS.length * 2;
  await waitFor(`all ${total} stream messages acked`, async () => (await queue.ackedThrough()) >= total);
  await consumer2.stop();

  // What PostgreSQL and JetStream hold.
  const rows = (await pool.query<{ account: string; cents: string }>(`SELECT account, cents FROM "${balances}" ORDER BY account`)).rows;
  const log = (await pool.query<{ event_id: string; worker: string }>(`SELECT event_id, worker FROM "${applied}" ORDER BY event_id`)).rows;
  const acked = await queue.ackedThrough();

  console.log();
  const table: string[][] = [['account', 'balance', 'sum of its distinct events', 'events', '']];
  let balancesOk = true;
  for (const { account, cents } of rows) {
    const events = EVENTS.filter((event) => event.account === account);
    const expected = events.reduce((sum, event) => sum + event.cents, 0);
    const ok = Number(cents) === expected;
    balancesOk &&= ok;
    table.push([account, money(Number(cents)), money(expected), events.map((event) => event.eventId).join(', '), ok ? '✓' : '✗']);
  }
  printTable(table);
  const distinct = new Set(log.map((row) => row.event_id));
  const appliedOk = log.length === EVENTS.length && distinct.size === EVENTS.length;
  const ackedOk = acked === total;
  console.log();
  console.log(`events applied (rows in ${applied}): ${log.length}, ${distinct.size} distinct, of ${EVENTS.length} events  ${appliedOk ? '✓' : '✗'}`);
  console.log(`  by ${[...new Set(log.map((row) => row.worker))].map((worker) => `${worker}: ${log.filter((row) => row.worker === worker).map((row) => row.event_id).join(', ')}`).join('; ')}`);
  console.log(`messages acked (JetStream ack floor): ${acked} of ${total}  ${ackedOk ? '✓' : '✗'}`);

  const ok = balancesOk && appliedOk && ackedOk && rows.length === ACCOUNTS.length;
  if (ok) {
    console.log(`\n${CRASH_AT} was written by consumer 1 and rolled back with its outcome, then applied once by consumer 2;`);
    console.log('every second copy found its stored outcome and was acked without running.');
  }
  conclude(ok, 'every balance is the sum of its distinct events, each applied once');
} catch (error) {
  fail(error);
} finally {
  killChildren();
  await queue.destroy();
  await pool.query(`DROP TABLE IF EXISTS "${records}", "${records}_migrations", "${balances}", "${applied}"`).catch(() => undefined);
  await pool.end();
}

/** Publishes an event until JetStream stores it as a message of its own. */
async function publish(event: PaymentReceived): Promise<void> {
  await queue.publish(event.account, JSON.stringify(event), event.eventId);
}

async function balanceOf(account: string): Promise<number> {
  return Number((await pool.query<{ cents: string }>(`SELECT cents FROM "${balances}" WHERE account = $1`, [account])).rows[0]?.cents);
}

/** Starts a consumer process; resolves once it consumes. Its lines are told as they come. */
function startConsumer(name: string, crashAt: string) {
  const role = crashAt === '-' ? undefined : `will be killed while writing ${crashAt}`;
  return startChild({ name, file: CONSUMER, args: [stream, durable, records, balances, applied, name, crashAt], role, describe });
}

function describe(line: ChildLine): string {
  const delivery = `${String(line.eventId)} (delivery ${String(line.delivery)})`;
  switch (line.event) {
    case 'written':
      return `${delivery}: ${String(line.account)} += ${money(Number(line.cents))} written through context.transaction, not committed`;
    case 'processed':
      return `${delivery}: applied, committed with its outcome, acked`;
    case 'duplicate':
      return `${delivery}: already applied, acked without running`;
    case 'in_progress':
      return `${delivery}: claimed by consumer 1 until its lease lapses, handed back for 1.5 s`;
    default:
      return `${delivery}: ${line.event}`;
  }
}

function printTable([header, ...body]: string[][]): void {
  const widths = header!.map((title, column) => Math.max(title.length, ...body.map((row) => row[column]!.length)) + 3);
  const line = (cells: string[]) => cells.map((cell, column) => (column === 1 || column === 2 ? cell.padStart(widths[column]! - 3).padEnd(widths[column]!) : cell.padEnd(widths[column]!))).join('').trimEnd();
  console.log(line(header!));
  for (const row of body) console.log(line(row));
}
