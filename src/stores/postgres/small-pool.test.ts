/**
 * Waiting on a pool that cannot spare a connection for LISTEN: `max: 1` (the usual serverless
 * setting), and several stores sharing a small pool. Concurrent waiters in one process wait on
 * a holder in another (its own pool), so only the store can tell them the record settled.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { POSTGRES_URL, skipUnlessReachable } from '../../../test/support/services.js';
import { claimOrWait, type ClaimOutcome } from '../../core/engine.js';
import { InvalidOptionError } from '../../core/errors.js';
import { PostgresStore } from './index.js';

const skip = await skipUnlessReachable('PostgreSQL', POSTGRES_URL);
const table = `oncely_small_pool_${process.pid}`;
const channel = `oncely_settled_${table}`;
/** The holder's own pool and store, like another process. */
const holderPool = new pg.Pool({ connectionString: POSTGRES_URL, max: 4 });
const holder = new PostgresStore({ pool: holderPool, table });

const newId = (): string => randomBytes(32).toString('hex');
const fingerprint = 'f'.repeat(64);
const MINUTE = 60_000;

/** Backends that LISTEN on the store's channel now. */
async function listeners(): Promise<number> {
  const { rows } = await holderPool.query<{ n: number }>('SELECT count(*)::int AS n FROM pg_stat_activity WHERE query = $1', [`LISTEN "${channel}"`]);
  return rows[0]!.n;
}

async function until(condition: () => Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + 3_000;
  while (!(await condition())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** Holds `id` in the holder's process; `settle()` stores the outcome. */
async function hold(id: string): Promise<{ settle: () => Promise<number> }> {
  const claim = await holder.claim({ id, fingerprint, leaseMs: MINUTE });
  assert.ok(claim.status === 'acquired');
  return {
    settle: async () => {
      assert.equal(await holder.complete(id, claim.token, Buffer.from('done'), MINUTE), 'ok');
      return performance.now();
    },
  };
}

/** `count` concurrent duplicates that wait up to 10 s, as `idempotent()` and the HTTP `wait` option do. */
function waiters(store: PostgresStore, id: string, count: number): Promise<{ outcome: ClaimOutcome; at: number }[]> {
  return Promise.all(Array.from({ length: count }, async () => {
    const outcome = await claimOrWait({ store, id, fingerprint, leaseMs: MINUTE, retentionMs: MINUTE, heartbeat: false, waitMs: 10_000 });
    return { outcome, at: performance.now() };
  }));
}

/** Every waiter got the stored outcome, within `ms` of the settle. */
function assertAllCompleted(woken: { outcome: ClaimOutcome; at: number }[], settledAt: number, ms: number): void {
  for (const { outcome, at } of woken) {
    assert.equal(outcome.status, 'completed');
    assert.ok(at - settledAt < ms, `answered ${(at - settledAt).toFixed(0)} ms after the settle`);
  }
}

describe('PostgresStore on a pool that cannot spare a connection to LISTEN', { skip, concurrency: 1 }, () => {
  before(() => holder.migrate());
  after(async () => {
    await holder.close();
    await holderPool.query(`DROP TABLE IF EXISTS "${table}", "${table}_migrations"`);
    await holderPool.end();
  });

  test('max: 1: concurrent waiters poll instead of LISTEN and get the outcome; the pool keeps serving', async () => {
    const pool = new pg.Pool({ connectionString: POSTGRES_URL, max: 1 });
    const store = new PostgresStore({ pool, table, timeoutMs: 2_000 });
    try {
      const id = newId();
      const { settle } = await hold(id);
      const waiting = waiters(store, id, 4);
      await sleep(300);
      assert.equal(await listeners(), 0, 'the only connection is never taken to LISTEN');
      const settledAt = await settle();
      assertAllCompleted(await waiting, settledAt, 1_000);
      // Still one connection, free, and the store answers at once.
      const started = performance.now();
      assert.equal(await store.get(newId()), undefined);
      assert.ok(performance.now() - started < 500);
      assert.equal(pool.totalCount, 1);
      assert.equal(pool.idleCount, 1);
      assert.equal(store.waitForSettle, undefined, 'waiters poll: the engine backs off from 25 ms to 500 ms');
    } finally {
      await store.close();
      await pool.end();
    }
  });

  test('max: 1 with listenClient: waiters are woken by NOTIFY on that dedicated connection, outside the pool', async () => {
    const pool = new pg.Pool({ connectionString: POSTGRES_URL, max: 1 });
    let made = 0;
    const store = new PostgresStore({ pool, table, timeoutMs: 2_000, listenClient: () => (made++, new pg.Client({ connectionString: POSTGRES_URL })) });
    try {
      assert.equal(typeof store.waitForSettle, 'function');
      const id = newId();
      const { settle } = await hold(id);
      const waiting = waiters(store, id, 4);
      await until(async () => (await listeners()) === 1, 'the dedicated LISTEN connection');
      assert.equal(made, 1, 'one connection for every waiter');
      const settledAt = await settle();
      // Pushed: not the engine's 1 s re-check of a store with push.
      assertAllCompleted(await waiting, settledAt, 200);
      assert.equal(await listeners(), 1, 'still listening');
      assert.deepEqual([pool.totalCount, pool.idleCount], [1, 1], "the pool's one connection is free: it never LISTENed");
    } finally {
      await store.close();
      await pool.end();
    }
    await until(async () => (await listeners()) === 0, 'close() to end the dedicated connection');
  });

  test('several stores on one pool of max 2: listeners never take the last connection', async () => {
    const pool = new pg.Pool({ connectionString: POSTGRES_URL, max: 2 });
    const stores = [new PostgresStore({ pool, table, timeoutMs: 2_000 }), new PostgresStore({ pool, table, timeoutMs: 2_000 })];
    try {
      const ids = [newId(), newId()];
      const held = await Promise.all(ids.map(hold));
      const waiting = stores.map((store, index) => waiters(store, ids[index]!, 2));
      await until(async () => (await listeners()) === 1, 'one LISTEN connection');
      await sleep(100);
      assert.equal(await listeners(), 1, 'the second store does not take the last connection');
      const settledAt = await Promise.all(held.map(({ settle }) => settle()));
      // The store that listens is woken at once; the other re-checks at its next timeout (1 s).
      for (const [index, woken] of (await Promise.all(waiting)).entries()) assertAllCompleted(woken, settledAt[index]!, 2_000);
      assert.equal(await stores[0]!.get(newId()), undefined);
    } finally {
      await Promise.all(stores.map((store) => store.close()));
      await pool.end();
    }
  });

  test('listenClient must be a function that makes a pg.Client', () => {
    const pool = new pg.Pool({ connectionString: POSTGRES_URL, max: 1 });
    for (const bad of [new pg.Client({ connectionString: POSTGRES_URL }), POSTGRES_URL, null]) {
      assert.throws(() => new PostgresStore({ pool, table, listenClient: bad as never }), (error: unknown) => {
        assert.ok(error instanceof InvalidOptionError);
        assert.match(error.message, /^listenClient must be a function that returns a new pg\.Client/);
        return true;
      });
    }
    void pool.end();
  });
});
