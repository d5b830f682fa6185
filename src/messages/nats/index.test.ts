/**
 * oncely/nats against a real nats-server with JetStream: redeliveries (a duplicate publish, a
 * failed ack on a closed connection) run the handler once; a handler longer than AckWait keeps
 * the message by heartbeat; poison and permanent errors are terminated, with a copy and its
 * reason on the dead-letter subject and the server's MSG_TERMINATED advisory; a store that is
 * down runs nothing; a mismatch and a message without identity are dead-lettered, never run;
 * close() waits for running handlers. Each test has its own stream, deleted afterwards.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { jetstream, jetstreamManager, type JetStreamManager, type JsMsg } from '@nats-io/jetstream';
import { connect, headers } from '@nats-io/transport-node';
import { Redis } from 'ioredis';
import { InvalidOptionError } from '../../core/errors.js';
import { MemoryStore } from '../../stores/memory/index.js';
import { RedisStore } from '../../stores/redis/index.js';
import { skipUnlessReachable } from '../../../test/support/services.js';
import type { MessageEvent } from '../protocol.js';
import { consumeIdempotently, type NatsConsumerOptions } from './index.js';

const NATS_URL = 'nats://127.0.0.1:4222';
const skip = await skipUnlessReachable('NATS JetStream', NATS_URL);
const nc = skip ? undefined : await connect({ servers: NATS_URL });
const jsm = (nc ? await jetstreamManager(nc) : undefined) as JetStreamManager;
const js = nc ? jetstream(nc) : undefined!;
const cleanup: (() => Promise<unknown>)[] = [];
after(async () => {
  for (const step of cleanup.reverse()) await step().catch(() => undefined);
  await nc?.close();
});

interface StreamSetup {
  ackWaitMs?: number;
  maxDeliver?: number;
  ackPolicy?: 'explicit' | 'none' | 'all';
}

/** A stream `<name>` on `<name>.>` with a durable consumer `worker`, and a dead-letter stream on `dead.<name>`; deleted after the run. */
async function makeStream({ ackWaitMs = 30_000, maxDeliver = -1, ackPolicy = 'explicit' }: StreamSetup = {}) {
  const name = `oncely_${randomUUID().slice(0, 8)}`;
  // A short duplicate window: the tests publish one Nats-Msg-Id twice past JetStream's own dedupe.
  await jsm.streams.add({ name, subjects: [`${name}.>`], duplicate_window: 100_000_000 });
  await jsm.streams.add({ name: `${name}_dead`, subjects: [`dead.${name}`] });
  cleanup.push(() => jsm.streams.delete(name), () => jsm.streams.delete(`${name}_dead`));
  await jsm.consumers.add(name, { durable_name: 'worker', ack_policy: ackPolicy as never, ack_wait: ackWaitMs * 1e6, max_deliver: maxDeliver });
  const publish = async (body: string, id?: string) => {
    const h = headers();
    if (id !== undefined) h.set('Nats-Msg-Id', id);
    // Until stored as a message of its own: past the duplicate window, which the server prunes by timer.
    while ((await js.publish(`${name}.in`, body, { headers: h })).duplicate) await sleep(50);
  };
  const state = () => jsm.consumers.info(name, 'worker');
  const deadLetters = async () => {
    const { state: { messages } } = await jsm.streams.info(`${name}_dead`);
    const stored = await Promise.all(Array.from({ length: messages }, (_, i) => jsm.streams.getMessage(`${name}_dead`, { seq: i + 1 })));
    return stored.map((m) => ({ body: m!.string(), reason: m!.header.get('Oncely-Dead-Letter-Reason'), detail: m!.header.get('Oncely-Dead-Letter-Detail'), sequence: m!.header.get('Oncely-Dead-Letter-Sequence') }));
  };
  return { name, publish, state, deadLetters, consumer: () => js.consumers.get(name, 'worker'), deadLetter: { jetstream: js, subject: `dead.${name}` } };
}

async function waitFor(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 8_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

const settled = async (stream: { state: () => ReturnType<JetStreamManager['consumers']['info']> }) => {
  const info = await stream.state();
  return info.num_pending === 0 && info.num_ack_pending === 0;
};

function recorder() {
  const events: MessageEvent[] = [];
  return { events, observer: (event: MessageEvent) => events.push(event), types: () => events.map((e) => e.type) };
}

describe('oncely/nats: consumeIdempotently on JetStream', { skip }, () => {
  it('runs a message published twice with one Nats-Msg-Id once and acks both; the stream sequence alone does not dedupe a second publish', async () => {
    const stream = await makeStream();
    const { events, observer, types } = recorder();
    const runs: string[] = [];
    const consumer = await consumeIdempotently(await stream.consumer(), (msg, { key }) => void runs.push(`${key}=${msg.string()}`), { store: new MemoryStore(), observer });
    try {
      await stream.publish('order 1', 'order-1');
      await stream.publish('order 1', 'order-1');
      await stream.publish('no id');
      await stream.publish('no id');
      await waitFor('four settled deliveries', () => events.length === 4 && settled(stream));
      assert.deepEqual(runs, ['order-1=order 1', 'seq:3=no id', 'seq:4=no id']);
      assert.deepEqual(types(), ['processed', 'duplicate', 'processed', 'processed']);
      assert.equal(events[0]!.source, `${stream.name}/worker`);
    } finally {
      await consumer.close();
    }
  });

  it('a duplicate delivered while the first still runs is nacked for the lease, comes back, and is acked without running', async () => {
    const stream = await makeStream();
    const { events, observer, types } = recorder();
    let runs = 0;
    // The first run lasts until the duplicate has been turned away.
    const handler = async () => (runs++, waitFor('the duplicate', () => events.length > 0));
    const consumer = await consumeIdempotently(await stream.consumer(), handler, { store: new MemoryStore(), leaseMs: 1_000, concurrency: 2, observer });
    try {
      await stream.publish('charge card 9', 'charge-9');
      await stream.publish('charge card 9', 'charge-9');
      await waitFor('both settled', () => events.length === 3 && settled(stream));
      assert.equal(runs, 1);
      assert.deepEqual(types(), ['in_progress', 'processed', 'duplicate']);
      assert.deepEqual(events.map((e) => e.attempt), [1, 1, 2], 'the duplicate was handed back and delivered again');
    } finally {
      await consumer.close();
    }
  });

  it('a failed ack (connection closed mid-handler) brings the message back after AckWait, acked as a duplicate without running again', async () => {
    const stream = await makeStream({ ackWaitMs: 1_000 });
    const store = new MemoryStore();
    const first = await connect({ servers: NATS_URL });
    const runs: JsMsg[] = [];
    let finish!: () => void;
    const gate = new Promise<void>((resolve) => (finish = resolve));
    const a = await consumeIdempotently(await jetstream(first).consumers.get(stream.name, 'worker'), async (msg) => (runs.push(msg), gate), { store, leaseMs: 1_500 });
    await stream.publish('welcome user 42');
    await waitFor('the first run', () => runs.length === 1);
    await first.close();
    finish();
    await a.close();
    const { events, observer, types } = recorder();
    const b = await consumeIdempotently(await stream.consumer(), (msg) => void runs.push(msg), { store, leaseMs: 1_500, observer });
    try {
      await waitFor('the redelivery', () => events.length === 1 && settled(stream));
      assert.equal(runs.length, 1);
      assert.deepEqual(types(), ['duplicate']);
      assert.equal(events[0]!.attempt, 2, 'the same stored message, delivered a second time');
    } finally {
      await b.close();
    }
  });

  it('a handler running 3.5 s under an AckWait of 1 s keeps the message by heartbeat: no redelivery to a competing consumer', async () => {
    const stream = await makeStream({ ackWaitMs: 1_000 });
    const store = new MemoryStore();
    const { events, observer, types } = recorder();
    let runs = 0;
    const slow = async () => (runs++, sleep(3_500));
    const options = { store, leaseMs: 1_500, observer };
    const a = await consumeIdempotently(await stream.consumer(), slow, options);
    const other = await connect({ servers: NATS_URL });
    const b = await consumeIdempotently(await jetstream(other).consumers.get(stream.name, 'worker'), slow, options);
    try {
      await stream.publish('long job', 'job-1');
      await waitFor('the run to end', () => events.length === 1, 6_000);
      assert.equal(runs, 1);
      assert.deepEqual(types(), ['processed']);
      const info = await stream.state();
      assert.equal(info.num_redelivered, 0, 'AckWait never lapsed');
      assert.equal(info.num_ack_pending, 0);
    } finally {
      await Promise.all([a.close(), b.close()]);
      await other.close();
    }
  });

  it('dead-letters a poison message after maxAttempts with term(): the copy on the dead-letter subject and the MSG_TERMINATED advisory', async () => {
    const stream = await makeStream();
    const advisories = nc!.subscribe(`$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.${stream.name}.worker`, { max: 1 });
    const { observer, types } = recorder();
    let runs = 0;
    const consumer = await consumeIdempotently(
      await stream.consumer(),
      () => {
        runs++;
        throw new Error('cannot parse\nline two');
      },
      { store: new MemoryStore(), maxAttempts: 3, backoff: { baseMs: 50, maxMs: 100 }, observer, deadLetter: stream.deadLetter },
    );
    try {
      await stream.publish('poison', 'p-1');
      await waitFor('the dead-letter', async () => (await stream.deadLetters()).length === 1 && settled(stream));
      assert.equal(runs, 3);
      assert.deepEqual(types(), ['retry', 'retry', 'dead_lettered']);
      assert.deepEqual(await stream.deadLetters(), [{ body: 'poison', reason: 'max-attempts', detail: 'Error: cannot parse line two', sequence: '1' }]);
      for await (const advisory of advisories) assert.deepEqual([advisory.json<{ stream_seq: number; deliveries: number }>()].map((a) => [a.stream_seq, a.deliveries]), [[1, 3]]);
    } finally {
      await consumer.close();
    }
  });

  it('dead-letters at once an error isPermanent() recognises', async () => {
    const stream = await makeStream();
    let runs = 0;
    const consumer = await consumeIdempotently(
      await stream.consumer(),
      () => {
        runs++;
        throw new SyntaxError('bad json');
      },
      { store: new MemoryStore(), isPermanent: (error) => error instanceof SyntaxError, deadLetter: stream.deadLetter },
    );
    try {
      await stream.publish('{', 'p-2');
      await waitFor('the dead-letter', async () => (await stream.deadLetters()).length === 1 && settled(stream));
      assert.equal(runs, 1);
      assert.deepEqual((await stream.deadLetters()).map((d) => [d.reason, d.detail]), [['permanent-error', 'SyntaxError: bad json']]);
    } finally {
      await consumer.close();
    }
  });

  it('runs nothing while the store is down and hands the message back; once the store is back it runs once', async () => {
    const stream = await makeStream();
    const deadClient = new Redis('redis://127.0.0.1:1', { lazyConnect: true });
    deadClient.on('error', () => undefined);
    const { events, observer, types } = recorder();
    let runs = 0;
    const handler = () => void runs++;
    const down = await consumeIdempotently(await stream.consumer(), handler, { store: new RedisStore({ client: deadClient, timeoutMs: 300 }), backoff: { baseMs: 100, maxMs: 100 }, observer });
    await stream.publish('payment 7', 'pay-7');
    await waitFor('two redeliveries', () => events.length >= 2);
    await down.close();
    deadClient.disconnect();
    assert.equal(runs, 0);
    assert.deepEqual(new Set(types()), new Set(['store_error']));
    const back = recorder();
    const up = await consumeIdempotently(await stream.consumer(), handler, { store: new MemoryStore(), observer: back.observer });
    try {
      await waitFor('the run', () => back.events.length === 1 && settled(stream));
      assert.equal(runs, 1);
      assert.deepEqual(back.types(), ['processed']);
      assert.ok(back.events[0]!.attempt! >= 3, 'the same message, redelivered');
    } finally {
      await up.close();
    }
  });

  it('dead-letters a mismatch (same Nats-Msg-Id, other body) without running it', async () => {
    const stream = await makeStream();
    const { events, observer, types } = recorder();
    const runs: string[] = [];
    const consumer = await consumeIdempotently(await stream.consumer(), (msg) => void runs.push(msg.string()), { store: new MemoryStore(), observer, deadLetter: stream.deadLetter });
    try {
      await stream.publish('+100 to alice', 'dep-1');
      await stream.publish('+900 to mallory', 'dep-1');
      await waitFor('both settled', async () => events.length === 3 && (await stream.deadLetters()).length === 1 && settled(stream));
      assert.deepEqual(runs, ['+100 to alice']);
      assert.deepEqual(types(), ['processed', 'mismatch', 'dead_lettered']);
      assert.deepEqual((await stream.deadLetters()).map((d) => [d.body, d.reason, d.sequence]), [['+900 to mallory', 'mismatch', '2']]);
    } finally {
      await consumer.close();
    }
  });

  it('with requireMsgId, dead-letters a message without Nats-Msg-Id as no-identity, never run', async () => {
    const stream = await makeStream();
    let runs = 0;
    const consumer = await consumeIdempotently(await stream.consumer(), () => void runs++, { store: new MemoryStore(), requireMsgId: true, deadLetter: stream.deadLetter });
    try {
      await stream.publish('+100');
      await waitFor('the dead-letter', async () => (await stream.deadLetters()).length === 1 && settled(stream));
      assert.equal(runs, 0);
      const [dead] = await stream.deadLetters();
      assert.equal(dead!.reason, 'no-identity');
      assert.match(dead!.detail!, /Nats-Msg-Id/);
    } finally {
      await consumer.close();
    }
  });

  it('close() stops pulling, waits for the running handler and its ack, and leaves later messages in the stream', async () => {
    const stream = await makeStream();
    let finish!: () => void;
    const started: string[] = [];
    const consumer = await consumeIdempotently(await stream.consumer(), (msg) => (started.push(msg.string()), new Promise<void>((resolve) => (finish = resolve))), { store: new MemoryStore() });
    await stream.publish('first', 'c-1');
    await waitFor('the handler', () => started.length === 1);
    let closed = false;
    const closing = consumer.close().then(() => (closed = true));
    await sleep(100);
    assert.equal(closed, false, 'close() waits for the running handler');
    finish();
    await closing;
    await stream.publish('second', 'c-2');
    await sleep(300);
    const info = await stream.state();
    assert.deepEqual([started, info.num_ack_pending, info.num_pending, info.ack_floor.stream_seq], [['first'], 0, 1, 1]);
  });

  it('checks its arguments and the consumer when made', async () => {
    const store = new MemoryStore();
    const refused = async (run: () => Promise<unknown>, option: string) => assert.rejects(run, (error: unknown) => error instanceof InvalidOptionError && error.option === option);
    assert.throws(() => consumeIdempotently(NATS_URL as never, () => undefined, { store }), (error: unknown) => error instanceof InvalidOptionError && error.option === 'consumer');
    const stream = await makeStream({ ackWaitMs: 1_000 });
    const consumer = await stream.consumer();
    assert.throws(() => consumeIdempotently(consumer, () => undefined, { store, deadLetter: { jetstream: NATS_URL, subject: 'x' } } as unknown as NatsConsumerOptions), (error: unknown) => error instanceof InvalidOptionError && error.option === 'deadLetter');
    assert.throws(() => consumeIdempotently(consumer, () => undefined, { store, prefetch: 5 } as NatsConsumerOptions), /unknown option `prefetch`/);
    await refused(() => consumeIdempotently(consumer, () => undefined, { store, leaseMs: 3_000 }), 'leaseMs');
    const limited = await makeStream({ maxDeliver: 3 });
    await refused(async () => consumeIdempotently(await limited.consumer(), () => undefined, { store }), 'maxAttempts');
    const unacked = await makeStream({ ackPolicy: 'none' });
    await refused(async () => consumeIdempotently(await unacked.consumer(), () => undefined, { store }), 'consumer');
  });
});
