/**
 * A consumer process for crash-recovery.test.ts: `node --import tsx crash-consumer.ts <clientId>
 * <topic> <sqlite path> <effects file>`. Its handler appends the downstreamKey to the effects
 * file (the side effect), prints `effect`, and never returns: the parent SIGKILLs it there,
 * after the effect and before the PUBACK.
 */
import { appendFileSync } from 'node:fs';
import mqtt from 'mqtt';
import { SqliteStore } from '../../stores/sqlite/index.js';
import { consumeIdempotently } from './index.js';
import { MQTT_URL, sessionOptions } from './test-broker.js';

const [clientId, topic, databasePath, effectsPath] = process.argv.slice(2) as [string, string, string, string];
const client = mqtt.connect(MQTT_URL, sessionOptions(clientId));
const consumer = consumeIdempotently(
  client,
  topic,
  (_message, { downstreamKey }) => {
    appendFileSync(effectsPath, `${process.pid} ${downstreamKey}\n`);
    process.stdout.write('effect\n');
    return new Promise(() => undefined);
  },
  { store: new SqliteStore({ path: databasePath }), leaseMs: 1500, deadLetterTopic: `${topic}/dead` },
);
await consumer.ready;
process.stdout.write('ready\n');
