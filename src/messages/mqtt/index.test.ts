/**
 * oncely/mqtt on a real Mosquitto: each delivery's one PUBACK, sent after its outcome is stored.
 * "Acknowledged" is checked at the broker: a resumed session resends what was not.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import mqtt from 'mqtt';
import { InvalidOptionError } from '../../core/errors.js';
import { MemoryStore } from '../../stores/memory/index.js';
import { RedisStore } from '../../stores/redis/index.js';
import { REDIS_URL, skipUnlessReachable } from '../../../test/support/services.js';
import type { MessageEvent } from '../protocol.js';
import { consumeIdempotently, type MqttConsumerOptions, type MqttMessage } from './index.js';
import { MQTT_URL, cleanUp, consumerClient, endClient, leftInSession, mqttSkip, publish, sessionOptions, unique, until, watch } from './test-broker.js';

const skip = await mqttSkip();
after(cleanUp);

/** A consumer on a fresh topic and session, with a dead-letter watcher; `effects` counts the handler's runs by message-id. */
async function setUp(handler: (message: MqttMessage) => unknown = () => undefined, options: Partial<MqttConsumerOptions> = {}) {
  const topic = unique('topic');
  const clientId = unique('consumer').replace(/\//g, '-');
  const deadLetters = await watch(`${topic}/dead`);
  const effects = new Map<string, number>();
  const events: MessageEvent[] = [];
  const client = consumerClient(clientId);
  const consumer = consumeIdempotently(
    client,
    topic,
    async (message, context) => {
      const id = String(message.packet.properties?.userProperties?.['message-id'] ?? message.payload.toString());
      effects.set(id, (effects.get(id) ?? 0) + 1);
      return handler(message) ?? context.downstreamKey;
    },
    { store: new MemoryStore(), deadLetterTopic: `${topic}/dead`, observer: (event) => events.push(event), ...options },
  );
  await consumer.ready;
  return { topic, clientId, client, consumer, effects, events, deadLetters };
}

const types = (events: MessageEvent[]) => events.map((event) => event.type);

describe('oncely/mqtt: consumeIdempotently', { skip }, () => {
  it('refuses at creation what cannot work, naming the option', () => {
    const persistent = mqtt.connect(MQTT_URL, { ...sessionOptions('oncely-test-refusals'), manualConnect: true });
    const store = new MemoryStore();
    const refusal = (make: () => unknown, option: string, message: RegExp) =>
      assert.throws(make, (error: unknown) => error instanceof InvalidOptionError && error.option === option && message.test(error.message));
    refusal(() => consumeIdempotently(MQTT_URL as never, 't', () => undefined, { store, deadLetterTopic: 'd' }), 'client', /an MQTT\.js client .*got a string/);
    const volatile = mqtt.connect(MQTT_URL, { protocolVersion: 5, clientId: 'oncely-test-volatile', manualConnect: true });
    refusal(() => consumeIdempotently(volatile, 't', () => undefined, { store, deadLetterTopic: 'd' }), 'client', /persistent session/);
    const v4 = mqtt.connect(MQTT_URL, { ...sessionOptions('oncely-test-v4'), protocolVersion: 4, manualConnect: true });
    refusal(() => consumeIdempotently(v4, 't', () => undefined, { store, deadLetterTopic: 'd' }), 'client', /MQTT 5/);
    refusal(() => consumeIdempotently(persistent, 't', () => undefined, { store } as unknown as MqttConsumerOptions), 'deadLetterTopic', /required/);
    refusal(() => consumeIdempotently(persistent, 'orders/#', () => undefined, { store, deadLetterTopic: 'orders/dead' }), 'deadLetterTopic', /does not match/);
    refusal(() => consumeIdempotently(persistent, 't', () => undefined, { store, deadLetterTopic: 'd', idPropety: 'x' } as MqttConsumerOptions), 'idPropety', /unknown option/);
    refusal(() => consumeIdempotently(persistent, '', () => undefined, { store, deadLetterTopic: 'd' }), 'topic', /topic filter/);
    consumeIdempotently(persistent, 't', () => undefined, { store, deadLetterTopic: 'd' }).ready.catch(() => undefined);
    refusal(() => consumeIdempotently(persistent, 't', () => undefined, { store, deadLetterTopic: 'd' }), 'client', /no other consumer/);
  });

  it('refuses a connected client: MQTT.js would already have acknowledged what the session kept', async () => {
    const client = await mqtt.connectAsync(MQTT_URL, sessionOptions(unique('connected').replace(/\//g, '-')));
    try {
      assert.throws(() => consumeIdempotently(client, 't', () => undefined, { store: new MemoryStore(), deadLetterTopic: 'd' }), /not connected yet/);
    } finally {
      await client.endAsync();
      await leftInSession(client.options.clientId!, 0);
    }
  });

  it('runs a message published twice with one id once and acknowledges both deliveries', async () => {
    const { topic, clientId, client, consumer, effects, events } = await setUp();
    await publish(topic, 'welcome user 42', 'm-1');
    await publish(topic, 'welcome user 42', 'm-1');
    await publish(topic, 'welcome user 43', 'm-2');
    await until('three deliveries', () => events.length === 3);
    assert.deepEqual(types(events), ['processed', 'duplicate', 'processed']);
    assert.deepEqual([...effects], [['m-1', 1], ['m-2', 1]]);
    await consumer.close();
    await endClient(client);
    assert.deepEqual(await leftInSession(clientId), [], 'every delivery was acknowledged');
  });

  it('a message whose connection dropped before its PUBACK is resent by the broker and answered as a duplicate', async () => {
    let dropped = false;
    const { topic, clientId, client, consumer, effects, events } = await setUp(async () => {
      if (dropped) return;
      dropped = true;
      const closed = new Promise<void>((resolve) => client.once('close', () => resolve()));
      client.stream.destroy();
      await closed;
    });
    await publish(topic, 'project payment', 'pay-1');
    await until('the resent delivery', () => events.length === 2);
    assert.deepEqual(types(events), ['processed', 'duplicate']);
    assert.equal(events[1]!.attempt, 2, 'a broker redelivery (DUP) is the second attempt');
    assert.equal(effects.get('pay-1'), 1);
    await consumer.close();
    await endClient(client);
    assert.deepEqual(await leftInSession(clientId), []);
  });

  it('a handler outliving the keepalive: the dropped connection resends it, which waits out the lease; one effect, one PUBACK', async () => {
    const topic = unique('slow');
    const clientId = unique('slow').replace(/\//g, '-');
    let runs = 0;
    const events: MessageEvent[] = [];
    const client = consumerClient(clientId, { keepalive: 1 });
    let reconnects = 0;
    client.on('reconnect', () => reconnects++);
    const consumer = consumeIdempotently(client, topic, async () => {
      runs++;
      await new Promise((resolve) => setTimeout(resolve, 2500));
    }, { store: new MemoryStore(), leaseMs: 900, deadLetterTopic: `${topic}/dead`, observer: (event) => events.push(event) });
    await consumer.ready;
    await publish(topic, 'slow report', 'slow-1');
    await until('the resent delivery answered as a duplicate', () => events.some((event) => event.type === 'duplicate'), 8000);
    await consumer.close();
    await endClient(client);
    assert.ok(reconnects >= 1, 'MQTT.js dropped the connection during the handler');
    assert.equal(runs, 1);
    assert.deepEqual(types(events).filter((type) => type !== 'in_progress'), ['processed', 'duplicate']);
    assert.ok(types(events).includes('in_progress'), 'the resent delivery met the running handler');
    assert.deepEqual(await leftInSession(clientId), []);
  });

  it('dead-letters a mismatch (same id, other body) without running it, the reason on the dead letter', async () => {
    const { topic, effects, events, deadLetters } = await setUp();
    await publish(topic, '+100', 'deposit-7');
    await publish(topic, '+900', 'deposit-7');
    await until('the dead letter', () => deadLetters.received.length === 1);
    assert.deepEqual(types(events), ['processed', 'mismatch', 'dead_lettered']);
    assert.equal(effects.get('deposit-7'), 1);
    const [letter] = deadLetters.received;
    assert.equal(letter!.body, '+900');
    assert.equal(letter!.properties['dead-letter-reason'], 'mismatch');
    assert.equal(letter!.properties['dead-letter-topic'], topic);
    assert.equal(letter!.properties['message-id'], 'deposit-7', 'the original user properties travel with it');
  });

  it('dead-letters a message without the identity property, never run; `key(message)` identifies one', async () => {
    const { topic, effects, deadLetters } = await setUp();
    await publish(topic, 'anonymous +100');
    await until('the dead letter', () => deadLetters.received.length === 1);
    assert.equal(effects.size, 0);
    assert.equal(deadLetters.received[0]!.properties['dead-letter-reason'], 'no-identity');
    assert.match(String(deadLetters.received[0]!.properties['dead-letter-detail']), /pass `key\(message\)`/);

    const keyed = await setUp(() => undefined, { key: (message) => String(message.packet.properties?.userProperties?.['event-id']), idProperty: 'unused' });
    await publish(keyed.topic, 'deposit', undefined, { 'event-id': 'e-1' });
    await publish(keyed.topic, 'deposit', undefined, { 'event-id': 'e-1' });
    await until('both deliveries', () => keyed.events.length === 2);
    assert.deepEqual(types(keyed.events), ['processed', 'duplicate']);
  });

  it('dead-letters a poison message after maxAttempts runs, and a permanent error at once', async () => {
    const poison = await setUp(() => {
      throw new Error('template missing');
    }, { maxAttempts: 3, backoff: { baseMs: 20, maxMs: 40 }, isPermanent: (error) => (error as Error).message === 'card declined' });
    await publish(poison.topic, 'poison', 'p-1');
    await until('the dead letter', () => poison.deadLetters.received.length === 1);
    assert.equal(poison.effects.get('p-1'), 3);
    assert.deepEqual(types(poison.events), ['retry', 'retry', 'dead_lettered']);
    assert.equal(poison.deadLetters.received[0]!.properties['dead-letter-reason'], 'max-attempts');
    assert.equal(poison.deadLetters.received[0]!.properties['dead-letter-detail'], 'Error: template missing');

    const declined = await setUp(() => {
      throw new Error('card declined');
    }, { maxAttempts: 3, isPermanent: (error) => (error as Error).message === 'card declined' });
    await publish(declined.topic, 'charge', 'c-1');
    await until('the dead letter', () => declined.deadLetters.received.length === 1);
    assert.equal(declined.effects.get('c-1'), 1);
    assert.equal(declined.deadLetters.received[0]!.properties['dead-letter-reason'], 'permanent-error');
    await declined.consumer.close();
    await endClient(declined.client);
    assert.deepEqual(await leftInSession(declined.clientId), [], 'dead-lettered, then acknowledged');
  });

  it('two consumers sharing a subscription with duplicates interleaved: each effect once, every delivery acknowledged', async () => {
    const topic = unique('shared');
    const store = new MemoryStore();
    const effects = new Map<string, number>();
    const events: MessageEvent[] = [];
    const consumers = ['a', 'b'].map((name) => {
      const clientId = unique(`shared-${name}`).replace(/\//g, '-');
      const client = consumerClient(clientId);
      const consumer = consumeIdempotently(client, `$share/oncely-test/${topic}`, async (message) => {
        const id = String(message.packet.properties?.userProperties?.['message-id']);
        effects.set(id, (effects.get(id) ?? 0) + 1);
        await new Promise((resolve) => setTimeout(resolve, 40));
      }, { store, leaseMs: 300, deadLetterTopic: `${topic}/dead`, observer: (event) => events.push(event) });
      return { clientId, client, consumer };
    });
    await Promise.all(consumers.map(({ consumer }) => consumer.ready));
    const ids = ['e-1', 'e-2', 'e-3', 'e-4', 'e-5', 'e-6'];
    for (const [index, id] of ids.entries()) {
      await publish(topic, `event ${id}`, id);
      if (index > 0) await publish(topic, `event ${ids[index - 1]}`, ids[index - 1]);
    }
    await publish(topic, 'event e-6', 'e-6');
    await until('every delivery settled', () => events.filter((event) => event.type === 'processed' || event.type === 'duplicate').length === 12, 8000);
    assert.deepEqual([...effects].sort(), ids.map((id) => [id, 1]));
    assert.ok(events.some((event) => event.type === 'duplicate'));
    for (const { client, consumer } of consumers) {
      await consumer.close();
      await endClient(client);
    }
    for (const { clientId } of consumers) assert.deepEqual(await leftInSession(clientId, 200), []);
  });

  it('store down: nothing runs and nothing is acknowledged; the next session, with the store back, processes it once', async (t) => {
    const redisSkip = await skipUnlessReachable('Redis', REDIS_URL);
    if (redisSkip) return t.skip(redisSkip);
    const deadClient = new Redis('redis://127.0.0.1:1', { lazyConnect: true, maxRetriesPerRequest: 0 });
    deadClient.on('error', () => undefined);
    const topic = unique('store-down');
    const clientId = unique('store-down').replace(/\//g, '-');
    let runs = 0;
    const handler = () => void runs++;
    const events: MessageEvent[] = [];
    const down = consumerClient(clientId);
    const downConsumer = consumeIdempotently(down, topic, handler, {
      store: new RedisStore({ client: deadClient, timeoutMs: 200 }),
      backoff: { baseMs: 50, maxMs: 50 },
      deadLetterTopic: `${topic}/dead`,
      observer: (event) => events.push(event),
    });
    await downConsumer.ready;
    await publish(topic, 'send invoice 9', 'inv-9');
    await until('two store errors', () => events.filter((event) => event.type === 'store_error').length >= 2);
    await downConsumer.close();
    await endClient(down);
    deadClient.disconnect();
    assert.equal(runs, 0);

    const redis = new Redis(REDIS_URL);
    const prefix = unique('oncely-mqtt').replace(/\//g, '-');
    try {
      const up = consumerClient(clientId);
      const upConsumer = consumeIdempotently(up, topic, handler, { store: new RedisStore({ client: redis, prefix }), deadLetterTopic: `${topic}/dead`, observer: (event) => events.push(event) });
      await until('the resent message processed', () => events.at(-1)?.type === 'processed');
      await upConsumer.close();
      await endClient(up);
      assert.equal(runs, 1);
      assert.deepEqual(await leftInSession(clientId), []);
    } finally {
      const keys = await redis.keys(`${prefix}*`);
      if (keys.length > 0) await redis.del(...keys);
      redis.disconnect();
    }
  });

  it('close() waits for the running handler and acknowledges it, then takes and acknowledges nothing', async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const { topic, clientId, client, consumer, effects } = await setUp(() => gate);
    await publish(topic, 'first', 'c-1');
    await until('the handler running', () => effects.get('c-1') === 1);
    let closed = false;
    const closing = consumer.close().then(() => (closed = true));
    await publish(topic, 'second', 'c-2');
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(closed, false, 'close() waits for the handler');
    release();
    await closing;
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.deepEqual([...effects], [['c-1', 1]]);
    await endClient(client);
    assert.deepEqual(await leftInSession(clientId), ['c-2'], 'the finished message acknowledged, the one after close() left to the session');
  });
});
