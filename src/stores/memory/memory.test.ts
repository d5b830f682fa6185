import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, it } from 'node:test';
import { StoreUnavailableError } from '../../core/errors.js';
import { randomId } from '../../testing/index.js';
import { MemoryStore } from './index.js';

const FP = 'a'.repeat(64);
const DAY = 86_400_000;
const MiB = 1024 * 1024;
/** What a record without meta counts for besides its outcome: 2 bytes a character of its id and fingerprint. */
const TEXT = 2 * (64 + 64);

async function completeNew(store: MemoryStore, id = randomId(), outcome = new Uint8Array([1])): Promise<string> {
  const claim = await store.claim({ id, fingerprint: FP, leaseMs: DAY });
  assert.ok(claim.status === 'acquired');
  assert.equal(await store.complete(id, claim.token, outcome, DAY), 'ok');
  return id;
}

/** Runs fill-process.ts: what a process holds after storing `count` outcomes of `size` bytes in a default MemoryStore. */
async function fill(count: number, size: number, junk = 0): Promise<{ rssGrowth: number; arrayBuffersGrowth: number; bytes: number; records: number }> {
  const child = fileURLToPath(new URL('./fill-process.ts', import.meta.url));
  // A fixed mmap threshold, so that glibc hands freed 1 MiB buffers back to the system and
  // RSS shows what is kept rather than what the allocator holds on to.
  const { stdout } = await promisify(execFile)(process.execPath, ['--expose-gc', '--import', 'tsx', child, String(count), String(size), String(junk)], {
    env: { ...process.env, MALLOC_MMAP_THRESHOLD_: String(128 * 1024) },
  });
  return JSON.parse(stdout) as { rssGrowth: number; arrayBuffersGrowth: number; bytes: number; records: number };
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

  describe('maxBytes', () => {
    it('evicts the least recently used completed records to keep outcomes and keys under maxBytes', async () => {
      const store = new MemoryStore({ maxBytes: 3 * (TEXT + 3000), sweepIntervalMs: 0 });
      const [a, b, c] = [await completeNew(store, randomId(), new Uint8Array(3000)), await completeNew(store, randomId(), new Uint8Array(3000)), await completeNew(store, randomId(), new Uint8Array(3000))];
      assert.equal(store.bytes, 3 * (TEXT + 3000));
      assert.ok(await store.get(a)); // a is now the most recently used
      // A claim needs room for its id and fingerprint: b goes.
      const id = randomId();
      const claim = await store.claim({ id, fingerprint: FP, leaseMs: DAY, meta: { namespace: 'http', scope: 'alice', key: 'order-1' } });
      assert.ok(claim.status === 'acquired');
      assert.equal(await store.get(b), undefined, 'b was least recently used');
      assert.equal(store.bytes, 2 * (TEXT + 3000) + TEXT + 2 * 'httpaliceorder-1'.length);
      // Its outcome needs room too: c goes, a stays.
      assert.equal(await store.complete(id, claim.token, new Uint8Array(3000), DAY), 'ok');
      assert.equal(await store.get(c), undefined);
      assert.ok(await store.get(a));
      assert.ok(store.bytes <= 3 * (TEXT + 3000), `${store.bytes} bytes`);
    });

    it('never evicts an in-progress record: refuses a claim, and an outcome, that only that would make room for', async () => {
      const longKey = 'k'.repeat(1000);
      const store = new MemoryStore({ maxBytes: 2 * (TEXT + 2 * longKey.length) + 100, sweepIntervalMs: 0 });
      const held = [randomId(), randomId()];
      const tokens: string[] = [];
      for (const id of held) {
        const claim = await store.claim({ id, fingerprint: FP, leaseMs: DAY, meta: { key: longKey } });
        assert.ok(claim.status === 'acquired');
        tokens.push(claim.token);
      }
      await assert.rejects(store.claim({ id: randomId(), fingerprint: FP, leaseMs: DAY, meta: { key: longKey } }), (error: unknown) => {
        assert.ok(error instanceof StoreUnavailableError);
        assert.match(error.message, /MemoryStore is full: in-progress records hold \d+ bytes \(maxBytes \d+\)/);
        return true;
      });
      // An outcome bigger than what the in-progress records leave is refused before anything is
      // evicted, and its record stays in progress.
      await assert.rejects(store.complete(held[0]!, tokens[0]!, new Uint8Array(101), DAY), /MemoryStore cannot keep an outcome of 101 bytes/);
      for (const id of held) assert.equal((await store.get(id))?.state, 'in_progress');
      assert.equal(await store.complete(held[0]!, tokens[0]!, new Uint8Array(100), DAY), 'ok');
    });

    it('counts every way a record goes: bytes are back to 0 when the store is empty', async () => {
      let now = 1_000;
      const store = new MemoryStore({ sweepIntervalMs: 0, now: () => now });
      const meta = { namespace: 'jobs', scope: 'tenant-7', key: 'étape-1' };
      const claimed = async (leaseMs = DAY): Promise<{ id: string; token: string }> => {
        const id = randomId();
        const claim = await store.claim({ id, fingerprint: FP, leaseMs, meta });
        assert.ok(claim.status === 'acquired');
        return { id, token: claim.token };
      };
      const released = await claimed();
      const extended = await claimed();
      const forced = await claimed();
      const deletedHeld = await claimed();
      const lapsedHeld = await claimed(10);
      const lapsedRead = await claimed(10);
      const deletedDone = await completeNew(store, randomId(), new Uint8Array(500));
      const lapsedDone = await claimed();
      assert.equal(await store.complete(lapsedDone.id, lapsedDone.token, new Uint8Array(700), 10), 'ok');
      assert.equal(store.bytes, 7 * (TEXT + 2 * 'jobstenant-7étape-1'.length) + TEXT + 500 + 700);

      assert.equal(await store.release(released.id, released.token), 'ok');
      assert.equal(await store.extend(extended.id, extended.token, DAY), 'ok');
      assert.equal(await store.complete(extended.id, extended.token, new Uint8Array(300), DAY), 'ok');
      assert.equal(await store.forceRelease(forced.id), true);
      assert.equal(await store.delete(deletedHeld.id), true);
      assert.equal(await store.delete(deletedDone), true);
      now += 100;
      assert.equal(await store.get(lapsedRead.id), undefined);
      assert.equal(await store.purgeExpired(), 2);
      assert.equal(store.size, 1);
      assert.equal(store.bytes, TEXT + 2 * 'jobstenant-7étape-1'.length + 300);
      assert.equal(await store.delete(extended.id), true);
      assert.deepEqual([store.size, store.bytes], [0, 0]);
      assert.equal(await store.get(lapsedHeld.id), undefined);
    });

    it('300 results of 1 MiB stay within the default 64 MiB, by the store\'s count and in the process\'s memory', async () => {
      const { rssGrowth, arrayBuffersGrowth, bytes, records } = await fill(300, MiB);
      assert.ok(bytes <= 64 * MiB, `the store counts ${bytes} bytes`);
      assert.equal(records, Math.floor(64 * MiB / (MiB + TEXT)), 'as many of the newest results as fit');
      // Measured: 63 MiB of ArrayBuffers and 63.5 MiB of RSS growth (bounded only by records: 300 and 301).
      assert.ok(arrayBuffersGrowth < 70 * MiB, `${(arrayBuffersGrowth / MiB).toFixed(1)} MiB of ArrayBuffers live`);
      assert.ok(rssGrowth < 96 * MiB, `RSS grew by ${(rssGrowth / MiB).toFixed(1)} MiB`);
    });

    it('a small outcome holds its own bytes, not a shared 8 KiB slab of other garbage', async () => {
      const { arrayBuffersGrowth, bytes } = await fill(20_000, 100, 8);
      assert.ok(bytes < 7 * MiB, `the store counts ${bytes} bytes`);
      // Measured: 1.9 MiB; copied into Node's Buffer pool, the outcomes kept their slabs: 99 MiB.
      assert.ok(arrayBuffersGrowth < 4 * MiB, `${(arrayBuffersGrowth / MiB).toFixed(1)} MiB of ArrayBuffers live for ${(20_000 * 100 / MiB).toFixed(1)} MiB of outcomes`);
    });
  });
});
