/**
 * The embedded default store: one SQLite file shared by the processes of one machine.
 *
 * Every transition is one statement or one `BEGIN IMMEDIATE` transaction, so processes that
 * share the file take turns on SQLite's write lock (waiting up to the busy timeout), and every
 * expiry decision reads SQLite's clock in the same statement or transaction that acts on it.
 */
import Database from 'better-sqlite3';
import { InvalidOptionError, LeaseLostError, StoreUnavailableError } from '../../core/errors.js';
import {
  answerFromExisting,
  assertDuration,
  assertId,
  describeValue,
  newToken,
  purgeLimit,
  recordQuery,
  statsFromRow,
  storeOptions,
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
import { schemaSql, statementsSql } from './sql.js';

interface CommonOptions {
  /**
   * Table that holds the records: a plain identifier (letters, digits, `_`). Created with its
   * `expires_at` index on construction if missing, so no migration step is needed.
   * Default `'oncely_records'`.
   */
  table?: string;
  /**
   * How long a statement waits for another connection's lock before it fails with
   * `StoreUnavailableError`. Default 5000 when the store opens the file. With `database`, the
   * connection keeps its own setting (better-sqlite3's `timeout`, 5000 unless you chose one)
   * unless this option is given, in which case it is applied to that connection.
   */
  busyTimeoutMs?: number;
}

/** Either a file the store opens and owns, or your own better-sqlite3 connection. */
export type SqliteStoreOptions =
  | (CommonOptions & {
      /**
       * Database file (created if missing) or `':memory:'`. The store opens it, puts the file
       * in WAL mode with `synchronous = NORMAL` (a power loss, not a process crash, can roll
       * back the last outcomes), and closes it in `close()`.
       */
      path: string;
      database?: never;
    })
  | (CommonOptions & {
      /**
       * Your better-sqlite3 connection. It stays yours: `close()` leaves it open, and the
       * store does not change its journal mode, a persistent property of the file that its
       * owner decides. Correct in any mode; WAL (`db.pragma('journal_mode = WAL')`) lets
       * readers in while another process writes.
       */
      database: Database.Database;
      path?: never;
    });

type RecordColumns = { fingerprint: string; created_at: number; expires_at: number; namespace: string | null; scope: string | null; key: string | null };
/** A stored row; the table's CHECK ties `outcome` to `state`. */
type RecordRow = RecordColumns & ({ state: 'in_progress'; outcome: null } | { state: 'completed'; outcome: Buffer });
type Held = { id: string; token: string };
type ClaimRow = { now: number } & (RecordRow | { state: null });
type RecordQueryParams = { key: string; namespace: string | null; scope: string | null; limit: number };

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;

const AsyncFunction = (async () => undefined).constructor;

const SYNC_WORK = 'a synchronous function: better-sqlite3 is synchronous and its connection is shared by the whole process, so anything awaited inside the transaction would let unrelated code join it, and whatever ran after an await would write outside it';

/**
 * Primary result codes that mean the database cannot serve the request now: locked by another
 * connection, I/O or disk failure, unreadable file. Other codes (a constraint, a missing
 * column) mean a bug or a tampered schema and are rethrown as they are.
 */
const UNAVAILABLE = /^SQLITE_(BUSY|LOCKED|IOERR|CANTOPEN|FULL|READONLY|CORRUPT|NOTADB|NOMEM|PROTOCOL|PERM)(_|$)/;

function translate(error: unknown, operation: string): unknown {
  // Matched by `code`, not `instanceof`: the user's connection may come from another copy of
  // better-sqlite3 than the one this module loads.
  const code = error instanceof Error ? (error as { code?: unknown }).code : undefined;
  if (typeof code !== 'string' || !UNAVAILABLE.test(code)) return error;
  return new StoreUnavailableError(`SQLite ${operation} failed: ${(error as Error).message} (${code})`, { cause: error });
}

function openFile(path: string, busyTimeoutMs: number): Database.Database {
  let db: Database.Database | undefined;
  try {
    db = new Database(path, { timeout: busyTimeoutMs });
    // WAL lets readers in while one process writes; NORMAL is durable across process crashes
    // in WAL mode and saves an fsync per commit. (':memory:' answers 'memory' and stays so.)
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    return db;
  } catch (error) {
    db?.close();
    throw translate(error, `open ${JSON.stringify(path)}`);
  }
}

const USAGE = "new SqliteStore({ path: './oncely.db' }) or new SqliteStore({ database })";

/** Exactly one of `path` (a file name) and `database` (a better-sqlite3 connection), each of the right kind. */
function assertSource(options: { path?: unknown; database?: unknown }): void {
  const { path, database } = options;
  if ((path === undefined) === (database === undefined)) {
    throw new InvalidOptionError(`SqliteStore needs exactly one of path (a database file such as './oncely.db', or ':memory:') and database (your better-sqlite3 connection): ${USAGE}`);
  }
  if (path !== undefined && (typeof path !== 'string' || path === '')) {
    throw new InvalidOptionError(`path must be a database file name such as './oncely.db', or ':memory:', got ${typeof path === 'string' ? 'an empty string' : describeValue(path)}`);
  }
  if (database === undefined) return;
  const methods = database as Record<string, unknown> | null;
  if (['prepare', 'exec', 'pragma', 'transaction'].every((method) => typeof methods?.[method] === 'function')) return;
  const hint = typeof database === 'string' ? 'for a file name, pass it as path' : 'pass new Database(file) from better-sqlite3';
  throw new InvalidOptionError(`database must be a better-sqlite3 Database, got ${describeValue(database)}: ${hint}`);
}

function toRecord(id: string, row: RecordRow): IdempotencyRecord {
  const meta: RecordMeta = {};
  if (row.namespace !== null) meta.namespace = row.namespace;
  if (row.scope !== null) meta.scope = row.scope;
  if (row.key !== null) meta.key = row.key;
  const base = { id, fingerprint: row.fingerprint, createdAt: row.created_at, expiresAt: row.expires_at, ...(Object.keys(meta).length > 0 ? { meta } : {}) };
  return row.state === 'completed' ? { ...base, state: 'completed', outcome: row.outcome } : { ...base, state: 'in_progress' };
}

/**
 * Idempotency records in a SQLite file (better-sqlite3), safe for several processes on one
 * machine. Time is SQLite's clock, never `Date.now()`.
 *
 * @example
 * ```ts
 * import { SqliteStore } from 'oncely/sqlite';
 * const store = new SqliteStore({ path: './oncely.db' });
 * // or, on your own connection: new SqliteStore({ database: db, table: 'idempotency' })
 * ```
 */
export class SqliteStore implements OperableStore, TransactionalStore<Database.Database> {
  private readonly db: Database.Database;
  private readonly ownsDatabase: boolean;
  private readonly statements;
  private readonly claimTransaction;

  constructor(options: SqliteStoreOptions) {
    storeOptions(options, 'SqliteStore', USAGE);
    const table = options.table ?? 'oncely_records';
    if (typeof table !== 'string' || !IDENTIFIER.test(table) || /^sqlite_/i.test(table)) {
      throw new InvalidOptionError(`table must be a plain SQL identifier (letters, digits, _; not sqlite_*), got ${typeof table === 'string' ? JSON.stringify(table) : describeValue(table)}`);
    }
    if (options.busyTimeoutMs !== undefined) assertDuration('busyTimeoutMs', options.busyTimeoutMs);
    assertSource(options);
    this.ownsDatabase = options.path !== undefined;
    this.db = options.path !== undefined ? openFile(options.path, options.busyTimeoutMs ?? 5_000) : options.database;
    try {
      if (!this.ownsDatabase && options.busyTimeoutMs !== undefined) this.db.pragma(`busy_timeout = ${options.busyTimeoutMs}`);
      this.db.exec(schemaSql(table));
      this.statements = this.prepare(table);
    } catch (error) {
      if (this.ownsDatabase) this.db.close();
      throw translate(error, 'setup');
    }
    const { readForClaim, takeOver } = this.statements;
    this.claimTransaction = this.db.transaction((request: ClaimRequest, token: string): Claim => {
      const row = readForClaim.get(request.id)!; // one row always: the clock LEFT JOIN the record
      if (row.state !== null) {
        const answer = answerFromExisting(toRecord(request.id, row), request.fingerprint, row.now);
        if (answer) return answer;
      }
      const { namespace = null, scope = null, key = null } = request.meta ?? {};
      takeOver.run({ id: request.id, fingerprint: request.fingerprint, token, now: row.now, leaseMs: request.leaseMs, namespace, scope, key });
      return { status: 'acquired', token, expiresAt: row.now + request.leaseMs };
    });
  }

  private prepare(table: string) {
    const sql = statementsSql(table);
    return {
      // safeIntegers(false): epoch ms fit a double, and the user's connection may default to BigInt.
      readForClaim: this.db.prepare<[string], ClaimRow>(sql.readForClaim).safeIntegers(false),
      takeOver: this.db.prepare<[{ id: string; fingerprint: string; token: string; now: number; leaseMs: number; namespace: string | null; scope: string | null; key: string | null }]>(sql.takeOver),
      complete: this.db.prepare<[Held & { outcome: Uint8Array; retentionMs: number }]>(sql.complete),
      extend: this.db.prepare<[Held & { leaseMs: number }]>(sql.extend),
      release: this.db.prepare<[Held]>(sql.release),
      get: this.db.prepare<[string], RecordRow>(sql.get).safeIntegers(false),
      delete: this.db.prepare<[string]>(sql.delete),
      purge: this.db.prepare<[number]>(sql.purge),
      stats: this.db.prepare<[], StatsRow>(sql.stats).safeIntegers(false),
      findByKey: this.db.prepare<[RecordQueryParams], RecordRow & { id: string }>(sql.findByKey).safeIntegers(false),
      forceRelease: this.db.prepare<[string]>(sql.forceRelease),
    };
  }

  /** Runs synchronous driver work; callers are async, so whatever it throws rejects. */
  private run<T>(operation: string, work: () => T): T {
    if (!this.db.open) throw new StoreUnavailableError(`SQLite ${operation} failed: the database connection is closed`);
    try {
      return work();
    } catch (error) {
      throw translate(error, operation);
    }
  }

  async claim(request: ClaimRequest): Promise<Claim> {
    assertId(request.id);
    assertDuration('leaseMs', request.leaseMs);
    // IMMEDIATE takes the write lock before the read, so no other process can claim in between.
    return this.run('claim', () => this.claimTransaction.immediate(request, newToken()));
  }

  async complete(id: string, token: string, outcome: Uint8Array, retentionMs: number): Promise<FencedResult> {
    assertId(id);
    assertDuration('retentionMs', retentionMs);
    return this.completeNow(id, token, outcome, retentionMs);
  }

  /** The completion as one synchronous statement, so that `runTransaction` can make it inside its transaction. */
  private completeNow(id: string, token: string, outcome: Uint8Array, retentionMs: number): FencedResult {
    // Fenced by token only: a holder whose lease lapsed without a takeover still holds it.
    const { changes } = this.run('complete', () => this.statements.complete.run({ id, token, outcome, retentionMs }));
    return changes === 1 ? 'ok' : 'lost';
  }

  /**
   * Transaction mode (`idempotent(fn, { store, transaction: true })`): in one
   * `BEGIN IMMEDIATE` transaction on this store's connection, `work(db)`, then
   * `complete(value, store)` with a store whose completion is a synchronous statement inside
   * that transaction; COMMIT only when it answered `ok`, otherwise ROLLBACK. `work` must be
   * synchronous: one that returns a promise is rolled back and refused with an
   * `InvalidOptionError`. When anything fails after the completion was tried, the claim is
   * released (a no-op if it was lost).
   */
  async runTransaction<T>(work: (tx: Database.Database) => T, complete: (value: Awaited<T>, store: IdempotencyStore) => Promise<void>): Promise<Awaited<T>> {
    const completion: { claim?: Held; ok: boolean } = { ok: false };
    const bound: IdempotencyStore = Object.assign(Object.create(this) as SqliteStore, {
      // Runs its statement when called, with no await before it, and `Execution.complete`
      // calls it before its own first await: the completion is written before `complete` returns.
      complete: async (id: string, token: string, outcome: Uint8Array, retentionMs: number): Promise<FencedResult> => {
        assertId(id);
        completion.claim = { id, token };
        const result = this.completeNow(id, token, outcome, retentionMs);
        completion.ok = result === 'ok';
        return result;
      },
    });
    let completing: Promise<void> | undefined;
    const transaction = this.db.transaction((): Awaited<T> => {
      const value = work(this.db);
      if (typeof (value as { then?: unknown } | null)?.then === 'function') {
        void Promise.resolve(value).catch(() => undefined);
        throw new InvalidOptionError(`idempotent(): in transaction mode on a SqliteStore, fn must be ${SYNC_WORK}; it returned a promise, and its transaction was rolled back`, 'transaction');
      }
      completing = complete(value as Awaited<T>, bound);
      if (!completion.ok) throw new LeaseLostError();
      return value as Awaited<T>;
    });
    try {
      if (!this.db.open) throw new StoreUnavailableError('SQLite transaction failed: the database connection is closed');
      if (this.db.inTransaction) throw new StoreUnavailableError('SQLite transaction failed: another transaction is open on this connection, and the work would join it');
      const value = transaction.immediate();
      await completing;
      return value;
    } catch (error) {
      try {
        if (completion.claim) this.statements.release.run(completion.claim);
      } catch {
        // Best effort, as for every release: the claim then lapses after its lease.
      }
      // The completion's own failure (the claim was lost, the statement failed) says more than LeaseLostError.
      if (completing && !completion.ok) await completing;
      throw translate(error, 'transaction');
    }
  }

  /** Refuses an `async` function: see `runTransaction`. */
  assertTransactionWork(work: (...args: never[]) => unknown): void {
    if (work instanceof AsyncFunction) throw new InvalidOptionError(`idempotent(): in transaction mode on a SqliteStore, fn must be ${SYNC_WORK}; got an async function`, 'transaction');
  }

  async release(id: string, token: string): Promise<FencedResult> {
    assertId(id);
    const { changes } = this.run('release', () => this.statements.release.run({ id, token }));
    return changes === 1 ? 'ok' : 'lost';
  }

  async extend(id: string, token: string, leaseMs: number): Promise<FencedResult> {
    assertId(id);
    assertDuration('leaseMs', leaseMs);
    const { changes } = this.run('extend', () => this.statements.extend.run({ id, token, leaseMs }));
    return changes === 1 ? 'ok' : 'lost';
  }

  async get(id: string): Promise<IdempotencyRecord | undefined> {
    assertId(id);
    const row = this.run('get', () => this.statements.get.get(id));
    return row && toRecord(id, row);
  }

  async delete(id: string): Promise<boolean> {
    assertId(id);
    return this.run('delete', () => this.statements.delete.run(id)).changes > 0;
  }

  async purgeExpired(options?: PurgeOptions): Promise<number> {
    const limit = purgeLimit(options?.limit);
    return this.run('purgeExpired', () => this.statements.purge.run(limit)).changes;
  }

  async stats(): Promise<StoreStats> {
    return statsFromRow(this.run('stats', () => this.statements.stats.get())!);
  }

  async findByKey(query: RecordQuery): Promise<IdempotencyRecord[]> {
    const { key, namespace = null, scope = null, limit } = recordQuery(query);
    const rows = this.run('findByKey', () => this.statements.findByKey.all({ key, namespace, scope, limit }));
    return rows.map((row) => toRecord(row.id, row));
  }

  async forceRelease(id: string): Promise<boolean> {
    assertId(id);
    return this.run('forceRelease', () => this.statements.forceRelease.run(id)).changes > 0;
  }

  /** Closes the database if the store opened it (`path`); a `database` you passed stays open. */
  async close(): Promise<void> {
    if (this.ownsDatabase) this.db.close();
  }
}
