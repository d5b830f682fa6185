/**
 * Every store refuses wrong options when it is made, with an `InvalidOptionError` that names
 * the option and says what to pass: never later, at the first call, as `StoreUnavailableError`,
 * which under `failOpen` would quietly turn protection off. No server is needed: a store
 * connects nothing when it is made.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import pg from 'pg';
import { InvalidOptionError } from '../core/errors.js';
import { MemoryStore } from './memory/index.js';
import { PostgresStore } from './postgres/index.js';
import { RedisStore } from './redis/index.js';
import { SqliteStore } from './sqlite/index.js';

/** A URL with a password, as users paste them: it must never appear in a message. */
const POSTGRES_URL = 'postgres://app:s3cret@db.internal:5432/shop';
const REDIS_URL = 'redis://:s3cret@cache.internal:6379';

type Make = () => unknown;

function refuses(make: Make, message: RegExp): void {
  assert.throws(make, (error: unknown) => {
    assert.ok(error instanceof InvalidOptionError, `an InvalidOptionError, got ${String(error)}`);
    assert.match(error.message, message);
    assert.doesNotMatch(error.message, /s3cret/, 'the URL is not echoed');
    return true;
  });
}

const Any = <T>(store: T): new (...args: unknown[]) => unknown => store as never;

describe('store constructors refuse wrong options at once, naming the option', () => {
  it('PostgresStore', () => {
    const pool = new pg.Pool({ connectionString: POSTGRES_URL });
    const cases: [Make, RegExp][] = [
      [() => new (Any(PostgresStore))(), /^PostgresStore needs an options object, got undefined: new PostgresStore\(\{ pool: new pg\.Pool\(\{ connectionString \}\) \}\)$/],
      [() => new (Any(PostgresStore))(POSTGRES_URL), /^PostgresStore needs an options object, got a string/],
      [() => new PostgresStore({ pool: POSTGRES_URL as never }), /^pool must be a pg\.Pool, got a string: pass new pg\.Pool\(\{ connectionString: process\.env\.DATABASE_URL \}\)$/],
      [() => new PostgresStore({} as never), /^pool must be a pg\.Pool, got undefined/],
      [() => new PostgresStore({ pool: new pg.Client({ connectionString: POSTGRES_URL }) as never }), /^pool must be a pg\.Pool, got a Client: a single client; pass the pool \(.*store\.withClient\(client\)\)$/],
      [() => new PostgresStore({ pool, timeoutMs: 2 ** 31 }), /^timeoutMs must be at most 2147483647 ms/],
      [() => new PostgresStore({ pool, listenClient: POSTGRES_URL as never }), /^listenClient must be a function that returns a new pg\.Client, got a string/],
    ];
    for (const [make, message] of cases) refuses(make, message);
    void pool.end();
  });

  it('SqliteStore', () => {
    const cases: [Make, RegExp][] = [
      [() => new (Any(SqliteStore))(), /^SqliteStore needs an options object, got undefined: new SqliteStore\(\{ path: '\.\/oncely\.db' \}\) or new SqliteStore\(\{ database \}\)$/],
      [() => new (Any(SqliteStore))('./oncely.db'), /^SqliteStore needs an options object, got a string/],
      [() => new SqliteStore({} as never), /^SqliteStore needs exactly one of path \(a database file such as '\.\/oncely\.db', or ':memory:'\) and database \(your better-sqlite3 connection\)/],
      [() => new SqliteStore({ path: 42 as never }), /^path must be a database file name such as '\.\/oncely\.db', or ':memory:', got the number 42$/],
      [() => new SqliteStore({ path: '' }), /^path must be .* got an empty string$/],
      [() => new SqliteStore({ database: './oncely.db' as never }), /^database must be a better-sqlite3 Database, got a string: for a file name, pass it as path$/],
      [() => new SqliteStore({ database: {} as never }), /^database must be a better-sqlite3 Database, got an object: pass new Database\(file\) from better-sqlite3$/],
      [() => new SqliteStore({ path: ':memory:', table: 7 as never }), /^table must be a plain SQL identifier .* got the number 7$/],
    ];
    for (const [make, message] of cases) refuses(make, message);
  });

  it('RedisStore', () => {
    const cases: [Make, RegExp][] = [
      [() => new (Any(RedisStore))(), /^RedisStore needs an options object, got undefined: new RedisStore\(\{ client: new Redis\(url\) \}\)/],
      [() => new (Any(RedisStore))(REDIS_URL), /^RedisStore needs an options object, got a string/],
      [() => new RedisStore({ client: REDIS_URL as never }), /^client must be a node-redis v5 client \(await createClient\(\{ url \}\)\.connect\(\)\) or an ioredis v5 client \(new Redis\(url\)\), got a string$/],
      [() => new RedisStore({} as never), /^client must be .* got undefined$/],
    ];
    for (const [make, message] of cases) refuses(make, message);
  });

  it('MemoryStore', () => {
    const cases: [Make, RegExp][] = [
      [() => new (Any(MemoryStore))(null), /^MemoryStore needs an options object, got null/],
      [() => new MemoryStore({ maxRecords: 0 }), /^maxRecords must be a positive whole number, got the number 0$/],
      [() => new MemoryStore({ maxBytes: -1 }), /^maxBytes must be a positive whole number, got the number -1$/],
      [() => new MemoryStore({ maxBytes: '64MB' as never }), /^maxBytes must be a positive whole number, got a string$/],
      [() => new MemoryStore({ sweepIntervalMs: -5 }), /^sweepIntervalMs must be 0 \(no timer\) or a positive whole number of milliseconds, got the number -5$/],
      [() => new MemoryStore({ sweepIntervalMs: 2 ** 31 }), /^sweepIntervalMs must be at most 2147483647 ms/],
      [() => new MemoryStore({ now: 5 as never }), /^now must be a function returning epoch milliseconds, got the number 5$/],
    ];
    for (const [make, message] of cases) refuses(make, message);
  });
});
