/**
 * consumeIdempotently() on a real RabbitMQ: every delivery of one identity runs the handler
 * once, however it comes back (published again, nacked by a competing consumer holding the
 * claim, redelivered after a channel closed before its ack); poison, mismatch and identity-less
 * messages reach the queue's dead-letter exchange; a store outage runs nothing until the store
 * is back. Each test has its own queues, deleted afterwards.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import amqp, { type Channel, type ChannelModel, type ConsumeMessage, type Message } from 'amqplib';
import { Redis } from 'ioredis';
import { skipUnlessReachable, REDIS_URL } from '../../../test/support/services.js';
import { InvalidOptionError } from '../../core/errors.js';
import { MemoryStore } from '../../stores/memory/index.js';
import { RedisStore } from '../../stores/redis/index.js';
import { consumeIdempotently, type MessageEvent, type RabbitConsumerOptions } from './index.js';

const RABBITMQ_URL = process.env.ONCELY_RABBITMQ_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
const skip = (await skipUnlessReachable('RabbitMQ', RABBITMQ_URL)) ?? false;
// A duplicate that finds its twin running comes back after leaseMs: short here, so such races settle fast.
const fast = { backoff: { baseMs: 50, maxMs: 200 }, leaseMs: 1_000 };

let connection: ChannelModel;
let admin: Channel;
const cleanup: (() => Promise<unknown>)[] = [];

before(async () => {
  if (skip) return;
  connection = await amqp.connect(RABBITMQ_URL);
  admin = await connection.createChannel();
});
after(async () => {
  if (skip) return;
  for (const step of cleanup.reverse()) await step().catch(() => undefined);
  await connection.close();
});

/** A quorum queue (it counts deliveries) whose dead letters go to `<queue>.dead`. */
async function queues(): Promise<{ queue: string; dead: string }> {
  const queue = `oncely-test-${randomUUID()}`;
  const dead = `${queue}.dead`;
  await admin.assertExchange(dead, 'fanout', { durable: false, autoDelete: false });
  await admin.assertQueue(dead, { durable: true });
  await admin.bindQueue(dead, dead, '');
  await admin.assertQueue(queue, { durable: true, arguments: { 'x-queue-type': 'quorum', 'x-dead-letter-exchange': dead } });
  cleanup.push(() => admin.deleteQueue(queue), () => admin.deleteQueue(dead), () => admin.deleteExchange(dead));
  return { queue, dead };
}

async function until(condition: () => boolean | Promise<boolean>, what: string, timeoutMs = 8_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

const publish = (queue: string, body: string, messageId?: string, headers?: Record<string, unknown>) =>
  admin.sendToQueue(queue, Buffer.from(body), { ...(messageId === undefined ? {} : { messageId }), ...(headers ? { headers } : {}) });

/** Ready plus unacked messages are both absent once every delivery was settled and the channel closed. */
const ready = async (queue: string) => (await admin.checkQueue(queue)).messageCount;

/** Everything that reached `<queue>.dead`. */
async function deadLetters(dead: string): Promise<Message[]> {
  const found: Message[] = [];
  for (let message = await admin.get(dead, { noAck: true }); message !== false; message = await admin.get(dead, { noAck: true })) found.push(message);
  return found;
}

async function consumer(queue: string, handler: (message: ConsumeMessage) => unknown, options: Partial<RabbitConsumerOptions> = {}, prefetch = 10) {
  const channel = await connection.createChannel();
  await channel.prefetch(prefetch);
  const events: MessageEvent[] = [];
  const started = await consumeIdempotently(channel, queue, (message) => handler(message), { store: new MemoryStore(), observer: (event) => events.push(event), ...fast, ...options });
  return {
    channel,
    events,
    count: (type: MessageEvent['type']) => events.filter((event) => event.type === type).length,
    close: async () => {
      await started.close();
      await channel.close().catch(() => undefined);
    },
  };
}

describe('consumeIdempotently() options', () => {
  it('refuses a URL where the channel belongs, noAck, and unknown options, naming the option', async () => {
    const store = new MemoryStore();
    const named = (option: string) => (error: unknown) => error instanceof InvalidOptionError && error.option === option;
    assert.throws(() => consumeIdempotently(RABBITMQ_URL as unknown as Channel, 'q', () => undefined, { store }), named('channel'));
    const channel = { consume() {}, ack() {}, nack() {} } as unknown as Channel;
    assert.throws(() => consumeIdempotently(channel, '', () => undefined, { store }), named('queue'));
    assert.throws(() => consumeIdempotently(channel, 'q', () => undefined, { store, consume: { noAck: true } }), named('consume'));
    assert.throws(() => consumeIdempotently(channel, 'q', () => undefined, { store, idHeader: '' }), named('idHeader'));
    assert.throws(() => consumeIdempotently(channel, 'q', () => undefined, { store, deadLetterExchange: 'dlx' }), named('deadLetterExchange'), 'a plain channel cannot confirm the copy');
    assert.throws(() => consumeIdempotently(channel, 'q', () => undefined, { store, prefetch: 5 } as RabbitConsumerOptions), named('prefetch'));
  });
});

describe('consumeIdempotently() on RabbitMQ', { skip }, () => {
  it('runs a message published three times with one id once, and acks every copy', async () => {
    const { queue } = await queues();
    let runs = 0;
    const worker = await consumer(queue, () => void runs++);
    for (let i = 0; i < 3; i++) publish(queue, '{"amount":100}', 'payment-1');
    publish(queue, '{"amount":100}', 'payment-2');
    await until(() => worker.count('processed') + worker.count('duplicate') === 4, 'four settled deliveries');
    await worker.close();
    assert.equal(runs, 2);
    assert.deepEqual([worker.count('processed'), worker.count('duplicate')], [2, 2]);
    assert.equal(await ready(queue), 0, 'every copy was acked: none came back when the channel closed');
  });

  it('reads the identity from idHeader when told to', async () => {
    const { queue } = await queues();
    const seen: string[] = [];
    const worker = await consumer(queue, (message) => void seen.push(message.content.toString()), { idHeader: 'event-id' });
    publish(queue, 'a', undefined, { 'event-id': 'evt-7' });
    publish(queue, 'a', 'another-message-id', { 'event-id': 'evt-7' });
    await until(() => worker.count('duplicate') === 1, 'the duplicate');
    await worker.close();
    assert.deepEqual(seen, ['a']);
  });

  it('a message redelivered after its channel closed before the ack is acked as a duplicate, not run again', async () => {
    const { queue } = await queues();
    const store = new MemoryStore();
    let runs = 0;
    // The first consumer's channel dies after the effect, before the ack (which then fails quietly).
    const first = await consumer(queue, async () => {
      runs++;
      await first.channel.close();
    }, { store });
    publish(queue, 'welcome user 42', 'welcome-42');
    await until(() => first.count('processed') === 1, 'the first run');
    const second = await consumer(queue, () => void runs++, { store });
    await until(() => second.count('duplicate') === 1, 'the redelivery');
    await Promise.all([first.close(), second.close()]);
    assert.equal(runs, 1);
    assert.equal(await ready(queue), 0);
  });

  it('two consumers given one id at once: the one without the claim nacks, and the redelivery is a duplicate', async () => {
    const { queue } = await queues();
    const store = new MemoryStore();
    let runs = 0;
    const handler = async () => {
      runs++;
      await sleep(300);
    };
    const workers = [await consumer(queue, handler, { store, leaseMs: 600 }, 1), await consumer(queue, handler, { store, leaseMs: 600 }, 1)];
    for (let i = 0; i < 4; i++) publish(queue, 'x', `order-${i >> 1}`);
    const settled = () => workers.reduce((sum, worker) => sum + worker.count('processed') + worker.count('duplicate'), 0);
    await until(() => settled() === 4, 'four settled deliveries');
    await Promise.all(workers.map((worker) => worker.close()));
    assert.equal(runs, 2);
    assert.ok(workers.some((worker) => worker.count('in_progress') > 0), 'a duplicate arrived while its twin ran');
    assert.equal(await ready(queue), 0);
  });

  it('a handler that outlives its lease keeps the claim by heartbeat: a duplicate meanwhile waits, then is acked without running', async () => {
    const { queue } = await queues();
    const store = new MemoryStore();
    let runs = 0;
    const slow = async () => {
      runs++;
      await sleep(1_000);
    };
    const workers = [await consumer(queue, slow, { store, leaseMs: 300 }), await consumer(queue, slow, { store, leaseMs: 300 })];
    publish(queue, 'x', 'report-1');
    await until(() => runs === 1, 'the first run');
    publish(queue, 'x', 'report-1');
    const count = (type: MessageEvent['type']) => workers.reduce((sum, worker) => sum + worker.count(type), 0);
    await until(() => count('duplicate') === 1, 'the duplicate');
    await Promise.all(workers.map((worker) => worker.close()));
    assert.equal(runs, 1);
    assert.ok(count('in_progress') >= 2, 'the duplicate came back more than once while the 1 s handler held its 300 ms lease');
    assert.equal(count('lease_lost'), 0);
  });

  it('a poison message is retried until maxAttempts, then dead-lettered with its reason; isPermanent at once', async () => {
    const { queue, dead } = await queues();
    let runs = 0;
    const worker = await consumer(queue, (message) => {
      runs++;
      throw message.content.toString() === 'permanent' ? new TypeError('bad payload') : new Error('flaky');
    }, { maxAttempts: 3, isPermanent: (error) => error instanceof TypeError });
    publish(queue, 'poison', 'p-1');
    publish(queue, 'permanent', 'p-2');
    await until(() => worker.count('dead_lettered') === 2, 'two dead letters');
    await until(async () => (await admin.checkQueue(dead)).messageCount === 2, 'both in the dead-letter queue');
    await worker.close();
    assert.equal(runs, 4, 'three attempts of the poison message, one of the permanent failure');
    assert.deepEqual(worker.events.filter((event) => event.type === 'dead_lettered').map((event) => [event.key, event.reason, event.attempt]).sort(), [['p-1', 'max-attempts', 3], ['p-2', 'permanent-error', 1]]);
    const letters = await deadLetters(dead);
    assert.deepEqual(letters.map((letter) => letter.properties.messageId).sort(), ['p-1', 'p-2']);
    for (const letter of letters) assert.equal((letter.properties.headers?.['x-death'] as { reason: string }[])[0]?.reason, 'rejected');
    assert.equal(await ready(queue), 0);
  });

  it('with deadLetterExchange the dead letter carries oncely\'s reason and detail, and the original is acked once', async () => {
    const { queue, dead } = await queues();
    const channel = await connection.createConfirmChannel();
    const events: MessageEvent[] = [];
    const started = await consumeIdempotently(channel, queue, () => {
      throw new Error('flaky');
    }, { store: new MemoryStore(), maxAttempts: 2, deadLetterExchange: dead, observer: (event) => events.push(event), ...fast });
    publish(queue, 'poison', 'p-1', { tenant: 'acme' });
    await until(async () => (await admin.checkQueue(dead)).messageCount === 1, 'the dead letter');
    await started.close();
    await channel.close();
    const [letter, ...others] = await deadLetters(dead);
    assert.equal(others.length, 0);
    assert.equal(letter!.content.toString(), 'poison');
    assert.equal(letter!.properties.messageId, 'p-1');
    const headers = letter!.properties.headers!;
    assert.deepEqual([headers['x-oncely-dead-letter-reason'], headers['x-oncely-dead-letter-detail'], headers.tenant, headers['x-death']], ['max-attempts', 'Error: flaky', 'acme', undefined]);
    assert.equal(events.filter((event) => event.type === 'dead_lettered').length, 1);
    assert.equal(await ready(queue), 0, 'the original was acked, not left to come back');
  });

  it('a second payload under a used id is dead-lettered as a mismatch, and a message without identity as no-identity; neither runs', async () => {
    const { queue, dead } = await queues();
    const ran: string[] = [];
    const worker = await consumer(queue, (message) => void ran.push(message.content.toString()));
    publish(queue, 'deposit 100', 'tx-1');
    await until(() => worker.count('processed') === 1, 'the first payload');
    publish(queue, 'deposit 900', 'tx-1');
    publish(queue, 'deposit 5');
    await until(async () => (await admin.checkQueue(dead)).messageCount === 2, 'two dead letters');
    await worker.close();
    assert.deepEqual(ran, ['deposit 100']);
    assert.deepEqual(worker.events.filter((event) => event.type === 'dead_lettered').map((event) => event.reason).sort(), ['mismatch', 'no-identity']);
    assert.deepEqual((await deadLetters(dead)).map((letter) => letter.content.toString()).sort(), ['deposit 5', 'deposit 900']);
  });

  it('with the store down nothing runs and the message is redelivered; once the store is back it runs once', async () => {
    const redisSkip = await skipUnlessReachable('Redis', REDIS_URL);
    if (redisSkip) return;
    const { queue } = await queues();
    // A port nothing listens on yet; later a proxy to the real Redis opens there, and the client reconnects.
    const port = await new Promise<number>((resolve) => {
      const probe = net.createServer().listen(0, '127.0.0.1', () => {
        const { port: free } = probe.address() as net.AddressInfo;
        probe.close(() => resolve(free));
      });
    });
    const client = new Redis({ host: '127.0.0.1', port, lazyConnect: true, retryStrategy: () => 100 });
    client.on('error', () => undefined);
    const store = new RedisStore({ client, prefix: `oncely-rmq-${randomUUID()}`, timeoutMs: 300 });
    let runs = 0;
    // A claim that timed out here may have landed in Redis once it answered: its lease (1 s, from `fast`) must lapse first.
    const worker = await consumer(queue, () => void runs++, { store });
    publish(queue, 'charge', 'charge-1');
    await until(() => worker.count('store_error') >= 2, 'two failed deliveries');
    assert.equal(runs, 0);
    const { hostname, port: redisPort } = new URL(REDIS_URL);
    const proxy = net.createServer((socket) => {
      const upstream = net.connect(Number(redisPort), hostname);
      socket.pipe(upstream).pipe(socket);
      socket.on('error', () => upstream.destroy());
      upstream.on('error', () => socket.destroy());
    }).listen(port, '127.0.0.1');
    try {
      await until(() => worker.count('processed') === 1, 'the run after the store came back');
      publish(queue, 'charge', 'charge-1');
      await until(() => worker.count('duplicate') === 1, 'the duplicate');
      await worker.close();
      assert.equal(runs, 1);
      assert.equal(await ready(queue), 0);
    } finally {
      client.disconnect();
      proxy.close();
    }
  });

  it('close() waits for the running handler, settles it, and takes no more messages', async () => {
    const { queue } = await queues();
    const runs: string[] = [];
    const worker = await consumer(queue, async (message) => {
      runs.push(message.properties.messageId as string);
      await sleep(200);
    }, {}, 1);
    publish(queue, 'a', 'first');
    await until(() => runs.length === 1, 'the first run');
    publish(queue, 'b', 'second');
    await worker.close();
    assert.deepEqual(runs, ['first']);
    assert.equal(worker.count('processed'), 1, 'the running handler finished and was acked before close() resolved');
    assert.equal(await ready(queue), 1, 'the second message is back in the queue, not taken');
  });
});
