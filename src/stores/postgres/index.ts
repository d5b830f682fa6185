/**
 * PostgreSQL store (`oncely/postgres`) on the user's own `pg` Pool.
 *
 * Every time comes from the server's `clock_timestamp()`: not the caller's `Date.now()`, so
 * machines with skewed clocks agree, and not `now()`, which stays frozen for the whole of a
 * caller's transaction. Times are kept at millisecond precision, the unit of the whole API.
 */
import { createHash } from 'node:crypto';
import type { Client, Pool, PoolClient, QueryResult, QueryResultRow } from 'pg';
import { InvalidOptionError, LeaseLostError, StoreUnavailableError } from '../../core/errors.js';
import {
  DEFAULT_STORE_TIMEOUT_MS,
  answerFromExisting,
  assertDuration,
  assertId,
  assertTimerDuration,
  describeValue,
  newToken,
  purgeLimit,
  recordQuery,
  statsFromRow,
  storeOptions,
  withTimeout,
  type StatsRow,
} from '../../core/store-kit.js';
import type {
  Claim,
  ClaimRequest,
  FencedResult,
  IdempotencyRecord,
  IdempotencyStore,
  OperableStore,
  PurgeOptions,
  RecordMeta,
  RecordQuery,
  StoreStats,
  TransactionalStore,
} from '../../core/types.js';
import { SettleListener, poolMax } from './listener.js';
import { MIGRATIONS, tableNames, type TableNames, type TableOptions } from './migrations.js';

export { postgresMigrationSql } from './migrations.js';

export interface PostgresStoreOptions extends TableOptions {
  /** Your `pg` Pool. The store borrows it and never ends it: `close()` leaves it open. */
  pool: Pool;
  /** Longest one store operation may take before `StoreUnavailableError`. Default 5000 ms. */
  timeoutMs?: number;
  /**
   * Makes the connection that waiting duplicates LISTEN on, outside the pool: a new, not yet
   * connected `pg.Client`, e.g. `() => new pg.Client({ connectionString })`. The store
   * connects it on the first wait, ends it in `close()` (or when the pool ends), and calls
   * this again after that connection fails.
   *
   * Default: LISTEN on one connection of `pool`, held until `close()`, taken only while the
   * pool keeps another for queries. A pool of `max: 1` (the usual serverless setting) has
   * none to spare: waiters then poll (25 ms doubling to 500 ms) unless this is given. Give it
   * too when `pool` goes through a transaction-pooling proxy (PgBouncer), which does not
   * deliver notifications: point it at the server itself.
   */
  listenClient?: () => Client;
}

const USAGE = 'new PostgresStore({ pool: new pg.Pool({ connectionString }) })';

/** Checks that `pool` is a `pg.Pool`: a URL string or a single client fails here, not at the first call. */
function assertPool(pool: unknown): asserts pool is Pool {
  const candidate = pool as Partial<Record<'query' | 'connect' | 'release', unknown>> & { totalCount?: unknown } | null | undefined;
  if (typeof candidate?.query === 'function' && typeof candidate.connect === 'function' && typeof candidate.totalCount === 'number') return;
  const hint = typeof candidate?.query === 'function'
    ? 'a single client; pass the pool (to run the store inside a transaction on a client, use store.withClient(client))'
    : 'pass new pg.Pool({ connectionString: process.env.DATABASE_URL })';
  throw new InvalidOptionError(`pool must be a pg.Pool, got ${describeValue(pool)}: ${hint}`);
}

/** What both a Pool and a checked-out client can do. */
interface Queryable {
  query<R extends QueryResultRow>(query: { name?: string; text: string; values?: unknown[] }): Promise<QueryResult<R>>;
}

/**
 * A named (prepared) statement: each connection parses and plans it once. Planning the claim
 * statement costs more than running it (about 0.7 ms against 0.1 ms here), so this roughly
 * triples the rate of replays. The name is derived from the text, so one name never means two
 * statements on a connection.
 */
function prepared(text: string, values: unknown[]): { name: string; text: string; values: unknown[] } {
  return { name: `oncely_${createHash('sha1').update(text).digest('hex').slice(0, 20)}`, text, values };
}

/** What a store bound by `runTransaction` saw of the completion made through it. */
interface TransactionCompletion {
  claim?: { id: string; token: string };
  ok: boolean;
}

type RecordRow = {
  id: string;
  fingerprint: string;
  created_ms: number;
  expires_ms: number;
  namespace: string | null;
  scope: string | null;
  key: string | null;
} & ({ state: 'in_progress'; outcome: null } | { state: 'completed'; outcome: Buffer });

/** The current server time, truncated to the millisecond every record time is kept at. */
const CLOCK = `date_trunc('milliseconds', clock_timestamp())`;
const ms = (column: string): string => `round(extract(epoch from ${column}) * 1000)::float8`;
const RECORD_COLUMNS = `id, state, fingerprint, ${ms('created_at')} AS created_ms, ${ms('expires_at')} AS expires_ms, outcome, namespace, scope, key`;
const after = (time: string, msParam: string): string => `${time} + ${msParam}::bigint * interval '1 millisecond'`;
/** Only the current holder may write. A lapsed lease still holds until someone takes it over. */
const FENCE = `id = $1 AND token = $2 AND state = 'in_progress'`;
/** A claim that keeps meeting concurrent writers this often is reported rather than retried forever. */
const CLAIM_ATTEMPTS = 5;

/** Server errors meaning "cannot serve now": connection, auth, missing database, resources, shutdown, cancel. */
const UNAVAILABLE_CLASSES = new Set(['08', '28', '3D', '53', '57', '58']);

/**
 * An idempotency store in one PostgreSQL table. Run `await store.migrate()` once (or apply
 * `migrations/postgres/*.sql` with your own tool) before the first claim.
 *
 * @example
 * ```ts
 * import pg from 'pg';
 * import { PostgresStore } from 'oncely/postgres';
 *
 * const store = new PostgresStore({ pool: new pg.Pool({ connectionString: process.env.DATABASE_URL }) });
 * await store.migrate();
 * ```
 */
export class PostgresStore implements OperableStore, TransactionalStore<PoolClient> {
  readonly #options: PostgresStoreOptions;
  readonly #pool: Pool;
  readonly #names: TableNames;
  readonly #timeoutMs: number;
  readonly #claimSql: string;
  readonly #takeoverSql: string;
  /** Announces a settled record to every listener, when a waiter marked it, and counts the changed rows. */
  readonly #notifySettled: string;
  readonly #markWaitedSql: string;
  /** Where queries go: the pool, or the caller's client for a store from `withClient`. */
  #db: Queryable;
  /** Shared with the stores made by `withClient`; only this one's `close()` ends it. Absent when waiters poll. */
  #listener: SettleListener | undefined;
  #ownsListener = true;
  /** On a store bound to a transaction by `runTransaction`: the claim its `complete` was called for, and whether it answered `ok`. */
  #completion: TransactionCompletion | undefined;

  /**
   * Resolves when `complete`, `release` or `delete` of `id` commits in any process (PostgreSQL
   * NOTIFY on channel `oncely_settled_<table>`), or after `timeoutMs`; never rejects.
   *
   * The first waiter opens the listening connection (see `listenClient`) and the store keeps
   * it until `close()`. Should it fail, waiters wait out their timeout and the next one opens
   * another. PostgreSQL delivers only what commits after LISTEN ran, so a settle just before
   * it is seen at the waiter's next claim.
   *
   * Absent when the pool has `max: 1` and no `listenClient` is given: waiters then poll.
   */
  readonly waitForSettle?: (id: string, timeoutMs: number) => Promise<void>;

  constructor(options: PostgresStoreOptions) {
    const { pool, timeoutMs = DEFAULT_STORE_TIMEOUT_MS, listenClient } = storeOptions(options, 'PostgresStore', USAGE);
    assertPool(pool);
    assertTimerDuration('timeoutMs', timeoutMs);
    if (listenClient !== undefined && typeof listenClient !== 'function') {
      throw new InvalidOptionError(`listenClient must be a function that returns a new pg.Client, got ${describeValue(listenClient)}: listenClient: () => new pg.Client({ connectionString })`);
    }
    this.#options = options;
    this.#pool = pool;
    this.#names = tableNames(options);
    this.#timeoutMs = timeoutMs;
    this.#db = pool;
    this.#claimSql = claimSql(this.#names.records);
    this.#takeoverSql = takeoverSql(this.#names.records);
    this.#notifySettled = `, notified AS (SELECT pg_notify('${this.#names.channel}', id) FROM done WHERE waited)
SELECT (SELECT count(*) FROM done)::int AS changed, (SELECT count(*) FROM notified)::int AS notified`;
    this.#markWaitedSql = `UPDATE ${this.#names.records} SET waited = true WHERE id = $1 AND state = 'in_progress' AND expires_at > clock_timestamp()`;
    // A pool of one connection cannot spare it to LISTEN: without `listenClient`, waiters poll.
    if (listenClient === undefined && poolMax(pool) < 2) return;
    this.#listener = new SettleListener(pool, this.#names.channel, listenClient);
    this.waitForSettle = async (id, waitMs) => {
      // Read at each call: a store from `withClient` uses its parent's listener.
      const listener = this.#listener!;
      const woken = listener.wait(id, waitMs);
      // Listen first, then mark the record waited: a settle after the mark notifies, one before it
      // leaves nothing to mark, and then the waiter is woken at once. In the background, so a
      // connection that never comes (server unreachable) only leaves the timeout.
      void listener
        .listening()
        .then(async (listening) => {
          if (listening && (await this.#pool.query(prepared(this.#markWaitedSql, [id]))).rowCount === 0) listener.wake(id);
        })
        .catch(() => undefined);
      return woken;
    };
  }

  /**
   * The same store, with every query sent through `client`, so claims and completions join
   * the caller's transaction: a rollback undoes them with the rest of the caller's work.
   * The caller owns the client (BEGIN, COMMIT, release). `migrate()` still uses the pool.
   *
   * Settle notifications of its `complete`/`release`/`delete` are sent when the caller's
   * transaction commits (none on rollback). Its `waitForSettle` uses this store's listener,
   * and its `close()` leaves that listener to this store.
   */
  withClient(client: PoolClient): PostgresStore {
    const bound = new PostgresStore(this.#options);
    bound.#db = client;
    bound.#listener = this.#listener;
    bound.#ownsListener = false;
    return bound;
  }

  /**
   * Transaction mode (`idempotent(fn, { store, transaction: true })`): checks a client out of
   * the pool, `BEGIN`, `work(client)`, then `complete(value, store)` with this store bound to
   * the client, and `COMMIT` only when that completion answered `ok`; otherwise `ROLLBACK`.
   * The client goes back to the pool (destroyed when its state is unknown). When anything
   * fails after the completion was tried, the claim is released through the pool (a no-op if
   * the claim was lost, or if the transaction did commit: a completed record is never
   * released). A failed COMMIT rejects with a `StoreUnavailableError` when the connection
   * failed (the commit may or may not have landed: a retry either gets the stored result or
   * runs the work), with the server's error otherwise (a deferred constraint, a serialization
   * failure: nothing committed).
   *
   * The record's row is locked only from the completion to the COMMIT; heartbeats extend the
   * lease meanwhile through other connections of the pool.
   */
  async runTransaction<T>(work: (tx: PoolClient) => T, complete: (value: Awaited<T>, store: IdempotencyStore) => Promise<void>): Promise<Awaited<T>> {
    const client = await this.#pool.connect().catch((error: unknown) => {
      throw this.#translate(error);
    });
    const bound = this.withClient(client);
    const completion: TransactionCompletion = { ok: false };
    bound.#completion = completion;
    // Nothing of the transaction stays: the claim is free for a retry.
    const releaseClaim = () => completion.claim && this.release(completion.claim.id, completion.claim.token).catch(() => undefined);
    let destroy = false;
    try {
      await client.query('BEGIN').catch((error: unknown) => {
        destroy = true;
        throw this.#translate(error);
      });
      let value: Awaited<T>;
      try {
        value = await work(client);
        await complete(value, bound);
        if (!completion.ok) throw new LeaseLostError();
      } catch (error) {
        // The work's own errors pass through as they are. A client whose ROLLBACK fails is in
        // an unknown state: destroy it, never reuse it.
        await client.query('ROLLBACK').catch(() => (destroy = true));
        await releaseClaim();
        throw error;
      }
      try {
        await client.query('COMMIT');
      } catch (error) {
        destroy = true;
        await releaseClaim();
        throw this.#translate(error, 'the transaction may or may not have committed: a retry gets the stored result if it did, and runs the work if it did not');
      }
      return value;
    } finally {
      client.release(destroy);
    }
  }

  /**
   * Refuses, with `heartbeat`, a pool of `max: 1`: the transaction holds its only connection,
   * so no heartbeat could extend the lease while the work runs.
   */
  assertTransactionWork(_work: (...args: never[]) => unknown, options: { heartbeat: boolean }): void {
    if (options.heartbeat && poolMax(this.#pool) < 2) {
      throw new InvalidOptionError(
        'idempotent(): `transaction: true` on a PostgresStore whose pool has max: 1 leaves no connection for the heartbeats that extend the lease while the transaction holds one: give the pool max: 2 or more (one per concurrent transaction, plus one), or pass heartbeat: false with a leaseMs longer than the work ever takes',
        'transaction',
      );
    }
  }

  /**
   * Applies the migrations this database lacks, recorded in `<table>_migrations`. Safe to
   * call on every start and from many processes at once: a transaction-scoped advisory lock
   * serialises them, and a migration and its bookkeeping commit together.
   */
  migrate(): Promise<void> {
    return this.#run(async () => {
      const client = await this.#pool.connect();
      let destroy = false;
      try {
        await client.query('BEGIN');
        await client.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`oncely.migrate:${this.#names.lockName}`]);
        await client.query(`CREATE TABLE IF NOT EXISTS ${this.#names.migrations} (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT clock_timestamp())`);
        const { rows } = await client.query<{ name: string }>(`SELECT name FROM ${this.#names.migrations}`);
        const applied = new Set(rows.map((row) => row.name));
        for (const migration of MIGRATIONS) {
          if (applied.has(migration.name)) continue;
          await client.query(migration.sql(this.#names));
          await client.query(`INSERT INTO ${this.#names.migrations} (name) VALUES ($1)`, [migration.name]);
        }
        await client.query('COMMIT');
      } catch (error) {
        // A client whose ROLLBACK fails is in an unknown state: destroy it, never reuse it.
        await client.query('ROLLBACK').catch(() => { destroy = true; });
        throw error;
      } finally {
        client.release(destroy);
      }
    });
  }

  // Methods are async so that invalid input rejects, like every other failure, never throws.
  async claim(request: ClaimRequest): Promise<Claim> {
    assertId(request.id);
    assertDuration('leaseMs', request.leaseMs);
    return this.#run(async (db) => {
      for (let attempt = 0; attempt < CLAIM_ATTEMPTS; attempt++) {
        const token = newToken();
        const values = [request.id, request.fingerprint, token, request.leaseMs, request.meta?.namespace ?? null, request.meta?.scope ?? null, request.meta?.key ?? null];
        const { rows } = await db.query<RecordRow & { acquired: boolean; now_ms: number }>(prepared(this.#claimSql, values));
        const row = rows[0];
        // Nothing inserted and nothing seen: a concurrent insert committed after this
        // statement's snapshot was taken (READ COMMITTED). The next attempt sees it.
        if (row === undefined) continue;
        if (row.acquired) return { status: 'acquired', token, expiresAt: row.expires_ms };
        const answer = answerFromExisting(toRecord(row), request.fingerprint, row.now_ms);
        if (answer !== undefined) return answer;
        // Lapsed: take it over, unless another claimer got there first (then look again).
        const takeover = await db.query<{ expires_ms: number }>(prepared(this.#takeoverSql, values));
        const taken = takeover.rows[0];
        if (taken !== undefined) return { status: 'acquired', token, expiresAt: taken.expires_ms };
      }
      throw new StoreUnavailableError(`PostgreSQL claim did not settle after ${CLAIM_ATTEMPTS} attempts under concurrent writers`);
    });
  }

  async complete(id: string, token: string, outcome: Uint8Array, retentionMs: number): Promise<FencedResult> {
    assertId(id);
    assertDuration('retentionMs', retentionMs);
    if (this.#completion) this.#completion.claim = { id, token };
    const result = await this.#fenced(this.#settling(`UPDATE ${this.#names.records} SET state = 'completed', outcome = $3, expires_at = ${after(CLOCK, '$4')} WHERE ${FENCE} RETURNING id, waited`), [id, token, outcome, retentionMs]);
    if (result === 'ok' && this.#completion) this.#completion.ok = true;
    return result;
  }

  async release(id: string, token: string): Promise<FencedResult> {
    assertId(id);
    return this.#fenced(this.#settling(`DELETE FROM ${this.#names.records} WHERE ${FENCE} RETURNING id, waited`), [id, token]);
  }

  async extend(id: string, token: string, leaseMs: number): Promise<FencedResult> {
    assertId(id);
    assertDuration('leaseMs', leaseMs);
    return this.#run(async (db) => {
      const { rowCount } = await db.query(prepared(`UPDATE ${this.#names.records} SET expires_at = ${after(CLOCK, '$3')} WHERE ${FENCE}`, [id, token, leaseMs]));
      return rowCount === 1 ? 'ok' : 'lost';
    });
  }

  async get(id: string): Promise<IdempotencyRecord | undefined> {
    assertId(id);
    return this.#run(async (db) => {
      const { rows } = await db.query<RecordRow>(prepared(`SELECT ${RECORD_COLUMNS} FROM ${this.#names.records} WHERE id = $1 AND expires_at > clock_timestamp()`, [id]));
      return rows[0] === undefined ? undefined : toRecord(rows[0]);
    });
  }

  async delete(id: string): Promise<boolean> {
    assertId(id);
    return this.#run(async (db) => {
      const { rows } = await db.query<{ changed: number }>(prepared(this.#settling(`DELETE FROM ${this.#names.records} WHERE id = $1 RETURNING id, waited`), [id]));
      return rows[0]!.changed > 0;
    });
  }

  /** One batch of at most `limit` rows; rows locked by a concurrent purge are skipped, not waited on. */
  async purgeExpired(options: PurgeOptions = {}): Promise<number> {
    const limit = purgeLimit(options.limit);
    const { records } = this.#names;
    return this.#run(async (db) => {
      const { rowCount } = await db.query({
        text: `DELETE FROM ${records} WHERE id IN (SELECT id FROM ${records} WHERE expires_at <= clock_timestamp() LIMIT $1 FOR UPDATE SKIP LOCKED)`,
        values: [limit],
      });
      return rowCount ?? 0;
    });
  }

  async stats(): Promise<StoreStats> {
    const records = this.#names.records;
    return this.#run(async (db) => {
      // One clock for every count: clock_timestamp() would move while the table is scanned.
      const { rows } = await db.query<StatsRow>({
        text: `SELECT ${ms('clock.now')} AS now_ms,
  count(*) FILTER (WHERE state = 'in_progress' AND expires_at > clock.now)::int AS in_progress,
  count(*) FILTER (WHERE state = 'completed' AND expires_at > clock.now)::int AS completed,
  count(*) FILTER (WHERE expires_at <= clock.now)::int AS lapsed,
  ${ms(`min(created_at) FILTER (WHERE state = 'in_progress' AND expires_at > clock.now)`)} AS oldest_in_progress_ms
FROM (SELECT ${CLOCK} AS now) AS clock LEFT JOIN ${records} ON true GROUP BY clock.now`,
      });
      return statsFromRow(rows[0]!);
    });
  }

  async findByKey(query: RecordQuery): Promise<IdempotencyRecord[]> {
    const { key, namespace = null, scope = null, limit } = recordQuery(query);
    return this.#run(async (db) => {
      const { rows } = await db.query<RecordRow>({
        text: `SELECT ${RECORD_COLUMNS} FROM ${this.#names.records}
WHERE key = $1 AND ($2::text IS NULL OR namespace = $2) AND ($3::text IS NULL OR scope = $3) AND expires_at > clock_timestamp()
ORDER BY created_at DESC LIMIT $4`,
        values: [key, namespace, scope, limit],
      });
      return rows.map(toRecord);
    });
  }

  /** Waiters on the claim are woken, as on `release`. */
  async forceRelease(id: string): Promise<boolean> {
    assertId(id);
    return this.#run(async (db) => {
      const sql = this.#settling(`DELETE FROM ${this.#names.records} WHERE id = $1 AND state = 'in_progress' AND expires_at > clock_timestamp() RETURNING id, waited`);
      const { rows } = await db.query<{ changed: number }>({ text: sql, values: [id] });
      return rows[0]!.changed > 0;
    });
  }

  /**
   * Lets go of the listening connection, if any (one from your pool is destroyed, not reused;
   * one from `listenClient` is ended), and wakes every waiter. The pool (and any client given
   * to `withClient`) is yours to end; call this before `pool.end()`, which otherwise waits up
   * to a second for the listener to notice.
   */
  async close(): Promise<void> {
    if (this.#ownsListener) this.#listener?.close();
  }

  /** `statement … RETURNING id, waited` as one statement that also notifies the waiters of the returned id, if any. */
  #settling(statement: string): string {
    return `WITH done AS (${statement})${this.#notifySettled}`;
  }

  /** Runs a settling statement; 'ok' when it changed the holder's row. */
  #fenced(sql: string, values: unknown[]): Promise<FencedResult> {
    return this.#run(async (db) => {
      const { rows } = await db.query<{ changed: number }>(prepared(sql, values));
      return rows[0]!.changed === 1 ? 'ok' : 'lost';
    });
  }

  #run<T>(work: (db: Queryable) => Promise<T>): Promise<T> {
    const translated = work(this.#db).catch((error: unknown) => {
      throw this.#translate(error);
    });
    return withTimeout(translated, this.#timeoutMs, 'PostgreSQL');
  }

  /**
   * Driver errors become `StoreUnavailableError` when the store cannot serve (fail closed);
   * other server errors (a constraint, a serialization failure in the caller's transaction)
   * pass through unchanged so the caller's own handling of them still works.
   */
  #translate(error: unknown, detail?: string): unknown {
    if (error instanceof StoreUnavailableError) return error;
    const { code, severity } = (error ?? {}) as { code?: unknown; severity?: unknown };
    // Only the server's errors carry a severity; the rest (ECONNREFUSED, "Connection
    // terminated", a pool connect timeout) all mean the server could not be reached.
    const fromServer = typeof severity === 'string' && typeof code === 'string';
    if (fromServer && code === '42P01') {
      return new StoreUnavailableError(`PostgreSQL table ${this.#names.records} does not exist; run store.migrate() (or apply migrations/postgres/*.sql) first`, { cause: error });
    }
    if (fromServer && code === '3F000') {
      return new StoreUnavailableError(`PostgreSQL schema of ${this.#names.records} does not exist; create it, then run store.migrate()`, { cause: error });
    }
    if (fromServer && !UNAVAILABLE_CLASSES.has(code.slice(0, 2))) return error;
    const message = error instanceof Error ? error.message : String(error);
    return new StoreUnavailableError(`PostgreSQL is unavailable: ${message}${detail ? `; ${detail}` : ''}`, { cause: error });
  }
}

/**
 * One statement in the common path: insert, or, when the id exists, return the row as this
 * statement's snapshot sees it, with the server time to judge it by.
 */
function claimSql(records: string): string {
  return `WITH clock AS (SELECT ${CLOCK} AS now),
inserted AS (
  INSERT INTO ${records} (id, state, fingerprint, token, created_at, expires_at, namespace, scope, key)
  SELECT $1, 'in_progress', $2, $3, now, ${after('now', '$4')}, $5, $6, $7 FROM clock
  ON CONFLICT (id) DO NOTHING
  RETURNING ${RECORD_COLUMNS}
)
SELECT true AS acquired, inserted.*, ${ms('now')} AS now_ms FROM inserted, clock
UNION ALL
SELECT false, ${RECORD_COLUMNS}, ${ms('now')} FROM ${records}, clock WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM inserted)`;
}

/** The lapse is re-checked under the row lock, so of two concurrent takeovers only one updates. */
function takeoverSql(records: string): string {
  return `UPDATE ${records}
SET state = 'in_progress', fingerprint = $2, token = $3, created_at = now, expires_at = ${after('now', '$4')},
  outcome = NULL, namespace = $5, scope = $6, key = $7, waited = false
FROM (SELECT ${CLOCK} AS now) AS clock
WHERE id = $1 AND expires_at <= clock_timestamp()
RETURNING ${ms('expires_at')} AS expires_ms`;
}

function toRecord(row: RecordRow): IdempotencyRecord {
  const meta: RecordMeta = {};
  if (row.namespace !== null) meta.namespace = row.namespace;
  if (row.scope !== null) meta.scope = row.scope;
  if (row.key !== null) meta.key = row.key;
  const base = {
    id: row.id,
    fingerprint: row.fingerprint,
    createdAt: row.created_ms,
    expiresAt: row.expires_ms,
    ...(Object.keys(meta).length > 0 ? { meta } : {}),
  };
  // A copy into a plain Uint8Array: pg's Buffer may be a view into a shared pool slab.
  return row.state === 'completed' ? { ...base, state: 'completed', outcome: new Uint8Array(row.outcome) } : { ...base, state: 'in_progress' };
}
