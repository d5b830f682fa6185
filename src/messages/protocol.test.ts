/**
 * The consumer protocol's table (DESIGN §4.2), row by row, on a real in-process store: each
 * claim outcome and handler result maps to exactly one broker action, and the handler runs at
 * most once per identity.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { executionContext } from '../core/execution-context.js';
import { identityId, sha256Hex } from '../core/identity.js';
import { InvalidOptionError } from '../core/errors.js';
import { MemoryStore } from '../stores/memory/index.js';
import { RedisStore } from '../stores/redis/index.js';
import { createMessageProtocol, type ConsumerOptions, type DeliveryFacts, type MessageEvent } from './protocol.js';

interface Message {
  id?: string;
  body: string;
  user?: string;
}

const facts = (message: Message, attempt: number | undefined = 1, extra: Partial<DeliveryFacts> = {}): DeliveryFacts => ({
  id: message.id,
  body: Buffer.from(message.body),
  attempt,
  source: 'orders',
  ...extra,
});

function consumer(options: Partial<ConsumerOptions<Message>> = {}) {
  const events: MessageEvent[] = [];
  const protocol = createMessageProtocol<Message>({ store: new MemoryStore(), observer: (event) => events.push(event), ...options });
  return { ...protocol, events, types: () => events.map((event) => event.type) };
}

describe('message protocol', () => {
  it('runs a new message and acks it; a duplicate delivery is acked without running', async () => {
    const { deliver, types } = consumer();
    let runs = 0;
    const message = { id: 'm-1', body: '{"deposit":100}' };
    assert.deepEqual(await deliver(message, facts(message), () => runs++), { action: 'ack', outcome: 'processed' });
    assert.deepEqual(await deliver(message, facts(message, 2), () => runs++), { action: 'ack', outcome: 'duplicate' });
    assert.equal(runs, 1);
    assert.deepEqual(types(), ['processed', 'duplicate']);
  });

  it('hands the handler an execution context whose downstreamKey is stable per message', async () => {
    const { deliver } = consumer({ key: (m) => `welcome:${m.user}` });
    const seen: string[] = [];
    const first = { id: 'a', body: 'x', user: '42' };
    const failing = () => {
      seen.push(executionContext().downstreamKey);
      throw new Error('email API down');
    };
    assert.equal((await deliver(first, facts(first), failing)).action, 'retry');
    await deliver(first, facts(first, 2), (_m, context) => seen.push(context.downstreamKey));
    assert.equal(seen.length, 2);
    assert.equal(seen[0], seen[1]);
  });

  it('retries a message another consumer is running, after the lease, without running it', async () => {
    const { deliver, types } = consumer({ leaseMs: 5_000 });
    const message = { id: 'm-2', body: 'b' };
    let release!: () => void;
    const running = deliver(message, facts(message), () => new Promise<void>((resolve) => (release = resolve)));
    await sleep(10);
    let ran = false;
    const action = await deliver(message, facts(message), () => (ran = true));
    assert.equal(action.action === 'retry' && action.reason, 'in_progress');
    const delayMs = action.action === 'retry' ? action.delayMs : 0;
    assert.ok(delayMs > 4_500 && delayMs <= 5_000, `back after the holder's remaining lease, got ${delayMs} ms`);
    assert.equal(ran, false);
    release();
    assert.equal((await running).action, 'ack');
    assert.deepEqual(types(), ['in_progress', 'processed']);
  });

  it("retries a duplicate of a crashed holder after what is left of that holder's lease, not a whole lease", async () => {
    const store = new MemoryStore();
    const message = { id: 'm-crashed', body: 'b' };
    // A holder that claimed it with a 1 000 ms lease and died: nothing extends its lease.
    await store.claim({ id: identityId('orders', '', message.id), fingerprint: sha256Hex(message.body), leaseMs: 1_000 });
    const { deliver } = createMessageProtocol<Message>({ store, leaseMs: 30_000 });
    const action = await deliver(message, facts(message), () => undefined);
    assert.equal(action.action === 'retry' && action.reason, 'in_progress');
    const delayMs = action.action === 'retry' ? action.delayMs : 0;
    assert.ok(Number.isInteger(delayMs) && delayMs > 500 && delayMs < 1_100, `waits out what is left of the holder's 1 s lease, got ${delayMs} ms`);
  });

  it('dead-letters the same identity with another payload, never running it', async () => {
    const { deliver, types } = consumer();
    await deliver({ id: 'm-3', body: '+100' }, facts({ id: 'm-3', body: '+100' }), () => undefined);
    let ran = false;
    const action = await deliver({ id: 'm-3', body: '+999' }, facts({ id: 'm-3', body: '+999' }), () => (ran = true));
    assert.equal(action.action, 'dead-letter');
    assert.equal(action.action === 'dead-letter' && action.reason, 'mismatch');
    assert.equal(ran, false);
    assert.deepEqual(types(), ['processed', 'mismatch', 'dead_lettered']);
  });

  it('releases and retries with backoff on a failure, then dead-letters at maxAttempts', async () => {
    const { deliver, types } = consumer({ maxAttempts: 3, backoff: { baseMs: 100, maxMs: 250 } });
    const message = { id: 'poison', body: 'p' };
    let runs = 0;
    const fail = () => {
      runs++;
      throw new TypeError('cannot read amount');
    };
    const actions = [];
    for (const attempt of [1, 2, 3]) actions.push(await deliver(message, facts(message, attempt), fail));
    assert.deepEqual(actions.slice(0, 2).map((a) => a.action === 'retry' && a.delayMs), [100, 200]);
    assert.equal(actions[2]!.action === 'dead-letter' && actions[2]!.reason, 'max-attempts');
    assert.match(actions[2]!.action === 'dead-letter' ? actions[2]!.detail : '', /TypeError: cannot read amount/);
    assert.equal(runs, 3, 'each attempt ran: the claim was released every time');
    assert.deepEqual(types(), ['retry', 'retry', 'dead_lettered']);
  });

  it('dead-letters a permanent error at once; a classifier that throws means retryable', async () => {
    const permanent = consumer({ isPermanent: (error) => error instanceof RangeError });
    const message = { id: 'm-4', body: 'b' };
    const action = await permanent.deliver(message, facts(message), () => {
      throw new RangeError('amount below zero');
    });
    assert.equal(action.action === 'dead-letter' && action.reason, 'permanent-error');
    const broken = consumer({
      isPermanent: () => {
        throw new Error('classifier bug');
      },
    });
    assert.equal((await broken.deliver(message, facts(message), () => Promise.reject(new Error('x')))).action, 'retry');
  });

  it('dead-letters a message with no identity, naming the fix, and never hashes its content', async () => {
    const { deliver, events } = consumer();
    let ran = false;
    const action = await deliver({ body: '+100' }, facts({ body: '+100' }), () => (ran = true));
    assert.equal(action.action === 'dead-letter' && action.reason, 'no-identity');
    assert.match(action.action === 'dead-letter' ? action.detail : '', /messageId|key\(message\)/);
    assert.equal(ran, false);
    assert.equal(events[0]?.type, 'dead_lettered');
  });

  it("accepts a scope of '' (one shared scope, as by default)", async () => {
    const { deliver } = consumer({ scope: () => '' });
    assert.equal((await deliver({ id: 'm-s', body: 'b' }, facts({ id: 'm-s', body: 'b' }), () => undefined)).action, 'ack');
  });

  it('dead-letters when the key callback throws or returns no string', async () => {
    for (const key of [() => { throw new Error('no user'); }, () => '' as string, () => 7 as unknown as string]) {
      const { deliver } = consumer({ key });
      const action = await deliver({ id: 'm', body: 'b' }, facts({ id: 'm', body: 'b' }), () => undefined);
      assert.equal(action.action === 'dead-letter' && action.reason, 'callback-failed');
    }
  });

  it('runs nothing and retries when the store is unreachable', async () => {
    const dead = new Redis('redis://127.0.0.1:1', { lazyConnect: true, maxRetriesPerRequest: 0 });
    dead.on('error', () => undefined);
    try {
      const { deliver, types } = consumer({ store: new RedisStore({ client: dead, timeoutMs: 200 }) });
      let ran = false;
      const action = await deliver({ id: 'm-5', body: 'b' }, facts({ id: 'm-5', body: 'b' }, 2), () => (ran = true));
      assert.equal(action.action === 'retry' && action.reason, 'store_error');
      assert.equal(ran, false);
      assert.deepEqual(types(), ['store_error']);
    } finally {
      dead.disconnect();
    }
  });

  it('extends the broker hold on every heartbeat while the handler runs, and observer failures change nothing', async () => {
    let holds = 0;
    const { deliver } = consumer({
      leaseMs: 90,
      observer: () => {
        throw new Error('metrics down');
      },
    });
    const message = { id: 'slow', body: 'b' };
    const action = await deliver(message, facts(message, 1, { extendHold: () => void holds++ }), () => sleep(200));
    assert.equal(action.action, 'ack');
    assert.ok(holds >= 3, `the hold was extended ${holds} times in 200 ms with a 90 ms lease`);
  });

  it('refuses bad options when the consumer is made, naming them', () => {
    const store = new MemoryStore();
    for (const [option, options] of [
      ['store', {}],
      ['key', { store, key: 'id' }],
      ['maxAttempts', { store, maxAttempts: 0 }],
      ['backoff', { store, backoff: { baseMs: 10, maxMs: 5 } }],
      ['isPermanent', { store, isPermanent: true }],
      ['retries', { store, retries: 3 }],
    ] as const) {
      assert.throws(() => createMessageProtocol(options as never), (error: unknown) => error instanceof InvalidOptionError && error.option === option);
    }
  });
});
