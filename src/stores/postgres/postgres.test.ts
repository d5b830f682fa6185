/**
 * What is PostgreSQL-specific about the store: migrations, transactions through
 * `withClient`, the server's clock, takeover and purge in SQL, a real race of claims.
 * The behaviour every store shares is in `contract.test.ts`.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { POSTGRES_URL, skipUnlessReachable } from '../../../test/support/services.js';
import { InvalidOptionError, StoreUnavailableError } from '../../core/errors.js';
import { PostgresStore, postgresMigrationSql } from './index.js';
import { MIGRATIONS, tableNames } from './migrations.js';

const skip = await skipUnlessReachable('PostgreSQL', POSTGRES_URL);
const table = `oncely_test_${process.pid}`;
const pool = new pg.Pool({ connectionString: POSTGRES_URL, max: 10 });
const store = new PostgresStore({ pool, table });
const migrationsDir = new URL('../../../migrations/postgres/', import.meta.url);

const newId = (): string => randomBytes(32).toString('hex');
const fingerprint = 'f'.repeat(64);

async function acquire(target: PostgresStore, id: string, leaseMs = 60_000, fp = fingerprint): Promise<string> {
  const claim = await target.claim({ id, fingerprint: fp, leaseMs });
  assert.equal(claim.status, 'acquired');
  return claim.token;
}

async function dropTables(name: string): Promise<void> {
  await pool.query(`DROP TABLE IF EXISTS "${name}", "${name}_migrations"`);
}

after(() => pool.end());

describe('PostgreSQL migrations (no server needed)', () => {
  test('the shipped SQL files are exactly postgresMigrationSql() for the default names', async () => {
    const files = (await readdir(migrationsDir)).filter((file) => file.endsWith('.sql')).sort();
    assert.deepEqual(files, MIGRATIONS.map((migration) => `${migration.name}.sql`));
    const defaults = tableNames();
    for (const migration of MIGRATIONS) {
      assert.equal(await readFile(new URL(`${migration.name}.sql`, migrationsDir), 'utf8'), migration.sql(defaults));
    }
    assert.equal(postgresMigrationSql(), MIGRATIONS.map((migration) => migration.sql(defaults)).join('\n'));
  });

  test('table and schema names are validated, then quoted as written', () => {
    for (const bad of ['', 'records; DROP TABLE users', '1records', 'a"b', 'x'.repeat(49)]) {
      assert.throws(() => new PostgresStore({ pool, table: bad }), InvalidOptionError, bad);
    }
    assert.throws(() => new PostgresStore({ pool, schema: 'no-dash' }), InvalidOptionError);
    assert.throws(() => new PostgresStore({ pool, timeoutMs: 0 }), InvalidOptionError);
    const sql = postgresMigrationSql({ schema: 'App', table: 'Keys' });
    assert.match(sql, /CREATE TABLE IF NOT EXISTS "App"\."Keys" \(/);
    assert.match(sql, /CREATE INDEX IF NOT EXISTS "Keys_expires_at_idx" ON "App"\."Keys" \(expires_at\)/);
  });
});

describe('PostgresStore', { skip }, () => {
  before(() => store.migrate());
  after(() => dropTables(table));

  test('migrate() is idempotent and safe when many processes run it at once', async () => {
    const name = `${table}_migrate`;
    // Separate pools: separate sessions, like separate processes starting together.
    const pools = Array.from({ length: 5 }, () => new pg.Pool({ connectionString: POSTGRES_URL, max: 1 }));
    const stores = pools.map((each) => new PostgresStore({ pool: each, table: name }));
    try {
      await Promise.all(stores.map((each) => each.migrate()));
      await stores[0]?.migrate();
      const { rows } = await pool.query<{ name: string }>(`SELECT name FROM "${name}_migrations" ORDER BY name`);
      assert.deepEqual(rows.map((row) => row.name), MIGRATIONS.map((migration) => migration.name));
      assert.equal(await stores[0]?.claim({ id: newId(), fingerprint, leaseMs: 1000 }).then((claim) => claim.status), 'acquired');
    } finally {
      await Promise.all(pools.map((each) => each.end()));
      await dropTables(name);
    }
  });

  test('a missing table fails closed with a hint to run migrate()', async () => {
    const missing = new PostgresStore({ pool, table: `oncely_missing_${process.pid}` });
    await assert.rejects(missing.claim({ id: newId(), fingerprint, leaseMs: 1000 }), (error: unknown) => {
      assert.ok(error instanceof StoreUnavailableError);
      assert.match(error.message, /run store\.migrate\(\)/);
      assert.equal((error.cause as { code?: string }).code, '42P01');
      return true;
    });
  });

  test('a missing schema is reported as such, not as a missing migration', async () => {
    const nowhere = new PostgresStore({ pool, schema: `oncely_no_schema_${process.pid}`, table });
    await assert.rejects(nowhere.migrate(), (error: unknown) => {
      assert.ok(error instanceof StoreUnavailableError);
      assert.match(error.message, /schema .* does not exist; create it/);
      return true;
    });
  });

  test('errors of the caller\'s own transaction pass through untranslated', async () => {
    const client = await pool.connect();
    try {
      await client.query('BEGIN');
      await assert.rejects(client.query('SELECT 1 / 0'));
      await assert.rejects(store.withClient(client).get(newId()), (error: unknown) => {
        assert.ok(!(error instanceof StoreUnavailableError));
        assert.equal((error as { code?: string }).code, '25P02', 'in failed transaction');
        return true;
      });
      await client.query('ROLLBACK');
    } finally {
      client.release();
    }
  });

  test('withClient: a claim inside the caller\'s transaction rolls back with it', async () => {
    const id = newId();
    const client = await pool.connect();
    try {
      await client.query('BEGIN');
      await acquire(store.withClient(client), id);
      await client.query('ROLLBACK');
    } finally {
      client.release();
    }
    assert.equal(await store.get(id), undefined);
  });

  test('withClient: claim and complete inside a transaction are visible after COMMIT, not before', async () => {
    const id = newId();
    const client = await pool.connect();
    try {
      await client.query('BEGIN');
      const bound = store.withClient(client);
      const token = await acquire(bound, id);
      assert.equal(await bound.complete(id, token, Buffer.from('done'), 60_000), 'ok');
      assert.equal(await store.get(id), undefined, 'uncommitted work is invisible to other sessions');
      await client.query('COMMIT');
    } finally {
      client.release();
    }
    const record = await store.get(id);
    assert.ok(record?.state === 'completed');
    assert.equal(Buffer.from(record.outcome).toString(), 'done');
  });

  test('a lapsed lease is taken over; the stale holder is fenced out', async () => {
    const id = newId();
    const stale = await acquire(store, id, 100);
    await sleep(150);
    const fresh = await acquire(store, id, 60_000, 'e'.repeat(64));
    assert.notEqual(fresh, stale);
    assert.equal(await store.complete(id, stale, Buffer.from('stale'), 60_000), 'lost');
    assert.equal(await store.extend(id, stale, 60_000), 'lost');
    assert.equal(await store.release(id, stale), 'lost');
    assert.equal(await store.complete(id, fresh, Buffer.from('fresh'), 60_000), 'ok');
    const record = await store.get(id);
    assert.ok(record?.state === 'completed');
    assert.equal(record.fingerprint, 'e'.repeat(64));
    assert.equal(Buffer.from(record.outcome).toString(), 'fresh');
  });

  test('a holder whose lease lapsed but was not taken over may still complete', async () => {
    const id = newId();
    const token = await acquire(store, id, 100);
    await sleep(150);
    assert.equal(await store.get(id), undefined, 'lapsed records are not live');
    assert.equal(await store.complete(id, token, Buffer.from('late'), 60_000), 'ok');
    assert.equal((await store.get(id))?.state, 'completed');
  });

  test('times are whole milliseconds of the server clock, whatever Date.now() says', async () => {
    const realNow = Date.now;
    Date.now = () => realNow() + 10 * 365 * 24 * 3600 * 1000;
    try {
      const id = newId();
      const claim = await store.claim({ id, fingerprint, leaseMs: 60_000 });
      assert.equal(claim.status, 'acquired');
      const again = await store.claim({ id, fingerprint, leaseMs: 60_000 });
      assert.ok(again.status === 'in_progress');
      const { rows } = await pool.query<{ server: number }>('SELECT (extract(epoch from clock_timestamp()) * 1000)::float8 AS server');
      const server = rows[0]?.server ?? NaN;
      assert.ok(Number.isInteger(again.record.createdAt) && Number.isInteger(again.record.expiresAt));
      assert.equal(again.record.expiresAt - again.record.createdAt, 60_000);
      assert.ok(Math.abs(again.record.createdAt - server) < 5_000, 'createdAt is the server\'s time');
    } finally {
      Date.now = realNow;
    }
  });

  test('purgeExpired removes lapsed rows in batches of at most `limit`, never live ones', async () => {
    const purge = new PostgresStore({ pool, table: `${table}_purge` });
    await purge.migrate();
    try {
      const lapsed = Array.from({ length: 25 }, newId);
      const live = Array.from({ length: 3 }, newId);
      await Promise.all(lapsed.map((id) => acquire(purge, id, 1)));
      await Promise.all(live.map((id) => acquire(purge, id)));
      await sleep(20);
      assert.equal(await purge.purgeExpired({ limit: 10 }), 10);
      assert.equal(await purge.purgeExpired({ limit: 10 }), 10);
      assert.equal(await purge.purgeExpired({ limit: 10 }), 5);
      assert.equal(await purge.purgeExpired({ limit: 10 }), 0);
      const { rows } = await pool.query<{ id: string }>(`SELECT id FROM "${table}_purge" ORDER BY id`);
      assert.deepEqual(rows.map((row) => row.id), [...live].sort());
    } finally {
      await dropTables(`${table}_purge`);
    }
  });

  test('100 concurrent claims on one id over 10 connections: exactly one acquires', async () => {
    const id = newId();
    const claims = await Promise.all(Array.from({ length: 100 }, () => store.claim({ id, fingerprint, leaseMs: 60_000 })));
    const statuses = claims.map((claim) => claim.status);
    assert.equal(statuses.filter((status) => status === 'acquired').length, 1);
    assert.equal(statuses.filter((status) => status === 'in_progress').length, 99);
  });

  test('100 concurrent takeovers of one lapsed claim: exactly one acquires', async () => {
    const id = newId();
    await acquire(store, id, 100);
    await sleep(150);
    const claims = await Promise.all(Array.from({ length: 100 }, () => store.claim({ id, fingerprint, leaseMs: 60_000 })));
    assert.equal(claims.filter((claim) => claim.status === 'acquired').length, 1);
  });

  test('a 1 MiB binary outcome round-trips byte for byte', async () => {
    const id = newId();
    const outcome = randomBytes(1024 * 1024);
    const token = await acquire(store, id);
    assert.equal(await store.complete(id, token, outcome, 60_000), 'ok');
    const replay = await store.claim({ id, fingerprint, leaseMs: 60_000 });
    assert.ok(replay.status === 'completed');
    assert.ok(Buffer.from(replay.record.outcome).equals(outcome));
  });

  test('a call blocked longer than timeoutMs fails closed', async () => {
    const id = newId();
    const token = await acquire(store, id);
    const locker = await pool.connect();
    try {
      await locker.query('BEGIN');
      await locker.query(`SELECT 1 FROM "${table}" WHERE id = $1 FOR UPDATE`, [id]);
      const impatient = new PostgresStore({ pool, table, timeoutMs: 200 });
      await assert.rejects(impatient.extend(id, token, 60_000), StoreUnavailableError);
    } finally {
      await locker.query('ROLLBACK');
      locker.release();
    }
  });

  test('an unreachable server fails closed with the driver error as cause', async () => {
    const deadPool = new pg.Pool({ host: '127.0.0.1', port: 1, user: 'postgres', database: 'test' });
    try {
      const dead = new PostgresStore({ pool: deadPool, timeoutMs: 500 });
      await assert.rejects(dead.get(newId()), (error: unknown) => {
        assert.ok(error instanceof StoreUnavailableError);
        assert.equal((error.cause as { code?: string }).code, 'ECONNREFUSED');
        return true;
      });
    } finally {
      await deadPool.end();
    }
  });

  test('close() leaves the user\'s pool open', async () => {
    const borrowed = new PostgresStore({ pool, table });
    await borrowed.close();
    assert.equal(await store.get(newId()), undefined);
    assert.equal(pool.ending, false);
  });
});

describe('PostgresStore waitForSettle (LISTEN/NOTIFY)', { skip }, () => {
  const channel = `oncely_settled_${table}`;
  /** Other sessions, like other processes: their own pool, their own store instance. */
  const otherPool = new pg.Pool({ connectionString: POSTGRES_URL, max: 4 });
  const other = new PostgresStore({ pool: otherPool, table });
  const listeners = async (): Promise<number> => {
    const { rows } = await pool.query<{ n: number }>('SELECT count(*)::int AS n FROM pg_stat_activity WHERE query = $1', [`LISTEN "${channel}"`]);
    return rows[0]?.n ?? 0;
  };
  /** Resolves once `condition()` holds; fails after `ms`. */
  async function until(condition: () => Promise<boolean>, what: string, ms = 3_000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!(await condition())) {
      if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
      await sleep(10);
    }
  }
  /** When the wait resolved, in performance.now() time. */
  const settledAt = (wait: Promise<void>): Promise<number> => wait.then(() => performance.now());

  before(() => store.migrate());
  after(() => otherPool.end());

  test('the channel is oncely_settled_<table>, schema-qualified outside public, hashed past 63 characters', () => {
    assert.equal(tableNames({ table }).channel, channel);
    assert.equal(tableNames({ schema: 'App', table: 'Keys' }).channel, 'oncely_settled_App.Keys');
    const long = tableNames({ schema: 's'.repeat(40), table: 't'.repeat(48) }).channel;
    assert.equal(long.length, 63);
    assert.notEqual(long, tableNames({ schema: 's'.repeat(40), table: `${'t'.repeat(47)}u` }).channel);
  });

  for (const [name, settle] of [
    ['complete', (id: string, token: string) => other.complete(id, token, Buffer.from('done'), 60_000)],
    ['release', (id: string, token: string) => other.release(id, token)],
    ['delete', (id: string) => other.delete(id)],
  ] as const) {
    test(`a waiter is woken within 100 ms by ${name} on another store instance and pool`, async () => {
      const waiter = new PostgresStore({ pool, table });
      try {
        const id = newId();
        const token = await acquire(other, id);
        const woke = settledAt(waiter.waitForSettle!(id, 10_000));
        await until(async () => (await listeners()) === 1, 'the LISTEN connection');
        const started = performance.now();
        assert.ok(await settle(id, token));
        const elapsed = (await woke) - started;
        assert.ok(elapsed < 100, `woken after ${elapsed.toFixed(0)} ms`);
      } finally {
        await waiter.close();
      }
    });
  }

  test('without a settle a waiter resolves at its timeout; a fenced-out write does not wake it', async () => {
    const waiter = new PostgresStore({ pool, table });
    try {
      const id = newId();
      const token = await acquire(store, id);
      const started = performance.now();
      const woke = settledAt(waiter.waitForSettle!(id, 600));
      await until(async () => (await listeners()) === 1, 'the LISTEN connection');
      assert.equal(await other.complete(id, 'not-the-token', Buffer.from('x'), 60_000), 'lost');
      assert.equal(await other.delete(newId()), false);
      const elapsed = (await woke) - started;
      assert.ok(elapsed >= 590 && elapsed < 800, `resolved after ${elapsed.toFixed(0)} ms`);
      assert.equal(await store.release(id, token), 'ok');
    } finally {
      await waiter.close();
    }
  });

  test('withClient: the notification is sent at COMMIT, never on ROLLBACK; the bound store shares the listener', async () => {
    const waiter = new PostgresStore({ pool, table });
    const client = await otherPool.connect();
    try {
      const rolledBack = newId();
      const committed = newId();
      const tokens = [await acquire(other, rolledBack), await acquire(other, committed)] as const;
      let woken = '';
      const bound = waiter.withClient(client);
      const waits = [
        bound.waitForSettle!(rolledBack, 1_500).then(() => (woken += 'rolledBack ')),
        waiter.waitForSettle!(committed, 5_000).then(() => (woken += 'committed ')),
      ];
      await until(async () => (await listeners()) === 1, 'one LISTEN connection for both stores');
      await client.query('BEGIN');
      assert.equal(await other.withClient(client).complete(rolledBack, tokens[0], Buffer.from('x'), 60_000), 'ok');
      await client.query('ROLLBACK');
      await client.query('BEGIN');
      assert.equal(await other.withClient(client).complete(committed, tokens[1], Buffer.from('y'), 60_000), 'ok');
      await sleep(150);
      assert.equal(woken, '', 'nothing before COMMIT');
      await client.query('COMMIT');
      await waits[1];
      assert.equal(woken, 'committed ');
      await bound.close();
      assert.equal(await listeners(), 1, "the bound store's close() leaves the listener to its parent");
      await waits[0];
      assert.equal(woken, 'committed rolledBack ', 'the rolled-back one only timed out');
    } finally {
      client.release();
      await waiter.close();
    }
  });

  test('a waiter on a record that is absent or already settled wakes at once', async () => {
    const waiter = new PostgresStore({ pool, table });
    try {
      const id = newId();
      const token = await acquire(other, id);
      assert.equal(await other.complete(id, token, Buffer.from('done'), 60_000), 'ok');
      const started = performance.now();
      await waiter.waitForSettle!(id, 5_000);
      await waiter.waitForSettle!(newId(), 5_000);
      assert.ok(performance.now() - started < 1_000, 'no waiting out the timeout');
    } finally {
      await waiter.close();
    }
  });

  test('many waiters on one id share one LISTEN connection and all wake on one complete', async () => {
    const waiter = new PostgresStore({ pool, table });
    try {
      const id = newId();
      const others = Array.from({ length: 5 }, newId);
      for (const each of others) await acquire(other, each); // in progress too, so their waiters sleep on
      const token = await acquire(other, id);
      const woke = Array.from({ length: 50 }, () => waiter.waitForSettle!(id, 10_000));
      const unrelated = others.map((each) => settledAt(waiter.waitForSettle!(each, 1_000)));
      await until(async () => (await listeners()) === 1, 'the LISTEN connection');
      await sleep(50);
      assert.equal(await listeners(), 1);
      const started = performance.now();
      assert.equal(await other.complete(id, token, Buffer.from('done'), 60_000), 'ok');
      await Promise.all(woke);
      assert.ok(performance.now() - started < 100);
      for (const at of await Promise.all(unrelated)) assert.ok(at - started > 500, 'waiters of other ids sleep on');
    } finally {
      await waiter.close();
    }
  });

  test("close() returns the listening connection to the pool (destroyed) and wakes the waiters; the pool stays the user's", async () => {
    const ownPool = new pg.Pool({ connectionString: POSTGRES_URL, max: 3 });
    try {
      const waiter = new PostgresStore({ pool: ownPool, table });
      const running = newId();
      await acquire(other, running); // an in-progress record, so the waiter sleeps until woken
      const woke = waiter.waitForSettle!(running, 60_000);
      await until(async () => ownPool.totalCount - ownPool.idleCount === 1 && (await listeners()) === 1, 'the LISTEN connection');
      await waiter.close();
      await woke;
      await until(async () => ownPool.totalCount === ownPool.idleCount && (await listeners()) === 0, 'the connection to close');
      assert.equal(ownPool.ending, false);
      assert.equal(await waiter.get(newId()), undefined, 'the store still answers on the pool');
      assert.equal(await waiter.waitForSettle!(newId(), 10), undefined, 'a closed store only times out');
    } finally {
      await ownPool.end();
    }
  });

  test('pool.end() without close() still finishes: the listener lets go when the pool ends', async () => {
    const ownPool = new pg.Pool({ connectionString: POSTGRES_URL, max: 2 });
    const waiter = new PostgresStore({ pool: ownPool, table });
    void waiter.waitForSettle!(newId(), 100);
    await until(async () => (await listeners()) === 1, 'the LISTEN connection');
    const started = performance.now();
    await ownPool.end();
    assert.ok(performance.now() - started < 2_500);
    assert.equal(await listeners(), 0);
  });

  test('a terminated listener: waiters wait out their timeout, the next waiter listens again and is woken', async () => {
    const waiter = new PostgresStore({ pool, table });
    try {
      const id = newId();
      const token = await acquire(other, id);
      void waiter.waitForSettle!(id, 50);
      await until(async () => (await listeners()) === 1, 'the LISTEN connection');
      await pool.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = $1', [`LISTEN "${channel}"`]);
      await until(async () => (await listeners()) === 0, 'the listener to be gone');
      const started = performance.now();
      const missed = settledAt(waiter.waitForSettle!(id, 300));
      const elapsed = (await missed) - started;
      assert.ok(elapsed >= 290, `no wake-up without a listener (${elapsed.toFixed(0)} ms)`);
      const woke = waiter.waitForSettle!(id, 10_000);
      await until(async () => (await listeners()) === 1, 'a new LISTEN connection');
      const settled = performance.now();
      assert.equal(await other.complete(id, token, Buffer.from('done'), 60_000), 'ok');
      await woke;
      assert.ok(performance.now() - settled < 100);
    } finally {
      await waiter.close();
    }
  });

  test('an unreachable server: waitForSettle resolves at its timeout, never rejects', async () => {
    const deadPool = new pg.Pool({ host: '127.0.0.1', port: 1, user: 'postgres', database: 'test' });
    const dead = new PostgresStore({ pool: deadPool, table, timeoutMs: 500 });
    try {
      const started = performance.now();
      await dead.waitForSettle!(newId(), 300);
      await dead.waitForSettle!(newId(), 100);
      const elapsed = performance.now() - started;
      assert.ok(elapsed >= 390 && elapsed < 700, `resolved after ${elapsed.toFixed(0)} ms`);
    } finally {
      await dead.close();
      await deadPool.end();
    }
  });
});
