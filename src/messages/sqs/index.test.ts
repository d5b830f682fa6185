/**
 * oncely/sqs on a real SQS API (fauxqs, started in this process on port 0) and real stores:
 * each delivery ends in one SQS action (delete, visibility delay, dead-letter) and a message's
 * effect happens once however often SQS delivers it.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  CreateQueueCommand,
  DeleteQueueCommand,
  GetQueueAttributesCommand,
  ReceiveMessageCommand,
  SendMessageCommand,
  SQSClient,
  type Message,
  type MessageAttributeValue,
} from '@aws-sdk/client-sqs';
import { startFauxqs, type FauxqsServer } from 'fauxqs';
import { Redis } from 'ioredis';
import { InvalidOptionError } from '../../core/errors.js';
import { MemoryStore } from '../../stores/memory/index.js';
import { RedisStore } from '../../stores/redis/index.js';
import { SqliteStore } from '../../stores/sqlite/index.js';
import type { MessageEvent } from '../protocol.js';
import { consumeIdempotently, DEAD_LETTER_REASON_ATTRIBUTE, sqsMessageHandler, SYSTEM_ATTRIBUTES } from './index.js';

let server: FauxqsServer;
let client: SQSClient;
const queues: string[] = [];
const directory = mkdtempSync(join(tmpdir(), 'oncely-sqs-'));

before(async () => {
  server = await startFauxqs({ port: 0, logger: false });
  client = new SQSClient({ endpoint: server.address, region: 'us-east-1', credentials: { accessKeyId: 'test', secretAccessKey: 'test' } });
});
after(async () => {
  await Promise.all(queues.map((url) => client.send(new DeleteQueueCommand({ QueueUrl: url }))));
  client.destroy();
  await server.stop();
  rmSync(directory, { recursive: true, force: true });
});

async function createQueue(attributes: Record<string, string> = {}, suffix = ''): Promise<{ url: string; arn: string }> {
  const { QueueUrl } = await client.send(new CreateQueueCommand({ QueueName: `oncely-${randomUUID()}${suffix}`, Attributes: attributes }));
  queues.push(QueueUrl!);
  const { Attributes } = await client.send(new GetQueueAttributesCommand({ QueueUrl, AttributeNames: ['QueueArn'] }));
  return { url: QueueUrl!, arn: Attributes!.QueueArn! };
}

const send = (url: string, body: string, eventId?: string, extra: Partial<ConstructorParameters<typeof SendMessageCommand>[0]> = {}) =>
  client.send(new SendMessageCommand({ QueueUrl: url, MessageBody: body, ...(eventId ? { MessageAttributes: { eventId: { DataType: 'String', StringValue: eventId } } } : {}), ...extra }));

async function receive(url: string, visibilityTimeout?: number): Promise<Message[]> {
  const { Messages = [] } = await client.send(
    new ReceiveMessageCommand({ QueueUrl: url, MaxNumberOfMessages: 10, WaitTimeSeconds: 0, MessageSystemAttributeNames: [...SYSTEM_ATTRIBUTES], MessageAttributeNames: ['All'], ...(visibilityTimeout === undefined ? {} : { VisibilityTimeout: visibilityTimeout }) }),
  );
  return Messages;
}

/** Messages in the queue, visible or not (fauxqs counts in-flight ones too). */
async function depth(url: string): Promise<number> {
  const { Attributes } = await client.send(new GetQueueAttributesCommand({ QueueUrl: url, AttributeNames: ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesNotVisible', 'ApproximateNumberOfMessagesDelayed'] }));
  return Number(Attributes!.ApproximateNumberOfMessages) + Number(Attributes!.ApproximateNumberOfMessagesNotVisible) + Number(Attributes!.ApproximateNumberOfMessagesDelayed);
}

async function until(condition: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

/** Starts a consumer that is closed when the test ends, whatever happens in it. */
function consume(t: TestContext, ...args: Parameters<typeof consumeIdempotently>): ReturnType<typeof consumeIdempotently> {
  const consumer = consumeIdempotently(...args);
  t.after(() => consumer.close());
  return consumer;
}

const eventIdKey = (message: Message) => message.MessageAttributes?.eventId?.StringValue ?? '';
const reasonOf = (message: Message) => (message.MessageAttributes?.[DEAD_LETTER_REASON_ATTRIBUTE] as MessageAttributeValue | undefined)?.StringValue;

describe('oncely/sqs', { concurrency: true }, () => {
  it('refuses a URL string as the client, a bad queue URL, and a visibility the heartbeat cannot keep', () => {
    const store = new MemoryStore();
    const handler = () => undefined;
    assert.throws(() => consumeIdempotently('http://localhost:4566' as unknown as SQSClient, 'http://localhost/1/q', handler, { store }), (error: unknown) => error instanceof InvalidOptionError && error.option === 'client');
    assert.throws(() => consumeIdempotently(client, 'orders', handler, { store }), (error: unknown) => error instanceof InvalidOptionError && error.option === 'queueUrl');
    assert.throws(() => sqsMessageHandler({ store, leaseMs: 30_000, visibilityTimeoutSeconds: 10 }), (error: unknown) => error instanceof InvalidOptionError && error.option === 'visibilityTimeoutSeconds');
    assert.throws(() => consumeIdempotently(client, 'http://localhost/1/q', handler, { store, batchSize: 11 }), (error: unknown) => error instanceof InvalidOptionError && error.option === 'batchSize');
    assert.throws(() => sqsMessageHandler({ store, batchSize: 5 } as never), (error: unknown) => error instanceof InvalidOptionError && error.option === 'batchSize', 'a poll option is unknown to the one-message handler');
  });

  it('one MessageId delivered three times: runs once, every delivery deleted', async () => {
    const { url } = await createQueue();
    await send(url, '{"deposit":100}');
    const handle = sqsMessageHandler({ store: new MemoryStore() });
    // Visibility 0: the message is visible again at once, so SQS hands out the same MessageId again.
    const deliveries = [...(await receive(url, 0)), ...(await receive(url, 0)), ...(await receive(url))];
    assert.equal(deliveries.length, 3);
    assert.equal(new Set(deliveries.map((m) => m.MessageId)).size, 1);
    assert.deepEqual(deliveries.map((m) => m.Attributes?.ApproximateReceiveCount), ['1', '2', '3']);
    let runs = 0;
    const actions = [];
    for (const message of deliveries) actions.push(await handle(client, url, message, () => runs++));
    assert.deepEqual(actions, [{ action: 'ack', outcome: 'processed' }, { action: 'ack', outcome: 'duplicate' }, { action: 'ack', outcome: 'duplicate' }]);
    assert.equal(runs, 1);
    assert.equal(await depth(url), 0);
  });

  it('FIFO: the MessageDeduplicationId is the identity', async () => {
    const { url } = await createQueue({ FifoQueue: 'true' }, '.fifo');
    await send(url, 'welcome user 42', undefined, { MessageGroupId: 'users', MessageDeduplicationId: 'welcome-42' });
    const events: MessageEvent[] = [];
    const handle = sqsMessageHandler({ store: new MemoryStore(), observer: (event) => events.push(event) });
    const [message] = await receive(url);
    assert.equal((await handle(client, url, message!, () => undefined)).action, 'ack');
    assert.deepEqual(events.map((event) => event.type === 'processed' && event.key), ['welcome-42']);
  });

  it('published twice with one business key (`key`): the effect once, both deleted', async (t) => {
    const { url } = await createQueue();
    await send(url, '{"deposit":100}', 'payment-7');
    await send(url, '{"deposit":100}', 'payment-7');
    const effects: string[] = [];
    const events: MessageEvent[] = [];
    const consumer = consume(t, client, url, (m) => effects.push(m.Body!), { store: new MemoryStore(), key: eventIdKey, batchSize: 1, waitTimeSeconds: 1, observer: (event) => events.push(event) });
    await until(async () => events.length === 2 && (await depth(url)) === 0, 'both deliveries');
    await consumer.close();
    assert.deepEqual(effects, ['{"deposit":100}']);
    assert.deepEqual(events.map((event) => event.type).sort(), ['duplicate', 'processed']);
  });

  it('two consumers on one queue, duplicates interleaved, one SQLite file: each effect once', async (t) => {
    const { url } = await createQueue();
    const path = join(directory, `${randomUUID()}.db`);
    const stores = [new SqliteStore({ path }), new SqliteStore({ path })];
    for (let round = 0; round < 3; round++) for (let n = 0; n < 8; n++) await send(url, `order ${n}`, `order-${n}`);
    const effects: string[] = [];
    const consumers = stores.map((store) =>
      consume(t, client, url, async (m) => {
        effects.push(m.Body!);
        await sleep(20);
      }, { store, key: eventIdKey, waitTimeSeconds: 1, batchSize: 4, leaseMs: 1_500, visibilityTimeoutSeconds: 2 }),
    );
    await until(async () => (await depth(url)) === 0, 'the queue to drain', 15_000);
    await Promise.all(consumers.map((consumer) => consumer.close()));
    assert.deepEqual(effects.sort(), Array.from({ length: 8 }, (_, n) => `order ${n}`).sort());
    for (const store of stores) store.close();
  });

  it('a handler outliving the visibility timeout keeps the message by heartbeat; no other consumer sees it', async (t) => {
    const { url } = await createQueue({ VisibilityTimeout: '1' });
    await send(url, 'slow work');
    const store = new MemoryStore();
    let runs = 0;
    const seenByOther: MessageEvent[] = [];
    const options = { store, leaseMs: 900, visibilityTimeoutSeconds: 1, waitTimeSeconds: 1 };
    const first = consume(t, client, url, async () => {
      runs++;
      await sleep(3_000);
    }, options);
    await until(() => runs === 1, 'the first delivery');
    const other = consume(t, client, url, () => runs++, { ...options, observer: (event) => seenByOther.push(event) });
    await until(async () => (await depth(url)) === 0, 'the delete', 8_000);
    await Promise.all([first.close(), other.close()]);
    assert.equal(runs, 1);
    assert.deepEqual(seenByOther, [], 'three visibility timeouts passed, and the message never reappeared');
  });

  it('poison: retried by visibility, then sent to deadLetterQueueUrl with its reason after maxAttempts', async (t) => {
    const { url } = await createQueue();
    const dlq = await createQueue();
    await send(url, 'poison', undefined, { MessageAttributes: { tenant: { DataType: 'String', StringValue: 'acme' } } });
    let runs = 0;
    const consumer = consume(t, client, url, () => {
      runs++;
      throw new Error('cannot parse');
    }, { store: new MemoryStore(), deadLetterQueueUrl: dlq.url, maxAttempts: 3, backoff: { baseMs: 1, maxMs: 1 }, waitTimeSeconds: 1 });
    let dead: Message[] = [];
    await until(async () => (dead = await receive(dlq.url)).length === 1, 'the dead letter', 10_000);
    await consumer.close();
    assert.equal(runs, 3);
    assert.equal(dead[0]!.Body, 'poison');
    assert.equal(reasonOf(dead[0]!), 'max-attempts');
    assert.equal(dead[0]!.MessageAttributes?.tenant?.StringValue, 'acme', 'the original attributes travel with it');
    assert.equal(await depth(url), 0);
  });

  it('poison without deadLetterQueueUrl: the queue redrive policy moves it once maxReceiveCount is passed', async (t) => {
    const dlq = await createQueue();
    const { url } = await createQueue({ RedrivePolicy: JSON.stringify({ deadLetterTargetArn: dlq.arn, maxReceiveCount: '2' }) });
    await send(url, 'poison');
    let runs = 0;
    const events: MessageEvent[] = [];
    const consumer = consume(t, client, url, () => {
      runs++;
      throw new Error('cannot parse');
    }, { store: new MemoryStore(), maxAttempts: 2, backoff: { baseMs: 1, maxMs: 1 }, waitTimeSeconds: 1, observer: (event) => events.push(event) });
    await until(async () => (await depth(dlq.url)) === 1, 'the redrive', 10_000);
    await consumer.close();
    assert.equal(runs, 2);
    assert.deepEqual(events.map((event) => event.type), ['retry', 'dead_lettered']);
    assert.equal((await receive(dlq.url))[0]?.Body, 'poison');
  });

  it('isPermanent: dead-lettered at once with permanent-error', async () => {
    const { url } = await createQueue();
    const dlq = await createQueue();
    await send(url, 'bad card');
    const handle = sqsMessageHandler({ store: new MemoryStore(), deadLetterQueueUrl: dlq.url, isPermanent: (error) => error instanceof RangeError });
    let runs = 0;
    const [message] = await receive(url);
    const action = await handle(client, url, message!, () => {
      runs++;
      throw new RangeError('card declined');
    });
    assert.equal(action.action === 'dead-letter' && action.reason, 'permanent-error');
    const [dead] = await receive(dlq.url);
    assert.equal(reasonOf(dead!), 'permanent-error');
    assert.match(dead!.MessageAttributes?.['oncely-dead-letter-detail']?.StringValue ?? '', /card declined/);
    assert.equal(runs, 1);
    assert.equal(await depth(url), 0);
  });

  it('mismatch: the same business key with another body is dead-lettered, never run', async (t) => {
    const { url } = await createQueue();
    const dlq = await createQueue();
    await send(url, '{"deposit":100}', 'payment-9');
    await send(url, '{"deposit":999}', 'payment-9');
    const effects: string[] = [];
    const consumer = consume(t, client, url, (m) => effects.push(m.Body!), { store: new MemoryStore(), key: eventIdKey, deadLetterQueueUrl: dlq.url, batchSize: 1, waitTimeSeconds: 1 });
    let dead: Message[] = [];
    await until(async () => (dead = await receive(dlq.url)).length === 1, 'the dead letter');
    await consumer.close();
    assert.equal(effects.length, 1);
    assert.notEqual(dead[0]!.Body, effects[0]);
    assert.equal(reasonOf(dead[0]!), 'mismatch');
    assert.equal(await depth(url), 0);
  });

  it('a message without identity is dead-lettered with no-identity, never run', async () => {
    const { url } = await createQueue();
    const dlq = await createQueue();
    await send(url, '{"deposit":100}');
    const [received] = await receive(url);
    // A poller that lost the MessageId (or a hand-built message): oncely never falls back to the body.
    const message = { ...received!, MessageId: undefined };
    let runs = 0;
    const action = await sqsMessageHandler({ store: new MemoryStore(), deadLetterQueueUrl: dlq.url })(client, url, message, () => runs++);
    assert.equal(action.action === 'dead-letter' && action.reason, 'no-identity');
    assert.equal(reasonOf((await receive(dlq.url))[0]!), 'no-identity');
    assert.equal(runs, 0);
    assert.equal(await depth(url), 0);
  });

  it('store down: nothing runs, the message comes back; with the store back it runs once', async (t) => {
    const { url } = await createQueue();
    await send(url, 'welcome 42');
    const deadClient = new Redis('redis://127.0.0.1:1', { lazyConnect: true, maxRetriesPerRequest: 0 });
    deadClient.on('error', () => undefined);
    const events: MessageEvent[] = [];
    let runs = 0;
    const down = consume(t, client, url, () => runs++, { store: new RedisStore({ client: deadClient, timeoutMs: 200 }), backoff: { baseMs: 1, maxMs: 1 }, waitTimeSeconds: 1, observer: (event) => events.push(event) });
    await until(() => events.length >= 1, 'the store error');
    await down.close();
    deadClient.disconnect();
    assert.equal(runs, 0);
    assert.ok(events.every((event) => event.type === 'store_error'));
    assert.equal(await depth(url), 1, 'the message is still in the queue');

    const up = consume(t, client, url, () => runs++, { store: new MemoryStore(), waitTimeSeconds: 1 });
    await until(async () => (await depth(url)) === 0, 'the redelivery', 8_000);
    await up.close();
    assert.equal(runs, 1);
  });

  it('close() waits for a running handler and its delete, then takes and deletes nothing more', async (t) => {
    const { url } = await createQueue();
    await send(url, 'first');
    const effects: string[] = [];
    let started = false;
    const consumer = consume(t, client, url, async (m) => {
      started = true;
      await sleep(300);
      effects.push(m.Body!);
    }, { store: new MemoryStore(), waitTimeSeconds: 1 });
    await until(() => started, 'the handler');
    await consumer.close();
    assert.deepEqual(effects, ['first']);
    assert.equal(await depth(url), 0, 'the running message was deleted before close() resolved');
    await send(url, 'second');
    await sleep(200);
    assert.deepEqual(effects, ['first']);
    assert.equal((await receive(url)).length, 1, 'the later message is untouched and visible');
  });

  it('an SQS error on delete is reported, never thrown: the message comes back and is then a duplicate', async () => {
    const { url } = await createQueue();
    await send(url, 'once');
    const errors: unknown[] = [];
    const store = new MemoryStore();
    const handle = sqsMessageHandler({ store, onError: (error) => errors.push(error) });
    const [message] = await receive(url, 1);
    let runs = 0;
    const result = await handle(client, url, { ...message!, ReceiptHandle: undefined }, () => runs++);
    assert.equal(result.action, 'ack');
    assert.ok(result.brokerError !== undefined && errors.length === 1, 'SQS refused the delete without a receipt handle');
    let again: Message[] = [];
    await until(async () => (again = await receive(url)).length === 1, 'the redelivery', 5_000);
    assert.deepEqual(await handle(client, url, again[0]!, () => runs++), { action: 'ack', outcome: 'duplicate' });
    assert.equal(runs, 1);
  });
});
