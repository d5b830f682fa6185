/**
 * A consumer process for crash-recovery.test.ts:
 *
 *   node --import tsx crash-consumer.ts <clientId> <topic> <effects file> lease <sqlite path>
 *   node --import tsx crash-consumer.ts <clientId> <topic> <effects file> transaction <postgres url> <records table> <effects table>
 *
 * Its handler appends "<pid> <downstreamKey>" to the effects file (the side effect in lease
 * mode, on a SqliteStore). In transaction mode (`transaction: true` on a PostgresStore) it then
 * also INSERTs "(message_id, downstream_key, pid)" into the effects table through
 * `context.transaction`. Then it prints `effect` and never returns: the parent SIGKILLs it
 * there, after the effect and before the PUBACK (in transaction mode, before the COMMIT).
 */
import { appendFileSync } from 'node:fs';
import mqtt from 'mqtt';
import pg from 'pg';
import { PostgresStore } from '../../stores/postgres/index.js';
import { SqliteStore } from '../../stores/sqlite/index.js';
import { consumeIdempotently } from './index.js';
import { MQTT_URL, sessionOptions } from './test-broker.js';

const [clientId, topic, effectsPath, mode, ...storeArgs] = process.argv.slice(2) as [string, string, string, 'lease' | 'transaction', ...string[]];
const transaction = mode === 'transaction';
// In transaction mode: one connection for the transaction, the others for claims and lease heartbeats beside it.
const pool = transaction ? new pg.Pool({ connectionString: storeArgs[0]!, max: 3 }) : undefined;
const store = pool ? new PostgresStore({ pool, table: storeArgs[1]! }) : new SqliteStore({ path: storeArgs[0]! });
const client = mqtt.connect(MQTT_URL, sessionOptions(clientId));
const consumer = consumeIdempotently(
  client,
  topic,
  async (message, { downstreamKey, transaction: tx }) => {
    appendFileSync(effectsPath, `${process.pid} ${downstreamKey}\n`);
    if (transaction) {
      const id = String(message.packet.properties?.userProperties?.['message-id']);
      await (tx as pg.PoolClient).query(`INSERT INTO "${storeArgs[2]!}" (message_id, downstream_key, pid) VALUES ($1, $2, $3)`, [id, downstreamKey, process.pid]);
    }
    process.stdout.write('effect\n');
    return new Promise(() => undefined);
  },
  { store, transaction, leaseMs: 1500, deadLetterTopic: `${topic}/dead` },
);
await consumer.ready;
process.stdout.write('ready\n');
