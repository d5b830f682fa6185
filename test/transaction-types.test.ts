/**
 * Transaction mode's types, proven by `tsc` (npm run typecheck covers test/): `tx` is a
 * `pg.PoolClient` on a PostgresStore and a better-sqlite3 `Database` on a SqliteStore without
 * being annotated, the wrapper takes fn's arguments after `tx` and resolves to its result, and
 * a store without transactions does not type-check. At run time this only wraps.
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import type Database from 'better-sqlite3';
import pg from 'pg';
import { idempotent } from '../src/core/idempotent.js';
import { MemoryStore } from '../src/stores/memory/index.js';
import { PostgresStore } from '../src/stores/postgres/index.js';
import { SqliteStore } from '../src/stores/sqlite/index.js';

type Equal<X, Y> = (<T>() => T extends X ? 1 : 2) extends <T>() => T extends Y ? 1 : 2 ? true : false;
const same = <X, Y>(proof: Equal<X, Y>) => proof;

it('types tx by the store and the wrapper by fn', async () => {
  const pool = new pg.Pool({ max: 2 });
  const postgres = new PostgresStore({ pool });
  const sqlite = new SqliteStore({ path: ':memory:' });

  const pay = idempotent(async (tx, orderId: string, cents: number) => {
    same<typeof tx, pg.PoolClient>(true);
    // @ts-expect-error a pg client has no better-sqlite3 prepare()
    tx.prepare('SELECT 1');
    return { orderId, cents };
  }, { store: postgres, namespace: 'pay', key: (orderId) => orderId, transaction: true });
  same<typeof pay, (orderId: string, cents: number) => Promise<{ orderId: string; cents: number }>>(true);

  const record = idempotent((tx, orderId: string) => {
    same<typeof tx, Database.Database>(true);
    // @ts-expect-error better-sqlite3 has no query()
    void tx.query;
    return orderId.length;
  }, { store: sqlite, namespace: 'record', key: (orderId) => orderId, transaction: true });
  same<typeof record, (orderId: string) => Promise<number>>(true);

  // @ts-expect-error a MemoryStore runs no transactions
  assert.throws(() => idempotent((tx: unknown, orderId: string) => orderId, { store: new MemoryStore(), namespace: 'memory', key: (orderId: string) => orderId, transaction: true }));
  // Without transaction: the first parameter is an ordinary argument.
  const plain = idempotent(async (orderId: string) => orderId, { store: postgres, namespace: 'plain', key: (orderId) => orderId });
  same<typeof plain, (orderId: string) => Promise<string>>(true);

  assert.equal(typeof pay, 'function');
  assert.equal(typeof record, 'function');
  assert.equal(typeof plain, 'function');
  await sqlite.close();
  await pool.end();
});
