/**
 * consumeIdempotently() across real consumer processes (consumer-process.ts) on one RabbitMQ
 * queue and one SQLite file: a consumer SIGKILLed after the side effect and before the ack
 * leaves the message to the next consumer, which runs it once more after the lease (the
 * documented at-least-once case) with the same downstreamKey; two processes competing on
 * interleaved duplicates run each message once.
 * In transaction mode on a PostgresStore, the same SIGKILL (after the effect's INSERT through
 * `context.transaction`, before the COMMIT and the ack) rolls the effect back: the redelivery to
 * the next process writes it once, with the same downstreamKey, and a second copy of the message
 * (one messageId published twice) is acked without a second effect row.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import amqp, { type Channel, type ChannelModel } from 'amqplib';
import pg from 'pg';
import { PostgresStore } from '../../stores/postgres/index.js';
import { POSTGRES_URL, skipUnlessReachable } from '../../../test/support/services.js';

const RABBITMQ_URL = process.env.ONCELY_RABBITMQ_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
const CONSUMER = fileURLToPath(new URL('./consumer-process.ts', import.meta.url));
const skip = (await skipUnlessReachable('RabbitMQ', RABBITMQ_URL)) ?? false;
const postgresSkip = skip || (await skipUnlessReachable('PostgreSQL', POSTGRES_URL));
const pool = new pg.Pool({ connectionString: POSTGRES_URL, max: 2 });
/** Tables of the transaction-mode test, dropped in `after`. */
const tables: string[] = [];
const directory = mkdtempSync(join(tmpdir(), 'oncely-rabbitmq-'));

let connection: ChannelModel;
let admin: Channel;
const queues: string[] = [];
/** Every consumer process started, killed in `after` if a failed test left it running. */
const children: ChildProcess[] = [];

before(async () => {
  if (skip) return;
  connection = await amqp.connect(RABBITMQ_URL);
  admin = await connection.createChannel();
});
after(async () => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  if (!skip) {
    for (const queue of queues) await admin.deleteQueue(queue).catch(() => undefined);
    await connection.close();
  }
  if (tables.length > 0) await pool.query(`DROP TABLE IF EXISTS ${tables.map((table) => `"${table}"`).join(', ')}`);
  await pool.end();
  rmSync(directory, { recursive: true, force: true });
});

async function queue(): Promise<string> {
  const name = `oncely-test-${randomUUID()}`;
  await admin.assertQueue(name, { durable: true, arguments: { 'x-queue-type': 'quorum' } });
  queues.push(name);
  return name;
}

interface Event {
  type: string;
  key: string;
}

/**
 * Starts a consumer process. `transaction`: `-` for lease mode on the SQLite file `database`, or
 * `<records table>,<effects table>` for transaction mode on a PostgresStore.
 */
function startConsumer(queueName: string, mode: 'run' | 'crash', effects: string, database: string, leaseMs: number, transaction = '-') {
  const child = spawn(process.execPath, ['--import', 'tsx', CONSUMER, queueName, mode, effects, database, String(leaseMs), transaction], { stdio: ['pipe', 'pipe', 'inherit'] });
  children.push(child);
  let output = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (chunk: string) => (output += chunk));
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  const lines = () => output.split('\n').filter(Boolean);
  return {
    child,
    exited,
    printed: (line: string) => until(() => lines().includes(line), `"${line}" from consumer ${child.pid}`),
    events: (): Event[] => lines().filter((line) => line.startsWith('{')).map((line) => JSON.parse(line) as Event),
    stop: async () => {
      child.stdin.end();
      assert.equal(await exited, 0, `consumer ${child.pid} failed: ${output}`);
    },
  };
}

async function until(condition: () => boolean, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** The effects file: one `[messageId, downstreamKey, pid]` per run of a handler. */
const runs = (effects: string) => readFileSync(effects, 'utf8').split('\n').filter(Boolean).map((line) => line.split(' ') as [string, string, string]);

describe('consumeIdempotently() across consumer processes (SQLite store)', { skip }, () => {
  it('a consumer killed after the effect, before the ack: the next runs it once more after the lease, with the same downstreamKey', async () => {
    const name = await queue();
    const effects = join(directory, `effects-${randomUUID()}`);
    const database = join(directory, `records-${randomUUID()}.db`);
    writeFileSync(effects, '');
    const leaseMs = 1_500;

    const doomed = startConsumer(name, 'crash', effects, database, leaseMs);
    await doomed.printed('ready');
    admin.sendToQueue(name, Buffer.from('welcome user 42'), { messageId: 'welcome-42' });
    await doomed.printed('effect');
    // The next consumer is up before the kill, so the redelivery reaches it within the dead holder's lease.
    const next = startConsumer(name, 'run', effects, database, leaseMs);
    await next.printed('ready');
    doomed.child.kill('SIGKILL');
    await doomed.exited;

    await until(() => next.events().some((event) => event.type === 'processed'), 'the run after the lease');
    assert.ok(next.events().some((event) => event.type === 'in_progress'), 'the redelivery waited for the dead holder\'s lease');
    admin.sendToQueue(name, Buffer.from('welcome user 42'), { messageId: 'welcome-42' });
    await until(() => next.events().some((event) => event.type === 'duplicate'), 'the later duplicate');
    await next.stop();

    const done = runs(effects);
    assert.equal(done.length, 2, 'at-least-once on crash: exactly one repeat, then never again');
    assert.deepEqual(done.map(([id]) => id), ['welcome-42', 'welcome-42']);
    assert.equal(done[0]![1], done[1]![1], 'both runs passed the same downstreamKey, so the email API can drop the repeat');
    assert.notEqual(done[0]![2], done[1]![2]);
    assert.equal((await admin.checkQueue(name)).messageCount, 0);
  });

  it('two consumer processes competing on interleaved duplicates run each message once', async () => {
    const name = await queue();
    const effects = join(directory, `effects-${randomUUID()}`);
    const database = join(directory, `records-${randomUUID()}.db`);
    writeFileSync(effects, '');
    const consumers = [startConsumer(name, 'run', effects, database, 1_000), startConsumer(name, 'run', effects, database, 1_000)];
    await Promise.all(consumers.map((consumer) => consumer.printed('ready')));
    const ids = Array.from({ length: 10 }, (_, i) => `order-${i}`);
    for (let copy = 0; copy < 3; copy++) for (const id of ids) admin.sendToQueue(name, Buffer.from(`pay ${id}`), { messageId: id });
    const settled = () => consumers.flatMap((consumer) => consumer.events()).filter((event) => event.type === 'processed' || event.type === 'duplicate').length;
    await until(() => settled() === 30, 'thirty settled deliveries');
    await Promise.all(consumers.map((consumer) => consumer.stop()));

    const done = runs(effects);
    assert.deepEqual(done.map(([id]) => id).sort(), [...ids].sort(), 'each message ran exactly once');
    assert.ok(consumers.every((consumer) => consumer.events().some((event) => event.type === 'processed' || event.type === 'duplicate')), 'both processes took deliveries');
    assert.equal((await admin.checkQueue(name)).messageCount, 0);
  });
});

describe('consumeIdempotently() across consumer processes in transaction mode (PostgresStore)', { skip: postgresSkip }, () => {
  it('SIGKILL after the INSERT, before the COMMIT and the ack: rolled back, the redelivery writes it once with the same downstreamKey; a second copy writes nothing', async () => {
    const name = await queue();
    const effects = join(directory, `effects-${randomUUID()}`);
    writeFileSync(effects, '');
    const records = `oncely_rmqx_${randomUUID().slice(0, 8)}`;
    const effectsTable = `${records}_effects`;
    tables.push(records, `${records}_migrations`, effectsTable);
    await new PostgresStore({ pool, table: records }).migrate();
    // No unique constraint: an effect applied twice would show as two rows.
    await pool.query(`CREATE TABLE "${effectsTable}" (key text NOT NULL, downstream_key text NOT NULL, pid integer NOT NULL)`);
    const rows = async () => (await pool.query<{ key: string; downstream_key: string; pid: number }>(`SELECT key, downstream_key, pid FROM "${effectsTable}"`)).rows;
    const tx = `${records},${effectsTable}`;
    const leaseMs = 1_500;

    const doomed = startConsumer(name, 'crash', effects, '-', leaseMs, tx);
    await doomed.printed('ready');
    admin.sendToQueue(name, Buffer.from('project payment 42'), { messageId: 'payment-42' });
    await doomed.printed('effect');
    assert.deepEqual(await rows(), [], 'the INSERT is inside the open transaction, not committed');
    // The next consumer is up before the kill, so the redelivery reaches it within the dead holder's lease.
    const next = startConsumer(name, 'run', effects, '-', leaseMs, tx);
    await next.printed('ready');
    doomed.child.kill('SIGKILL');
    await doomed.exited;

    await until(() => next.events().some((event) => event.type === 'processed'), 'the redelivery processed');
    admin.sendToQueue(name, Buffer.from('project payment 42'), { messageId: 'payment-42' });
    await until(() => next.events().some((event) => event.type === 'duplicate'), 'the second copy');
    await next.stop();

    const done = runs(effects);
    assert.deepEqual(
      done.map(([id, , pid]) => [id, Number(pid)]),
      [
        ['payment-42', doomed.child.pid],
        ['payment-42', next.child.pid],
      ],
      'the handler ran in the killed process and once in the next, not for the second copy',
    );
    assert.equal(done[0]![1], done[1]![1], 'the same downstreamKey both times');
    assert.deepEqual(await rows(), [{ key: 'payment-42', downstream_key: done[0]![1], pid: next.child.pid }], "exactly one effect row: the killed transaction's INSERT rolled back");
    // `in_progress` first when the redelivery meets the dead holder's lease (the usual case); on a slow machine it may come after the lease.
    assert.deepEqual(
      next.events().filter((event) => event.type !== 'in_progress'),
      [
        { type: 'processed', key: 'payment-42' },
        { type: 'duplicate', key: 'payment-42' },
      ],
    );
    // The next consumer's connection is closed: a delivery left unacked would be back in the queue.
    assert.equal((await admin.checkQueue(name)).messageCount, 0, 'both deliveries acked');
  });
});
