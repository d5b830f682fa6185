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
