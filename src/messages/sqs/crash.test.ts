/**
 * oncely/sqs across real consumer processes (src/messages/sqs/consumer-process.ts) on one SQLite
 * file and the fauxqs this process starts:
 * - a consumer SIGKILLed after the handler's side effect and before the delete: SQS redelivers
 *   after the visibility timeout, another process runs the handler again once (lease mode is
 *   at-least-once on a crash) with the same downstreamKey, and the message is deleted;
 * - two processes competing on one queue with duplicates interleaved: each effect once;
 * - in transaction mode on a PostgresStore, the same kill (after the effect's INSERT through
 *   `context.transaction`, before the COMMIT and the delete) rolls the effect back: another
 *   process writes it once, with the same downstreamKey, and a second message with the same
 *   identity is deleted without a second effect row.
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
import { CreateQueueCommand, DeleteQueueCommand, GetQueueAttributesCommand, SendMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import { startFauxqs, type FauxqsServer } from 'fauxqs';
import pg from 'pg';
import { PostgresStore } from '../../stores/postgres/index.js';
import { SqliteStore } from '../../stores/sqlite/index.js';
import { POSTGRES_URL, skipUnlessReachable } from '../../../test/support/services.js';

const CONSUMER = fileURLToPath(new URL('./consumer-process.ts', import.meta.url));
const directory = mkdtempSync(join(tmpdir(), 'oncely-sqs-crash-'));
const children = new Set<ChildProcess>();
const queues: string[] = [];
const postgresSkip = await skipUnlessReachable('PostgreSQL', POSTGRES_URL);
const pool = new pg.Pool({ connectionString: POSTGRES_URL, max: 2 });
const tables: string[] = [];
let server: FauxqsServer;
let client: SQSClient;

before(async () => {
  server = await startFauxqs({ port: 0, logger: false });
  client = new SQSClient({ endpoint: server.address, region: 'us-east-1', credentials: { accessKeyId: 'test', secretAccessKey: 'test' } });
});
after(async () => {
  for (const child of children) child.kill('SIGKILL');
  await Promise.all(queues.map((url) => client.send(new DeleteQueueCommand({ QueueUrl: url }))));
  client.destroy();
  await server.stop();
  rmSync(directory, { recursive: true, force: true });
  if (tables.length > 0) await pool.query(`DROP TABLE IF EXISTS ${tables.map((table) => `"${table}"`).join(', ')}`);
  await pool.end();
});

async function setup(): Promise<{ url: string; db: string; effects: string }> {
  const { QueueUrl } = await client.send(new CreateQueueCommand({ QueueName: `oncely-${randomUUID()}`, Attributes: { VisibilityTimeout: '1' } }));
  queues.push(QueueUrl!);
  const db = join(directory, `${randomUUID()}.db`);
  // Migrated once here, so the children do not race to create the tables.
  new SqliteStore({ path: db }).close();
  const effects = join(directory, `${randomUUID()}.log`);
  writeFileSync(effects, '');
  return { url: QueueUrl!, db, effects };
}

/**
 * A consumer process; resolves once it polls. `onEffect` hears each effect it reports. With
 * `transaction` (`<records table>,<effects table>`) it runs in transaction mode on a
 * PostgresStore, and its observer events (`<type>:<key>`) are pushed to `events`.
 */
async function startConsumer(
  setupInfo: { url: string; db: string; effects: string },
  hang: boolean,
  onEffect: () => void = () => undefined,
  transaction?: { tables: string; events: string[] },
): Promise<ChildProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', CONSUMER], {
    env: {
      ...process.env,
      ONCELY_SQS_ENDPOINT: server.address,
      ONCELY_SQS_QUEUE: setupInfo.url,
      ONCELY_SQS_DB: setupInfo.db,
      ONCELY_SQS_EFFECTS: setupInfo.effects,
      ONCELY_SQS_HANG: hang ? '1' : '0',
      ONCELY_SQS_TRANSACTION: transaction?.tables ?? '',
    },
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  children.add(child);
  child.once('exit', () => children.delete(child));
  await new Promise<void>((resolve, reject) => {
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (chunk: string) => {
      if (chunk.includes('ready')) resolve();
      for (const _ of chunk.matchAll(/effect/g)) onEffect();
      for (const [, event] of chunk.matchAll(/^event:(.*)$/gm)) transaction?.events.push(event!);
    });
    child.once('exit', (code) => reject(new Error(`consumer exited with ${code}`)));
  });
  return child;
}

const stop = (child: ChildProcess) => new Promise<void>((resolve) => (child.once('exit', () => resolve()), child.kill('SIGTERM')));
const effectLines = (path: string) => readFileSync(path, 'utf8').split('\n').filter(Boolean);

async function depth(url: string): Promise<number> {
  const { Attributes } = await client.send(new GetQueueAttributesCommand({ QueueUrl: url, AttributeNames: ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesNotVisible', 'ApproximateNumberOfMessagesDelayed'] }));
  return Number(Attributes!.ApproximateNumberOfMessages) + Number(Attributes!.ApproximateNumberOfMessagesNotVisible) + Number(Attributes!.ApproximateNumberOfMessagesDelayed);
}

async function until(condition: () => boolean | Promise<boolean>, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

describe('oncely/sqs across processes (SqliteStore)', { concurrency: true }, () => {
  it('a consumer killed after the effect, before the delete: another process repeats it once, with the same downstreamKey', async () => {
    const info = await setup();
    let effectSeen = false;
    const doomed = await startConsumer(info, true, () => (effectSeen = true));
    await client.send(new SendMessageCommand({ QueueUrl: info.url, MessageBody: 'welcome user 42' }));
    await until(() => effectSeen, 'the first effect');
    doomed.kill('SIGKILL');
    const survivor = await startConsumer(info, false);
    await until(async () => (await depth(info.url)) === 0, 'the redelivery to be deleted');
    await stop(survivor);
    const lines = effectLines(info.effects);
    assert.equal(lines.length, 2, 'at-least-once on a crash: exactly one repeat');
    const [first, second] = lines.map((line) => line.split(' '));
    assert.equal(first!.at(-1), second!.at(-1), 'the same downstreamKey both times, for the email API to deduplicate');
  });

  it('two processes competing on one queue with duplicates interleaved: each effect once', async () => {
    const info = await setup();
    const consumers = await Promise.all([startConsumer(info, false), startConsumer(info, false)]);
    for (let round = 0; round < 3; round++) {
      await Promise.all(Array.from({ length: 6 }, (_, n) => client.send(new SendMessageCommand({ QueueUrl: info.url, MessageBody: `order-${n}`, MessageAttributes: { eventId: { DataType: 'String', StringValue: `order-${n}` } } }))));
    }
    await until(async () => (await depth(info.url)) === 0, 'the queue to drain');
    await Promise.all(consumers.map(stop));
    const bodies = effectLines(info.effects).map((line) => line.split(' ')[0]);
    assert.deepEqual(bodies.sort(), Array.from({ length: 6 }, (_, n) => `order-${n}`).sort());
  });
});

describe('oncely/sqs across processes in transaction mode (PostgresStore)', { skip: postgresSkip }, () => {
  it('a consumer killed after the INSERT, before the COMMIT and the delete: rolled back, another process writes it once with the same downstreamKey; a second copy writes nothing', async () => {
    const info = await setup();
    const records = `oncely_sqsx_${randomUUID().slice(0, 8)}`;
    const effectsTable = `${records}_effects`;
    tables.push(records, `${records}_migrations`, effectsTable);
    await new PostgresStore({ pool, table: records }).migrate();
    // No unique constraint: an effect applied twice would show as two rows.
    await pool.query(`CREATE TABLE "${effectsTable}" (key text NOT NULL, downstream_key text NOT NULL, pid integer NOT NULL)`);
    const rows = async () => (await pool.query<{ key: string; downstream_key: string; pid: number }>(`SELECT key, downstream_key, pid FROM "${effectsTable}"`)).rows;
    const send = () => client.send(new SendMessageCommand({ QueueUrl: info.url, MessageBody: 'project payment 42', MessageAttributes: { eventId: { DataType: 'String', StringValue: 'payment-42' } } }));

    let effectSeen = false;
    const doomed = await startConsumer(info, true, () => (effectSeen = true), { tables: `${records},${effectsTable}`, events: [] });
    await send();
    await until(() => effectSeen, 'the first effect');
    doomed.kill('SIGKILL');
    const events: string[] = [];
    const survivor = await startConsumer(info, false, undefined, { tables: `${records},${effectsTable}`, events });
    await until(async () => (await rows()).length > 0 && (await depth(info.url)) === 0, 'the redelivery written and deleted');
    await send();
    await until(async () => events.includes('duplicate:payment-42') && (await depth(info.url)) === 0, 'the second copy deleted');
    await stop(survivor);

    const lines = effectLines(info.effects).map((line) => line.split(' '));
    assert.equal(lines.length, 2, 'the handler ran in the killed process and once in the survivor, not for the second copy');
    assert.equal(lines[0]!.at(-1), lines[1]!.at(-1), 'the same downstreamKey both times');
    assert.deepEqual(await rows(), [{ key: 'payment-42', downstream_key: lines[0]!.at(-1), pid: survivor.pid }], "exactly one effect row: the killed transaction's INSERT rolled back");
    // An `in_progress` first is allowed: the redelivery can outrun the killed process's lease.
    assert.deepEqual(
      events.filter((event) => !event.startsWith('in_progress:')),
      ['processed:payment-42', 'duplicate:payment-42'],
    );
  });
});
