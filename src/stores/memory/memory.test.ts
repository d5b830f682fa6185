import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { StoreUnavailableError } from '../../core/errors.js';
import { randomId } from '../../testing/index.js';
import { MemoryStore } from './index.js';

const FP = 'a'.repeat(64);
const DAY = 86_400_000;

async function completeNew(store: MemoryStore, id = randomId()): Promise<string> {
  const claim = await store.claim({ id, fingerprint: FP, leaseMs: DAY });
  assert.ok(claim.status === 'acquired');
  assert.equal(await store.complete(id, claim.token, new Uint8Array([1]), DAY), 'ok');
  return id;
}

describe('MemoryStore', () => {
  it('evicts the least recently used completed record when full', async () => {
    const store = new MemoryStore({ maxRecords: 3, sweepIntervalMs: 0 });
    const [a, b, c] = [await completeNew(store), await completeNew(store), await completeNew(store)];
    assert.ok(await store.get(a)); // a is now the most recently used
    await completeNew(store);
    assert.equal(store.size, 3);
    assert.equal(await store.get(b), undefined, 'b was least recently used');
    assert.ok(await store.get(a));
    assert.ok(await store.get(c));
  });

  it('never evicts an in-progress record; refuses a claim when only in-progress records remain', async () => {
    const store = new MemoryStore({ maxRecords: 2, sweepIntervalMs: 0 });
    const held = [randomId(), randomId()];
    for (const id of held) assert.equal((await store.claim({ id, fingerprint: FP, leaseMs: DAY })).status, 'acquired');
    await assert.rejects(store.claim({ id: randomId(), fingerprint: FP, leaseMs: DAY }), StoreUnavailableError);
    for (const id of held) assert.equal((await store.get(id))?.state, 'in_progress');
  });

  it('sweeps lapsed records on its timer', async () => {
    let now = 1_000;
    const store = new MemoryStore({ sweepIntervalMs: 20, now: () => now });
    const claim = await store.claim({ id: randomId(), fingerprint: FP, leaseMs: 100 });
    assert.equal(claim.status, 'acquired');
    await completeNew(store);
    assert.equal(store.size, 2);
    now += 2 * DAY;
    await new Promise((resolve) => setTimeout(resolve, 60));
    assert.equal(store.size, 0);
    await store.close();
  });

  it('keeps its own copy of an outcome', async () => {
    const store = new MemoryStore();
    const id = randomId();
    const claim = await store.claim({ id, fingerprint: FP, leaseMs: DAY });
    assert.ok(claim.status === 'acquired');
    const outcome = new Uint8Array([1, 2, 3]);
    await store.complete(id, claim.token, outcome, DAY);
    outcome[0] = 9;
    const record = await store.get(id);
    assert.ok(record?.state === 'completed');
    assert.deepEqual([...record.outcome], [1, 2, 3]);
  });
});
