/**
 * A consumer process for the SQS crash and competition tests: consumes ONCELY_SQS_QUEUE on the
 * fauxqs at ONCELY_SQS_ENDPOINT. Each run of the handler appends `<body> <downstreamKey>` to
 * ONCELY_SQS_EFFECTS and prints `effect`; with ONCELY_SQS_HANG=1 the handler then never returns
 * (the parent kills the process before the delete). SIGTERM closes the consumer and exits.
 *
 * The store: a SqliteStore on ONCELY_SQS_DB (lease mode), or, with
 * ONCELY_SQS_TRANSACTION=<records table>,<effects table>, `transaction: true` on a PostgresStore
 * with that records table (ONCELY_POSTGRES_URL, default postgres://postgres@127.0.0.1:5432/test):
 * each run then also INSERTs its effect (key, downstreamKey, pid) into the effects table through
 * `context.transaction`, after appending its line (outside the transaction) and before printing
 * `effect`, so a kill while it hangs comes before the COMMIT and the delete. It also prints the
 * consumer's observer events as `event:<type>:<key>`.
 */
import { appendFileSync } from 'node:fs';
import { SQSClient } from '@aws-sdk/client-sqs';
import pg from 'pg';
import { PostgresStore } from '../../stores/postgres/index.js';
import { SqliteStore } from '../../stores/sqlite/index.js';
import { consumeIdempotently } from './index.js';

const env = process.env;
const [records, effectsTable] = env.ONCELY_SQS_TRANSACTION ? env.ONCELY_SQS_TRANSACTION.split(',') : [];
const client = new SQSClient({ endpoint: env.ONCELY_SQS_ENDPOINT!, region: 'us-east-1', credentials: { accessKeyId: 'test', secretAccessKey: 'test' } });
// Transaction mode: one connection for the transaction (the tests run one message at a time), the others for claims and heartbeats.
const pool = records ? new pg.Pool({ connectionString: env.ONCELY_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test', max: 3 }) : undefined;
const store = pool ? new PostgresStore({ pool, table: records! }) : new SqliteStore({ path: env.ONCELY_SQS_DB! });
const consumer = consumeIdempotently(
  client,
  env.ONCELY_SQS_QUEUE!,
  async (message, { downstreamKey, key, transaction }) => {
    appendFileSync(env.ONCELY_SQS_EFFECTS!, `${message.Body} ${downstreamKey}\n`);
    if (pool) await (transaction as pg.PoolClient).query(`INSERT INTO "${effectsTable}" (key, downstream_key, pid) VALUES ($1, $2, $3)`, [key, downstreamKey, process.pid]);
    process.stdout.write('effect\n');
    if (env.ONCELY_SQS_HANG === '1') await new Promise(() => undefined);
  },
  {
    store,
    key: (message) => message.MessageAttributes?.eventId?.StringValue ?? message.MessageId!,
    leaseMs: 1_500,
    visibilityTimeoutSeconds: 1,
    waitTimeSeconds: 1,
    batchSize: 5,
    ...(pool ? { transaction: true, observer: (event: { type: string; key?: string }) => void process.stdout.write(`event:${event.type}:${event.key}\n`) } : {}),
  },
);
process.stdout.write('ready\n');
process.once('SIGTERM', () => {
  void consumer
    .close()
    .then(() => store.close())
    .then(() => pool?.end())
    .then(() => {
      client.destroy();
      process.exit(0);
    });
});
