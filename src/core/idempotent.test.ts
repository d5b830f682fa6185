import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { MemoryStore } from '../stores/memory/index.js';
import { InProgressError, InvalidKeyError, InvalidOptionError, KeyReuseError, LeaseLostError, StoreUnavailableError, StoredFailureError, UnserializableResultError } from './errors.js';
import { executionContext } from './execution-context.js';
import { idempotent } from './idempotent.js';
import { identityId } from './identity.js';

interface Order {
  id: string;
  amountCents: number;
}
interface Charge {
  chargeId: number;
  amount: bigint;
  at: Date;
}

function chargeCounter() {
  let charges = 0;
  async function chargeCard(order: Order): Promise<Charge> {
    charges++;
    return { chargeId: charges, amount: BigInt(order.amountCents), at: new Date(1_700_000_000_000) };
  }
  return { chargeCard, count: () => charges };
}

const order: Order = { id: 'order-1', amountCents: 1999 };

describe('idempotent()', () => {
  it('runs the function once for five retries and returns the same typed result each time', async () => {
    const store = new MemoryStore();
    const { chargeCard, count } = chargeCounter();
    const charge = idempotent(chargeCard, { store, key: (o) => o.id });
    const results: Charge[] = [];
    for (let attempt = 0; attempt < 5; attempt++) results.push(await charge(order));
    assert.equal(count(), 1);
    for (const result of results) assert.deepStrictEqual(result, { chargeId: 1, amount: 1999n, at: new Date(1_700_000_000_000) });
    // @ts-expect-error the wrapper keeps fn's parameter types
    await assert.rejects(charge('not an order'));
  });

  it('lets exactly one of 50 concurrent calls run; the others get InProgressError', async () => {
    const store = new MemoryStore();
    let runs = 0;
    const slow = idempotent(async (o: Order) => { runs++; await sleep(100); return o.id; }, { store, namespace: 'slow', key: (o) => o.id });
    const settled = await Promise.allSettled(Array.from({ length: 50 }, () => slow(order)));
    assert.equal(runs, 1);
    assert.equal(settled.filter((s) => s.status === 'fulfilled').length, 1);
    const rejected = settled.filter((s): s is PromiseRejectedResult => s.status === 'rejected');
    assert.equal(rejected.length, 49);
    for (const r of rejected) assert.ok(r.reason instanceof InProgressError && r.reason.retryAfterMs > 0);
  });

  it('with onInProgress.waitMs, 50 concurrent calls all get the one result', async () => {
    const store = new MemoryStore();
    let runs = 0;
    const slow = idempotent(async (o: Order) => { runs++; await sleep(100); return `${o.id}:${runs}`; }, { store, namespace: 'wait', key: (o) => o.id, onInProgress: { waitMs: 2000 } });
    const results = await Promise.all(Array.from({ length: 50 }, () => slow(order)));
    assert.equal(runs, 1);
    assert.deepEqual(new Set(results), new Set(['order-1:1']));
  });

  it('a waiter runs the work itself when the first execution fails and releases', async () => {
    const store = new MemoryStore();
    let runs = 0;
    const flaky = idempotent(async (_o: Order) => { runs++; await sleep(50); if (runs === 1) throw new Error('boom'); return runs; }, { store, namespace: 'flaky', key: (o) => o.id, onInProgress: { waitMs: 2000 } });
    const [first, second] = await Promise.allSettled([flaky(order), sleep(10).then(() => flaky(order))]);
    assert.equal(first.status, 'rejected');
    assert.deepEqual(second, { status: 'fulfilled', value: 2 });
    assert.equal(runs, 2);
  });

  it('refuses the same key with other arguments (KeyReuseError), also while running', async () => {
    const store = new MemoryStore();
    const { chargeCard, count } = chargeCounter();
    const charge = idempotent(chargeCard, { store, key: (o) => o.id });
    await charge(order);
    await assert.rejects(charge({ ...order, amountCents: 1 }), KeyReuseError);
    assert.equal(count(), 1);
    const slow = idempotent(async (o: Order) => { await sleep(100); return o; }, { store, namespace: 'slow', key: (o) => o.id });
    const running = slow(order);
    await assert.rejects(slow({ ...order, amountCents: 5 }), KeyReuseError);
    await running;
  });

  it('ignores argument key order when fingerprinting', async () => {
    const store = new MemoryStore();
    let runs = 0;
    const create = idempotent(async (_input: { id: string; a: number; b: number }) => ++runs, { store, namespace: 'create', key: (input) => input.id });
    await create({ id: 'k', a: 1, b: 2 });
    assert.equal(await create({ b: 2, a: 1, id: 'k' }), 1);
  });

  it('releases the key when the function throws, so a retry runs again', async () => {
    const store = new MemoryStore();
    let runs = 0;
    const failing = idempotent(async (_o: Order) => { runs++; if (runs === 1) throw new TypeError('card declined'); return 'charged'; }, { store, namespace: 'failing', key: (o) => o.id });
    await assert.rejects(failing(order), TypeError);
    assert.equal(await failing(order), 'charged');
    assert.equal(runs, 2);
  });

  it("with onError 'store', duplicates get the first error without running", async () => {
    const store = new MemoryStore();
    let runs = 0;
    const failing = idempotent(async (_o: Order) => { runs++; throw new RangeError('amount too large'); }, { store, namespace: 'store-errors', key: (o) => o.id, onError: 'store' });
    await assert.rejects(failing(order), RangeError);
    await assert.rejects(failing(order), (error: unknown) => error instanceof StoredFailureError && error.originalName === 'RangeError' && error.message === 'amount too large');
    assert.equal(runs, 1);
  });

  it('keeps the claim with heartbeats while the work runs three times longer than the lease', async () => {
    const store = new MemoryStore();
    let runs = 0;
    const long = idempotent(async (_o: Order) => { runs++; await sleep(450); return 'done'; }, { store, namespace: 'long', key: (o) => o.id, leaseMs: 150 });
    const first = long(order);
    await sleep(300);
    await assert.rejects(long(order), InProgressError);
    assert.equal(await first, 'done');
    assert.equal(await long(order), 'done');
    assert.equal(runs, 1);
  });

  it('without heartbeats a lapsed lease is taken over and the stale holder cannot store', async () => {
    const store = new MemoryStore();
    let runs = 0;
    const long = idempotent(async (_o: Order) => { const run = ++runs; await sleep(run === 1 ? 300 : 10); return run; }, { store, namespace: 'no-beat', key: (o) => o.id, leaseMs: 100, heartbeat: false });
    const stale = long(order);
    await sleep(150);
    assert.equal(await long(order), 2);
    await assert.rejects(stale, LeaseLostError);
    assert.equal(await long(order), 2, 'the newer holder result stays');
  });

  it('without heartbeats the signal aborts when the lease lapses, before a takeover can store', async () => {
    const store = new MemoryStore();
    let abortedAfterMs: number | undefined;
    const started = Date.now();
    const slow = idempotent(async (_o: Order) => {
      const { signal } = executionContext();
      await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }));
      abortedAfterMs = Date.now() - started;
      assert.ok(signal.reason instanceof LeaseLostError);
      await sleep(150); // work that ignores the signal: a newer holder takes over meanwhile
      return 'late';
    }, { store, namespace: 'no-beat-signal', key: (o) => o.id, leaseMs: 120, heartbeat: false });
    const stale = slow(order);
    const newer = idempotent(async (_o: Order) => 'newer', { store, namespace: 'no-beat-signal', key: (o) => o.id, leaseMs: 120 });
    await sleep(200);
    assert.equal(await newer(order), 'newer');
    await assert.rejects(stale, LeaseLostError);
    assert.ok(abortedAfterMs !== undefined && abortedAfterMs >= 100 && abortedAfterMs < 190, `aborted after ${abortedAfterMs} ms`);
  });

  it('aborts the execution signal when the claim is lost, and stores nothing', async () => {
    const store = new MemoryStore();
    let sawAbort = false;
    const id = identityId('watched', '', order.id);
    const watched = idempotent(async (_o: Order) => {
      const { signal } = executionContext();
      await store.delete(id); // an operator force-releases the claim
      await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }));
      sawAbort = signal.aborted;
      return 'late';
    }, { store, namespace: 'watched', key: (o) => o.id, leaseMs: 90 });
    await assert.rejects(watched(order), LeaseLostError);
    assert.ok(sawAbort);
    assert.equal(await store.get(id), undefined);
  });

  it('gives the work a downstreamKey that is stable per identity', async () => {
    const store = new MemoryStore();
    const keys: string[] = [];
    const options = { store, namespace: 'ctx', key: (o: Order) => o.id, onError: 'release' as const };
    const capture = idempotent(async (_o: Order) => { keys.push(executionContext().downstreamKey); throw new Error('retry me'); }, options);
    const again = idempotent(async (_o: Order) => { keys.push(executionContext().downstreamKey); throw new Error('retry me'); }, options);
    await assert.rejects(capture(order));
    await assert.rejects(again(order));
    await assert.rejects(capture({ ...order, id: 'order-2' }));
    assert.equal(keys[0], keys[1]);
    assert.notEqual(keys[0], keys[2]);
    assert.match(keys[0]!, /^[0-9a-f]{64}$/);
    assert.throws(() => executionContext(), /outside an idempotent execution/);
  });

  it('keeps scopes apart: the same key for two callers runs twice', async () => {
    const store = new MemoryStore();
    let runs = 0;
    const perUser = idempotent(async (_user: string, _o: Order) => ++runs, { store, namespace: 'scoped', key: (_u, o) => o.id, scope: (user) => user, fingerprint: (_u, o) => o.id });
    assert.equal(await perUser('alice', order), 1);
    assert.equal(await perUser('bob', order), 2);
    assert.equal(await perUser('alice', order), 1);
  });

  it('refuses a result it cannot store, and releases the key', async () => {
    const store = new MemoryStore();
    let runs = 0;
    const bad = idempotent(async (_o: Order) => { runs++; return { callback: () => 1 }; }, { store, namespace: 'bad', key: (o) => o.id });
    await assert.rejects(bad(order), (error: unknown) => error instanceof UnserializableResultError && error.path === '$.callback');
    await assert.rejects(bad(order), UnserializableResultError);
    assert.equal(runs, 2);
  });

  it('does not run the work when the store refuses the claim (fail closed)', async () => {
    const store = new MemoryStore({ maxRecords: 1 });
    let runs = 0;
    const hold = idempotent(async (_o: Order) => { await sleep(50); return ++runs; }, { store, namespace: 'hold', key: (o) => o.id });
    const holding = hold(order);
    await assert.rejects(hold({ ...order, id: 'other' }), StoreUnavailableError);
    await holding;
    assert.equal(runs, 1);
  });

  it('rejects bad options and keys clearly', async () => {
    const store = new MemoryStore();
    assert.throws(() => idempotent(async () => 1, { store, key: () => 'k' }), InvalidOptionError);
    assert.throws(() => idempotent(async function named() { return 1; }, { store, key: () => 'k', leaseMs: 0 }), /`leaseMs` must be a whole number of milliseconds/);
    const empty = idempotent(async function named() { return 1; }, { store, key: () => '' });
    await assert.rejects(empty(), InvalidKeyError);
  });
});
