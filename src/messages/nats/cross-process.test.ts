/**
 * oncely/nats across real consumer processes sharing one SqliteStore file: a process SIGKILLed
 * after the side effect and before the ack leaves the message to another process, which runs it
 * again exactly once with the same downstreamKey (lease mode's documented at-least-once case);
 * two processes competing on one durable consumer, with every message published twice, run each
 * message once.
 * In transaction mode on a PostgresStore, the same SIGKILL (after the effect's INSERT through
 * `context.transaction`, before the COMMIT and the ack) rolls the effect back: the redelivery to
 * another process writes it once, with the same downstreamKey, and a second copy of the message
 * (one Nats-Msg-Id published twice) is acked without a second effect row.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { jetstream, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { connect, headers } from '@nats-io/transport-node';
import pg from 'pg';
import { PostgresStore } from '../../stores/postgres/index.js';
import { POSTGRES_URL, skipUnlessReachable } from '../../../test/support/services.js';

const NATS_URL = 'nats://127.0.0.1:4222';
const CHILD = fileURLToPath(new URL('./consumer-process.ts', import.meta.url));
const skip = await skipUnlessReachable('NATS JetStream', NATS_URL);
const postgresSkip = skip ?? (await skipUnlessReachable('PostgreSQL', POSTGRES_URL));
const pool = new pg.Pool({ connectionString: POSTGRES_URL, max: 2 });
const tables: string[] = [];
const nc = skip ? undefined : await connect({ servers: NATS_URL });
const jsm = (nc ? await jetstreamManager(nc) : undefined) as JetStreamManager;
const directory = mkdtempSync(join(tmpdir(), 'oncely-nats-'));
const children = new Set<ChildProcess>();
const streams: string[] = [];
after(async () => {
  for (const child of children) child.kill('SIGKILL');
  for (const name of streams) await jsm.streams.delete(name).catch(() => undefined);
  await nc?.close();
  if (tables.length > 0) await pool.query(`DROP TABLE IF EXISTS ${tables.map((table) => `"${table}"`).join(', ')}`);
  await pool.end();
  rmSync(directory, { recursive: true, force: true });
});

interface Effect {
  pid: number;
  key: string;
  body: string;
  downstreamKey: string;
}

const effectsIn = (file: string): Effect[] => (existsSync(file) ? readFileSync(file, 'utf8').trim().split('\n').filter(Boolean).map((line) => JSON.parse(line) as Effect) : []);

/** A stream with one durable consumer (AckWait 2 s), and a fresh SQLite file and effects file. */
async function setup() {
  const name = `oncely_x_${randomUUID().slice(0, 8)}`;
  await jsm.streams.add({ name, subjects: [`${name}.>`], duplicate_window: 100_000_000 });
  streams.push(name);
  await jsm.consumers.add(name, { durable_name: 'worker', ack_policy: 'explicit' as never, ack_wait: 2_000_000_000, max_deliver: -1 });
  return { name, database: join(directory, `${name}.db`), effects: join(directory, `${name}.jsonl`) };
}

/**
 * Starts a consumer process and resolves once it consumes; `onLine` hears what it prints after.
 * `transaction`: `-` for lease mode on the SQLite file, or `<records table>,<effects table>` for
 * transaction mode on a PostgresStore.
 */
async function startConsumer(mode: 'crash' | 'run', target: Awaited<ReturnType<typeof setup>>, onLine: (line: string) => void = () => undefined, transaction = '-') {
  const child = spawn(process.execPath, ['--import', 'tsx', CHILD, mode, target.name, 'worker', target.database, target.effects, '1500', transaction], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.add(child);
  child.once('exit', () => children.delete(child));
  let ready!: () => void;
  const started = new Promise<void>((resolve) => (ready = resolve));
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    for (const line of chunk.split('\n').filter(Boolean)) {
      if (line === 'ready') ready();
      else onLine(line);
    }
  });
  await Promise.race([started, once(child, 'exit').then(() => assert.fail('the consumer process exited before it was ready'))]);
  return child;
}

/** Publishes until stored as a message of its own: past the stream's 100 ms duplicate window, which the server prunes by timer. */
async function publish(name: string, body: string, id: string) {
  const h = headers();
  h.set('Nats-Msg-Id', id);
  while ((await jetstream(nc!).publish(`${name}.in`, body, { headers: h })).duplicate) await sleep(50);
}

async function waitFor(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

async function stop(child: ChildProcess) {
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  const [code] = (await exited) as [number | null];
  assert.equal(code, 0, 'closes gracefully on SIGTERM');
}

describe('oncely/nats across consumer processes (SqliteStore)', { skip }, () => {
  it('SIGKILL after the side effect, before the ack: another process runs it again exactly once, with the same downstreamKey', async () => {
    const target = await setup();
    let effectDone!: () => void;
    const effect = new Promise<void>((resolve) => (effectDone = resolve));
    const crashing = await startConsumer('crash', target, (line) => line === 'effect' && effectDone());
    await publish(target.name, 'send welcome email to user 42', 'welcome-42');
    await effect;
    crashing.kill('SIGKILL');
    await once(crashing, 'exit');
    const survivor = await startConsumer('run', target);
    await waitFor('the rerun and its ack', async () => {
      const info = await jsm.consumers.info(target.name, 'worker');
      return effectsIn(target.effects).length >= 2 && info.num_ack_pending === 0 && info.num_pending === 0;
    });
    await sleep(300);
    await stop(survivor);
    const effects = effectsIn(target.effects);
    assert.equal(effects.length, 2, 'at-least-once on a crash: once more, not more');
    assert.deepEqual(effects.map((e) => e.pid), [crashing.pid, survivor.pid]);
    assert.equal(effects[0]!.downstreamKey, effects[1]!.downstreamKey, 'the email API can dedupe the repeat');
    assert.deepEqual(new Set(effects.map((e) => `${e.key} ${e.body}`)), new Set(['welcome-42 send welcome email to user 42']));
  });

  it('two processes competing on one durable consumer, every message published twice and interleaved: each runs once', async () => {
    const target = await setup();
    const a = await startConsumer('run', target);
    const b = await startConsumer('run', target);
    const ids = Array.from({ length: 12 }, (_, i) => `order-${i}`);
    for (let round = 0; round < 2; round++) {
      for (const id of ids) await publish(target.name, `body of ${id}`, id);
    }
    await waitFor('24 deliveries settled', async () => {
      const info = await jsm.consumers.info(target.name, 'worker');
      return info.delivered.stream_seq === 24 && info.num_ack_pending === 0 && info.num_pending === 0;
    });
    await Promise.all([stop(a), stop(b)]);
    const effects = effectsIn(target.effects);
    assert.deepEqual(effects.map((e) => e.key).sort(), [...ids].sort());
    assert.ok(effects.every((e) => e.body === `body of ${e.key}`));
  });
});

describe('oncely/nats across consumer processes in transaction mode (PostgresStore)', { skip: postgresSkip }, () => {
  it('SIGKILL after the INSERT, before the COMMIT and the ack: rolled back, the redelivery writes it once with the same downstreamKey; a second copy writes nothing', async () => {
    const target = await setup();
    const records = `oncely_natx_${target.name.slice(-8)}`;
    const effectsTable = `${records}_effects`;
    tables.push(records, `${records}_migrations`, effectsTable);
    await new PostgresStore({ pool, table: records }).migrate();
    // No unique constraint: an effect applied twice would show as two rows.
    await pool.query(`CREATE TABLE "${effectsTable}" (key text NOT NULL, downstream_key text NOT NULL, pid integer NOT NULL)`);
    const rows = async () => (await pool.query<{ key: string; downstream_key: string; pid: number }>(`SELECT key, downstream_key, pid FROM "${effectsTable}"`)).rows;
    const settled = async (messages: number) => {
      const info = await jsm.consumers.info(target.name, 'worker');
      return info.delivered.stream_seq === messages && info.ack_floor.stream_seq === messages && info.num_ack_pending === 0 && info.num_pending === 0;
    };

    let effectDone!: () => void;
    const effect = new Promise<void>((resolve) => (effectDone = resolve));
    const crashing = await startConsumer('crash', target, (line) => line === 'effect' && effectDone(), `${records},${effectsTable}`);
    await publish(target.name, 'project payment 42', 'payment-42');
    await effect;
    crashing.kill('SIGKILL');
    await once(crashing, 'exit');

    const events: string[] = [];
    const survivor = await startConsumer('run', target, (line) => events.push(line), `${records},${effectsTable}`);
    await waitFor('the redelivery written and acked', async () => (await rows()).length > 0 && (await settled(1)));
    await publish(target.name, 'project payment 42', 'payment-42');
    await waitFor('the second copy acked', () => settled(2));
    await sleep(200);
    await stop(survivor);

    const effects = effectsIn(target.effects);
    assert.deepEqual(effects.map((e) => e.pid), [crashing.pid, survivor.pid], 'the handler ran in the killed process and once in the survivor, not for the second copy');
    assert.equal(effects[0]!.downstreamKey, effects[1]!.downstreamKey, 'the same downstreamKey both times');
    assert.deepEqual(await rows(), [{ key: 'payment-42', downstream_key: effects[0]!.downstreamKey, pid: survivor.pid }], "exactly one effect row: the killed transaction's INSERT rolled back");
    // An `in_progress` first is allowed: a redelivery can outrun the killed process's lease (then nak(leaseMs)).
    assert.deepEqual(
      events.filter((line) => !line.startsWith('event in_progress ')),
      ['event processed payment-42', 'event duplicate payment-42'],
    );
  });
});
