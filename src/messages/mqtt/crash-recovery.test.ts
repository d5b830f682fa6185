/**
 * A consumer process SIGKILLed after its side effect and before its PUBACK, across processes on
 * a real Mosquitto. The broker resends the message when another process resumes the persistent
 * session (same clientId, clean: false); that process waits out the dead one's lease, then:
 * - lease mode (SqliteStore): runs the effect exactly once more with the same downstreamKey,
 *   the documented at-least-once case, and acknowledges it;
 * - transaction mode (PostgresStore): the killed process's INSERT rolled back with its
 *   uncommitted transaction; the resent message inserts the row once, with the same
 *   downstreamKey, and is acknowledged; the same message id published again is acknowledged
 *   as a duplicate without a second row.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { appendFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { PostgresStore } from '../../stores/postgres/index.js';
import { SqliteStore } from '../../stores/sqlite/index.js';
import { POSTGRES_URL, skipUnlessReachable } from '../../../test/support/services.js';
import type { MessageEvent } from '../protocol.js';
import { consumeIdempotently } from './index.js';
import { cleanUp, consumerClient, endClient, leftInSession, mqttSkip, publish, unique, until } from './test-broker.js';

const CHILD = fileURLToPath(new URL('./crash-consumer.ts', import.meta.url));
const skip = await mqttSkip();
const directory = mkdtempSync(join(tmpdir(), 'oncely-mqtt-crash-'));
after(async () => {
  await cleanUp();
  rmSync(directory, { recursive: true, force: true });
});

/**
 * Runs crash-consumer.ts on `clientId`'s session (`mode`: its store arguments), publishes one
 * message with id `id` to `topic`, and SIGKILLs the child once its handler printed `effect`.
 * `whileHung` runs at that point, before the kill. Returns the child's pid.
 */
async function killAfterEffect(clientId: string, topic: string, id: string, effects: string, mode: string[], whileHung?: () => Promise<void>): Promise<number> {
  const child = spawn(process.execPath, ['--import', 'tsx', CHILD, clientId, topic, effects, ...mode], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  let output = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  try {
    await until('the child consumer subscribed', () => output.includes('ready'), 10_000);
    await publish(topic, 'send welcome email to user 42', id);
    await until('the side effect', () => output.includes('effect'));
    await whileHung?.();
    child.kill('SIGKILL');
    await exited;
  } finally {
    child.kill('SIGKILL');
  }
  return child.pid!;
}

const effectLines = (file: string) => readFileSync(file, 'utf8').trim().split('\n').map((line) => line.split(' '));

describe('oncely/mqtt: a consumer process killed between its effect and its PUBACK', { skip }, () => {
  it('is resent to the next process on the session, which repeats the effect once with the same downstreamKey', async () => {
    const topic = unique('crash');
    const clientId = unique('crash').replace(/\//g, '-');
    const database = join(directory, 'records.db');
    const effects = join(directory, 'effects.txt');
    const childPid = await killAfterEffect(clientId, topic, 'welcome-42', effects, ['lease', database]);

    const events: MessageEvent[] = [];
    const store = new SqliteStore({ path: database });
    const client = consumerClient(clientId);
    const consumer = consumeIdempotently(
      client,
      topic,
      (_message, { downstreamKey }) => appendFileSync(effects, `${process.pid} ${downstreamKey}\n`),
      { store, leaseMs: 1500, deadLetterTopic: `${topic}/dead`, observer: (event) => events.push(event) },
    );
    await until('the resent message processed', () => events.some((event) => event.type === 'processed'), 8000);
    await consumer.close();
    await endClient(client);

    const lines = effectLines(effects);
    assert.equal(lines.length, 2, 'the effect ran in the killed process and once more, not more');
    assert.deepEqual(lines.map(([pid]) => pid), [String(childPid), String(process.pid)]);
    assert.equal(lines[0]![1], lines[1]![1], 'the same downstreamKey both times');
    // Normally the resend meets the dead process's lease first; on a slow machine the lease may
    // have lapsed already. Either way it is a broker redelivery (DUP), and it ran once.
    assert.ok(['in_progress', 'processed'].includes(events[0]!.type), events[0]!.type);
    assert.equal(events[0]!.attempt, 2, 'a broker redelivery (DUP)');
    assert.deepEqual(await leftInSession(clientId), [], 'acknowledged after the second run');
  });
});

const postgresSkip = skip ?? (await skipUnlessReachable('PostgreSQL', POSTGRES_URL));

describe('oncely/mqtt, transaction mode: a consumer process killed between its INSERT and its COMMIT/PUBACK', { skip: postgresSkip }, () => {
  it('rolls the row back; the next process on the session inserts it once with the same downstreamKey and acks; the same id again is a duplicate', async () => {
    const topic = unique('crash-tx');
    const clientId = unique('crash-tx').replace(/\//g, '-');
    const run = randomUUID().slice(0, 8);
    const records = `oncely_mqtt_tx_${run}`;
    const effectsTable = `mqtt_tx_effects_${run}`;
    const effects = join(directory, 'transaction-effects.txt');
    const pool = new pg.Pool({ connectionString: POSTGRES_URL, max: 4 });
    const store = new PostgresStore({ pool, table: records });
    const rows = async () => (await pool.query<{ downstream_key: string; pid: number }>(`SELECT downstream_key, pid FROM "${effectsTable}" WHERE message_id = 'welcome-43'`)).rows;
    const events: MessageEvent[] = [];
    try {
      await store.migrate();
      // No unique constraint: an effect applied twice would show as two rows.
      await pool.query(`CREATE TABLE "${effectsTable}" (message_id text NOT NULL, downstream_key text NOT NULL, pid integer NOT NULL)`);
      const childPid = await killAfterEffect(clientId, topic, 'welcome-43', effects, ['transaction', POSTGRES_URL, records, effectsTable], async () => {
        assert.deepEqual(await rows(), [], 'the INSERT is not committed while the child hangs');
      });

      const client = consumerClient(clientId);
      const consumer = consumeIdempotently(
        client,
        topic,
        async (message, { downstreamKey, transaction }) => {
          appendFileSync(effects, `${process.pid} ${downstreamKey}\n`);
          const id = String(message.packet.properties?.userProperties?.['message-id']);
          await (transaction as pg.PoolClient).query(`INSERT INTO "${effectsTable}" (message_id, downstream_key, pid) VALUES ($1, $2, $3)`, [id, downstreamKey, process.pid]);
        },
        { store, transaction: true, leaseMs: 1500, deadLetterTopic: `${topic}/dead`, observer: (event) => events.push(event) },
      );
      try {
        await until('the resent message processed', () => events.some((event) => event.type === 'processed'), 8000);
        await publish(topic, 'send welcome email to user 42', 'welcome-43');
        await until('the second publish answered as a duplicate', () => events.some((event) => event.type === 'duplicate'), 5000);
      } finally {
        await consumer.close();
        await endClient(client);
      }

      const lines = effectLines(effects);
      assert.deepEqual(lines.map(([pid]) => pid), [String(childPid), String(process.pid)], 'the handler ran in the killed process, then once here');
      assert.equal(lines[0]![1], lines[1]![1], 'the same downstreamKey both times');
      assert.deepEqual(await rows(), [{ downstream_key: lines[0]![1], pid: process.pid }], "one row: the killed process's rolled back, this one's committed, the duplicate's never written");
      // The resend (DUP, attempt 2) normally meets the dead process's lease and runs once it lapsed;
      // on a slow machine the lease may have lapsed before the resend arrived.
      const outcomes = events.map((event) => [event.type, event.attempt]);
      assert.ok(
        [[['in_progress', 2], ['processed', 3], ['duplicate', 1]], [['processed', 2], ['duplicate', 1]]].some((expected) => JSON.stringify(expected) === JSON.stringify(outcomes)),
        `the resend ran once, the republished id was a duplicate: ${JSON.stringify(outcomes)}`,
      );
      assert.deepEqual(await leftInSession(clientId), [], 'the broker holds nothing unacknowledged');
    } finally {
      await store.close();
      await pool.query(`DROP TABLE IF EXISTS "${records}", "${records}_migrations", "${effectsTable}"`);
      await pool.end();
    }
  });
});
