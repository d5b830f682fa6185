/**
 * A consumer process for the SQS crash and competition tests: consumes ONCELY_SQS_QUEUE on the
 * fauxqs at ONCELY_SQS_ENDPOINT with a SqliteStore on ONCELY_SQS_DB. Each run of the handler
 * appends `<body> <downstreamKey>` to ONCELY_SQS_EFFECTS and prints `effect`; with
 * ONCELY_SQS_HANG=1 the handler then never returns (the parent kills the process before the
 * delete). SIGTERM closes the consumer and exits.
 */
import { appendFileSync } from 'node:fs';
import { SQSClient } from '@aws-sdk/client-sqs';
import { SqliteStore } from '../../stores/sqlite/index.js';
import { consumeIdempotently } from './index.js';

const env = process.env;
const client = new SQSClient({ endpoint: env.ONCELY_SQS_ENDPOINT!, region: 'us-east-1', credentials: { accessKeyId: 'test', secretAccessKey: 'test' } });
const store = new SqliteStore({ path: env.ONCELY_SQS_DB! });
const consumer = consumeIdempotently(
  client,
  env.ONCELY_SQS_QUEUE!,
  async (message, { downstreamKey }) => {
    appendFileSync(env.ONCELY_SQS_EFFECTS!, `${message.Body} ${downstreamKey}\n`);
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
  },
);
process.stdout.write('ready\n');
process.once('SIGTERM', () => {
  void consumer.close().then(() => {
    store.close();
    client.destroy();
    process.exit(0);
  });
});
