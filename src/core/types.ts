/**
 * The store contract. Every store implements these few atomic transitions of one record;
 * the core owns everything else (identity hashing, fingerprints, encoding, leases, heartbeats).
 *
 * All times are epoch milliseconds read from the **store's** clock, never the caller's.
 */

/** Operator-facing context kept inside a record. Never used to find the record. */
export interface RecordMeta {
  /** What the identity belongs to: a route, a function, a consumer. */
  namespace?: string;
  /** Who the identity belongs to: a tenant, a user, a credential hash. */
  scope?: string;
  /** The raw key the caller sent, for operators reading the store. */
  key?: string;
}

interface RecordBase {
  /** SHA-256 (hex) of (namespace, scope, key): the storage key. */
  id: string;
  /** SHA-256 (hex) of what makes two requests "the same". */
  fingerprint: string;
  /** When the current claim was made (store clock, epoch ms). */
  createdAt: number;
  meta?: RecordMeta;
}

/** A claim that is being worked on; it lapses at `expiresAt` unless extended. */
export interface InProgressRecord extends RecordBase {
  state: 'in_progress';
  /** End of the lease (store clock, epoch ms). */
  expiresAt: number;
}

/** A stored outcome; every duplicate gets these bytes until `expiresAt`. */
export interface CompletedRecord extends RecordBase {
  state: 'completed';
  /** End of retention (store clock, epoch ms). */
  expiresAt: number;
  /** The outcome exactly as it was passed to `complete`. Treat as read-only. */
  outcome: Uint8Array;
}

export type IdempotencyRecord = InProgressRecord | CompletedRecord;

export interface ClaimRequest {
  /** SHA-256 hex of the identity; see `identityId()`. */
  id: string;
  fingerprint: string;
  /** How long the claim holds without an `extend`. */
  leaseMs: number;
  meta?: RecordMeta;
}

/**
 * The result of one atomic claim. On conflict the existing record comes back in the same
 * round trip, so callers never need a second read.
 *
 * - `acquired`: the caller holds the record; `token` fences its later writes.
 * - `completed`: an outcome is stored under the same fingerprint; replay it.
 * - `in_progress`: another holder with the same fingerprint is working on it.
 * - `mismatch`: the live record has another fingerprint (checked before in-progress).
 */
export type Claim =
  | { status: 'acquired'; token: string; expiresAt: number }
  | { status: 'completed'; record: CompletedRecord }
  | { status: 'in_progress'; record: InProgressRecord }
  | { status: 'mismatch'; record: IdempotencyRecord };

/**
 * `lost`: the caller's token is no longer current (lease taken over, record deleted or
 * completed). A holder whose lease lapsed but was not taken over may still write on stores
 * that keep lapsed rows (memory, SQLite, PostgreSQL); stores that expire records themselves
 * (Redis) answer `lost`. Either way a stale holder never overwrites a newer one.
 */
export type FencedResult = 'ok' | 'lost';

export interface PurgeOptions {
  /** Most records removed by this call; stores delete in batches of at most this size. Default 1000. */
  limit?: number;
}

export interface IdempotencyStore {
  /**
   * Atomically: create an in-progress record if none is live (absent, lease lapsed, or
   * retention passed), otherwise report the live one.
   */
  claim(request: ClaimRequest): Promise<Claim>;
  /** Store the outcome for the current holder; keeps it for `retentionMs`. */
  complete(id: string, token: string, outcome: Uint8Array, retentionMs: number): Promise<FencedResult>;
  /** Give the claim up (the work failed in a retryable way); the next claim acquires. */
  release(id: string, token: string): Promise<FencedResult>;
  /** Push the lease end to store-now + `leaseMs` (heartbeat). */
  extend(id: string, token: string, leaseMs: number): Promise<FencedResult>;
  /** The live record, or undefined when absent or lapsed. */
  get(id: string): Promise<IdempotencyRecord | undefined>;
  /** Operator: remove a record whatever its state. True when one was removed. */
  delete(id: string): Promise<boolean>;
  /** Remove lapsed records, at most `limit` per call. Returns how many were removed. */
  purgeExpired(options?: PurgeOptions): Promise<number>;
  /**
   * Optional: resolves when record `id` may have settled (completed, released or deleted),
   * pushed by the store where it can (PostgreSQL LISTEN/NOTIFY, Redis pub/sub), or after
   * `timeoutMs`, whichever comes first. Waiters claim again when it resolves, so an early or
   * spurious wake-up is harmless. Without it, waiters poll with a backoff.
   */
  waitForSettle?(id: string, timeoutMs: number): Promise<void>;
  /** Release what the store itself opened. A client passed in by the user stays open. */
  close(): Promise<void>;
}

/** What `oncely stats` shows: live records by state. Times are the store's clock, epoch ms. */
export interface StoreStats {
  /** Claims whose lease has not lapsed. */
  inProgress: number;
  /** Outcomes still within their retention. */
  completed: number;
  /**
   * Lapsed records still kept (removed by `purgeExpired`). Always 0 on Redis, which removes
   * lapsed records itself.
   */
  lapsed: number;
  /** `createdAt` of the oldest live in-progress claim; absent when there is none. */
  oldestInProgressAt?: number;
  /** The store's clock when it counted. */
  now: number;
}

/** Which records `findByKey` returns: the raw key, narrowed by namespace and scope when given. */
export interface RecordQuery {
  key: string;
  namespace?: string;
  scope?: string;
  /** Most records returned, newest first. Default 20. */
  limit?: number;
}

/**
 * Operator commands, for people looking after a store (the `oncely` CLI), not for request
 * paths: they may scan. Every built-in store implements them; a custom store need not.
 */
export interface OperableStore extends IdempotencyStore {
  /** Live records by state, and the oldest live claim. Scans the store. */
  stats(): Promise<StoreStats>;
  /**
   * Live records whose stored `meta.key` is `query.key` (and namespace/scope, when given):
   * for finding a record without knowing the scope it was made under. Scans the store.
   */
  findByKey(query: RecordQuery): Promise<IdempotencyRecord[]>;
  /**
   * Removes record `id` only while it is a live in-progress claim, so the next claim runs the
   * work again: for a claim stuck behind a holder that is known to be gone. A completed
   * outcome is never removed by it. True when a claim was removed; its holder's later
   * `complete` or `release` gets `lost`.
   */
  forceRelease(id: string): Promise<boolean>;
}

/**
 * A store that can run work in one transaction of its own database with the record's
 * completion inside it (`idempotent(fn, { transaction: true })`): the work's writes commit if
 * and only if its outcome does. `Tx` is the client the work writes with.
 */
export interface TransactionalStore<Tx> extends IdempotencyStore {
  /**
   * Begins a transaction, calls `work(tx)`, then `complete(value, store)`, where `store` is
   * this store writing inside the transaction (`Execution.complete(outcome, store)`), and
   * commits only when that completion answered `ok`. Rolls back and rejects with what `work`
   * or `complete` threw, or with a `LeaseLostError` when the completion found another holder.
   * When the COMMIT itself fails after a completion, releases that claim (a no-op if the
   * commit did land: a completed record is never released) and rejects.
   */
  runTransaction<T>(work: (tx: Tx) => T, complete: (value: Awaited<T>, store: IdempotencyStore) => Promise<void>): Promise<Awaited<T>>;
  /**
   * Refuses, when work is wrapped, transaction work this store cannot run safely, with an
   * `InvalidOptionError`: SQLite takes only a synchronous function; PostgreSQL with
   * `heartbeat` needs a pool that can spare a connection while the transaction holds one.
   */
  assertTransactionWork(work: (...args: never[]) => unknown, options: { heartbeat: boolean }): void;
}
