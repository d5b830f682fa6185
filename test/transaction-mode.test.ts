/**
 * `idempotent(fn, { transaction: true })` on real PostgreSQL and SQLite: fn's business writes
 * and the stored result commit in one transaction or not at all; a throw rolls back and frees
 * the key; a duplicate after the commit gets the stored result; a duplicate during the work is
 * answered at once (never blocked by the transaction); a stale holder's writes roll back;
 * setups that cannot work are refused when wrapping.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import pg from 'pg';
import { InProgressError, InvalidOptionError, LeaseLostError, UnserializableResultError } from '../src/core/errors.js';
import { executionContext } from '../src/core/execution-context.js';
import { idempotent } from '../src/core/idempotent.js';
import { identityId } from '../src/core/identity.js';
import { MemoryStore } from '../src/stores/memory/index.js';
import { PostgresStore } from '../src/stores/postgres/index.js';
import { SqliteStore } from '../src/stores/sqlite/index.js';
import { POSTGRES_URL, skipUnlessReachable } from './support/services.js';

const postgresSkip = await skipUnlessReachable('PostgreSQL', POSTGRES_URL);
const table = `oncely_tx_mode_${process.pid}`;
const business = `tx_mode_payments_${process.pid}`;
const pool = new pg.Pool({ connectionString: POSTGRES_URL, max: 4 });
const pgStore = new PostgresStore({ pool, table });
if (!postgresSkip) {
  await pgStore.migrate();
  // Deferred: a duplicate payment fails at COMMIT, not at the INSERT.
  await pool.query(`CREATE TABLE "${business}" (id serial PRIMARY KEY, payment_key text NOT NULL, note text, CONSTRAINT "${business}_once" UNIQUE (payment_key, note) DEFERRABLE INITIALLY DEFERRED)`);
}
const directory = mkdtempSync(join(tmpdir(), 'oncely-tx-mode-'));
const db = new Database(join(directory, 'shop.db'));
db.exec('CREATE TABLE payments (id INTEGER PRIMARY KEY, payment_key TEXT NOT NULL)');
const sqliteStore = new SqliteStore({ database: db });

after(async () => {
  await pgStore.close();
  if (!postgresSkip) await pool.query(`DROP TABLE IF EXISTS "${table}", "${table}_migrations", "${business}"`);
  await pool.end();
  db.close();
  rmSync(directory, { recursive: true, force: true });
});

const pgRows = async (key: string) => (await pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM "${business}" WHERE payment_key = $1`, [key])).rows[0]!.n;
const sqliteRows = (key: string) => (db.prepare('SELECT count(*) AS n FROM payments WHERE payment_key = ?').get(key) as { n: number }).n;
const pgInsert = (client: pg.PoolClient, key: string, note: string | null = null) =>
  client.query<{ id: number }>(`INSERT INTO "${business}" (payment_key, note) VALUES ($1, $2) RETURNING id`, [key, note]).then(({ rows }) => rows[0]!.id);
const sqliteInsert = (tx: Database.Database, key: string) => Number(tx.prepare('INSERT INTO payments (payment_key) VALUES (?)').run(key).lastInsertRowid);

/** A promise to hold fn at, and the function that lets it go on. */
function gate(): { wait: Promise<void>; open: () => void } {
  let open!: () => void;
  const wait = new Promise<void>((resolve) => (open = resolve));
  return { wait, open };
}

describe('transaction mode: PostgreSQL', { skip: postgresSkip ?? false }, () => {
  it('commits the business write with the result; a duplicate gets the stored result without running', async () => {
    let runs = 0;
    const pay = idempotent(async (tx: pg.PoolClient, key: string) => {
      runs++;
      return { paymentId: await pgInsert(tx, key), at: new Date(1_700_000_000_000) };
    }, { store: pgStore, namespace: 'pay', key: (key) => key, transaction: true });
    const key = randomUUID();
    const first = await pay(key);
    assert.equal(await pgRows(key), 1);
    assert.equal((await pgStore.get(identityId('pay', '', key)))?.state, 'completed');
    assert.deepEqual(await pay(key), first);
    assert.ok((await pay(key)).at instanceof Date);
    assert.equal(runs, 1);
    assert.equal(await pgRows(key), 1);
  });

  it('fn throws after its write: the write rolls back, the key is released, the retry writes once', async () => {
    let fail = true;
    const pay = idempotent(async (tx: pg.PoolClient, key: string) => {
      const id = await pgInsert(tx, key);
      if (fail) throw new Error('card declined');
      return id;
    }, { store: pgStore, namespace: 'pay-throw', key: (key) => key, transaction: true });
    const key = randomUUID();
    await assert.rejects(pay(key), /card declined/);
    assert.equal(await pgRows(key), 0, 'the business write rolled back');
    assert.equal(await pgStore.get(identityId('pay-throw', '', key)), undefined, 'the key was released');
    fail = false;
    await pay(key);
    await pay(key);
    assert.equal(await pgRows(key), 1);
  });

  it('a result that cannot be stored rolls the write back and releases the key', async () => {
    const pay = idempotent(async (tx: pg.PoolClient, key: string) => {
      await pgInsert(tx, key);
      return { at: new URL('https://example.com') };
    }, { store: pgStore, namespace: 'pay-unserializable', key: (key) => key, transaction: true });
    const key = randomUUID();
    await assert.rejects(pay(key), UnserializableResultError);
    assert.equal(await pgRows(key), 0);
    assert.equal(await pgStore.get(identityId('pay-unserializable', '', key)), undefined);
  });

  it('a COMMIT that fails (deferred constraint) rejects with the server error, leaves no write and frees the key at once', async () => {
    let payments = 2;
    const pay = idempotent(async (tx: pg.PoolClient, key: string) => {
      for (let i = 0; i < payments; i++) await pgInsert(tx, key, 'same');
      return 'paid';
    }, { store: pgStore, namespace: 'pay-commit', key: (key) => key, transaction: true });
    const key = randomUUID();
    await assert.rejects(pay(key), { code: '23505' });
    assert.equal(await pgRows(key), 0);
    assert.equal(await pgStore.get(identityId('pay-commit', '', key)), undefined, 'released, not left to lapse');
    payments = 1;
    assert.equal(await pay(key), 'paid');
    assert.equal(await pgRows(key), 1);
  });

  it('fn swallows its own SQL error: the completion fails in the aborted transaction, nothing commits, the key is free', async () => {
    let broken = true;
    const pay = idempotent(async (tx: pg.PoolClient, key: string) => {
      await pgInsert(tx, key);
      if (broken) await tx.query('SELECT no_such_column FROM pg_class').catch(() => undefined);
      return 'paid';
    }, { store: pgStore, namespace: 'pay-aborted', key: (key) => key, transaction: true });
    const key = randomUUID();
    await assert.rejects(pay(key), { code: '25P02' });
    assert.equal(await pgRows(key), 0);
    assert.equal(await pgStore.get(identityId('pay-aborted', '', key)), undefined);
    broken = false;
    assert.equal(await pay(key), 'paid');
    assert.equal(await pgRows(key), 1);
  });

  it('a duplicate during the transaction gets InProgressError at once, or waits for the committed result', async () => {
    const held = gate();
    let runs = 0;
    const options = { store: pgStore, namespace: 'pay-dup', key: (key: string) => key, transaction: true as const };
    const work = async (tx: pg.PoolClient, key: string) => {
      runs++;
      const id = await pgInsert(tx, key);
      await held.wait;
      return id;
    };
    const pay = idempotent(work, options);
    const payWaiting = idempotent(work, { ...options, onInProgress: { waitMs: 5_000 } });
    const key = randomUUID();
    const first = pay(key);
    while (runs === 0) await sleep(5);
    const started = performance.now();
    await assert.rejects(pay(key), InProgressError);
    assert.ok(performance.now() - started < 500, 'not blocked by the transaction');
    const waiting = payWaiting(key);
    await sleep(50);
    held.open();
    const id = await first;
    assert.equal(await waiting, id);
    assert.equal(runs, 1);
    assert.equal(await pgRows(key), 1);
  });

  it('a stale holder (lease lapsed, taken over) cannot commit: its transaction rolls back with LeaseLostError', async () => {
    const held = gate();
    const options = { store: pgStore, namespace: 'pay-stale', key: (key: string) => key, leaseMs: 200, heartbeat: false, transaction: true as const };
    const stale = idempotent(async (tx: pg.PoolClient, key: string) => {
      await pgInsert(tx, key, 'stale');
      await held.wait;
      return 'stale';
    }, options);
    const fresh = idempotent(async (tx: pg.PoolClient, key: string) => {
      await pgInsert(tx, key, 'fresh');
      return 'fresh';
    }, options);
    const key = randomUUID();
    const staleCall = stale(key);
    await sleep(400);
    assert.equal(await fresh(key), 'fresh', 'took the lapsed claim over and committed');
    held.open();
    await assert.rejects(staleCall, LeaseLostError);
    const { rows } = await pool.query<{ note: string }>(`SELECT note FROM "${business}" WHERE payment_key = $1`, [key]);
    assert.deepEqual(rows.map((row) => row.note), ['fresh'], "the stale holder's write rolled back");
    assert.equal(await fresh(key), 'fresh');
  });

  it('executionContext() works inside fn', async () => {
    const pay = idempotent(async (tx: pg.PoolClient, key: string) => {
      await pgInsert(tx, key);
      return executionContext().downstreamKey;
    }, { store: pgStore, namespace: 'pay-context', key: (key) => key, transaction: true });
    const key = randomUUID();
    assert.equal(await pay(key), identityId('pay-context', '', key));
  });

  it('a pool of max: 1 is refused with heartbeats (no connection for them), and works with heartbeat: false', async () => {
    const single = new pg.Pool({ connectionString: POSTGRES_URL, max: 1 });
    const store = new PostgresStore({ pool: single, table });
    const work = async (tx: pg.PoolClient, key: string) => pgInsert(tx, key);
    assert.throws(() => idempotent(work, { store, namespace: 'pay-single', key: (key) => key, transaction: true }), (error: unknown) => error instanceof InvalidOptionError && error.option === 'transaction' && /max: 2/.test(error.message));
    const pay = idempotent(work, { store, namespace: 'pay-single', key: (key) => key, transaction: true, heartbeat: false });
    const key = randomUUID();
    const id = await pay(key);
    assert.equal(await pay(key), id);
    assert.equal(await pgRows(key), 1);
    await store.close();
    await single.end();
  });
});

describe('transaction mode: SQLite', () => {
  it('commits the business write with the result; a duplicate gets the stored result without running', async () => {
    let runs = 0;
    const pay = idempotent((tx: Database.Database, key: string) => {
      runs++;
      return { paymentId: sqliteInsert(tx, key), amount: 1999n };
    }, { store: sqliteStore, namespace: 'pay', key: (key) => key, transaction: true });
    const key = randomUUID();
    const first = await pay(key);
    assert.equal(sqliteRows(key), 1);
    assert.equal((await sqliteStore.get(identityId('pay', '', key)))?.state, 'completed');
    assert.deepEqual(await pay(key), first);
    assert.equal(runs, 1);
  });

  it('fn throws after its write: the write rolls back, the key is released, the retry writes once', async () => {
    let fail = true;
    const pay = idempotent((tx: Database.Database, key: string) => {
      const id = sqliteInsert(tx, key);
      if (fail) throw new Error('card declined');
      return id;
    }, { store: sqliteStore, namespace: 'pay-throw', key: (key) => key, transaction: true });
    const key = randomUUID();
    await assert.rejects(pay(key), /card declined/);
    assert.equal(sqliteRows(key), 0);
    assert.equal(await sqliteStore.get(identityId('pay-throw', '', key)), undefined);
    fail = false;
    await pay(key);
    await pay(key);
    assert.equal(sqliteRows(key), 1);
  });

  it('an async fn is refused when wrapping; a fn that returns a promise is rolled back, refused and its key released', async () => {
    assert.throws(
      () => idempotent(async (tx: Database.Database, key: string) => sqliteInsert(tx, key), { store: sqliteStore, namespace: 'pay-async', key: (key) => key, transaction: true }),
      (error: unknown) => error instanceof InvalidOptionError && error.option === 'transaction' && /synchronous/.test(error.message),
    );
    let promise = true;
    const pay = idempotent((tx: Database.Database, key: string) => {
      const id = sqliteInsert(tx, key);
      return promise ? Promise.resolve(id) : id;
    }, { store: sqliteStore, namespace: 'pay-promise', key: (key) => key, transaction: true });
    const key = randomUUID();
    await assert.rejects(pay(key), (error: unknown) => error instanceof InvalidOptionError && /returned a promise/.test(error.message));
    assert.equal(sqliteRows(key), 0, 'the write before the promise rolled back');
    assert.equal(await sqliteStore.get(identityId('pay-promise', '', key)), undefined);
    promise = false;
    await pay(key);
    assert.equal(sqliteRows(key), 1);
  });

  it('the completion is fenced inside the transaction: a token replaced under it (as by a takeover) rolls the write back', async () => {
    // On SQLite no other connection can take the claim over while the work runs (the
    // transaction holds the write lock), so the takeover is made on the work's own connection.
    const pay = idempotent((tx: Database.Database, key: string) => {
      sqliteInsert(tx, key);
      tx.prepare(`UPDATE oncely_records SET token = 'another holder' WHERE id = ?`).run(identityId('pay-stale', '', key));
      return 'stale';
    }, { store: sqliteStore, namespace: 'pay-stale', key: (key) => key, transaction: true });
    const key = randomUUID();
    await assert.rejects(pay(key), LeaseLostError);
    assert.equal(sqliteRows(key), 0);
    assert.equal(await sqliteStore.get(identityId('pay-stale', '', key)), undefined, 'the token change rolled back with the rest');
  });

  it('executionContext() works inside fn', async () => {
    const pay = idempotent((tx: Database.Database, key: string) => {
      sqliteInsert(tx, key);
      return executionContext().downstreamKey;
    }, { store: sqliteStore, namespace: 'pay-context', key: (key) => key, transaction: true });
    const key = randomUUID();
    assert.equal(await pay(key), identityId('pay-context', '', key));
  });

  it('refuses to run inside a transaction someone else left open on the connection', async () => {
    const pay = idempotent((tx: Database.Database, key: string) => sqliteInsert(tx, key), { store: sqliteStore, namespace: 'pay-nested', key: (key) => key, transaction: true });
    const key = randomUUID();
    const claimed = pay(key);
    db.exec('BEGIN');
    try {
      await assert.rejects(claimed, /another transaction is open/);
    } finally {
      db.exec('ROLLBACK');
    }
    assert.equal(sqliteRows(key), 0);
  });
});

describe('transaction mode: options', () => {
  it('is refused on a store without transactions, and with onError: store', () => {
    const work = (tx: unknown, key: string) => key;
    assert.throws(
      // @ts-expect-error MemoryStore runs no transactions
      () => idempotent(work, { store: new MemoryStore(), namespace: 'x', key: (key: string) => key, transaction: true }),
      (error: unknown) => error instanceof InvalidOptionError && error.option === 'transaction' && /MemoryStore/.test(error.message),
    );
    assert.throws(
      // @ts-expect-error onError: 'store' is not available in transaction mode
      () => idempotent(work, { store: sqliteStore, namespace: 'x', key: (key: string) => key, transaction: true, onError: 'store' }),
      (error: unknown) => error instanceof InvalidOptionError && error.option === 'onError',
    );
  });
});
