/**
 * `idempotent(fn, options)`: the core state machine around one async function. A duplicate
 * call (same key) gets the first call's stored result instead of running `fn` again. With
 * `transaction: true`, `fn` writes through a transaction of the store's database that commits
 * together with its result (see transaction.ts).
 */
import { canonicalJson, fromJsonSafe, toJsonSafe } from './codec.js';
import { claimOrWait, type Execution } from './engine.js';
import { InProgressError, InvalidOptionError, KeyReuseError, StoredFailureError } from './errors.js';
import { runInExecutionContext } from './execution-context.js';
import { encodeFunctionOutcome, readFunctionOutcome } from './function-outcome.js';
import { identityId, sha256Hex } from './identity.js';
import { OptionReader } from './options.js';
import { isTransactionalStore, runTransactional } from './transaction.js';
import type { IdempotencyStore, TransactionalStore } from './types.js';

export interface IdempotentOptions<A extends unknown[]> {
  /** Where records are kept. */
  store: IdempotencyStore;
  /** The idempotency key of a call: the same for every retry of one logical operation. */
  key: (...args: A) => string;
  /** Separates uses of one store. Default: `fn.name` (an anonymous `fn` must set it). */
  namespace?: string;
  /** The caller the key belongs to (tenant, user). Default: `''` (one scope). */
  scope?: (...args: A) => string;
  /**
   * What makes two calls "the same". Default: SHA-256 of the canonical JSON of the arguments.
   * The same key with another fingerprint is a `KeyReuseError`, never a replay.
   */
  fingerprint?: (...args: A) => string;
  /** How long a claim holds without a heartbeat. Default 30 000 ms. */
  leaseMs?: number;
  /** How long a stored result is replayed. Default 86 400 000 ms (24 h). */
  retentionMs?: number;
  /**
   * A call whose key is being run elsewhere: `'throw'` an `InProgressError` (default), or wait
   * up to `waitMs` for its result (and run it if the other execution gives up).
   */
  onInProgress?: 'throw' | { waitMs: number };
  /** Extend the lease every `leaseMs / 3` while `fn` runs. Default true. */
  heartbeat?: boolean;
  /**
   * When `fn` throws: `'release'` the key so a retry runs again (default), or `'store'` the
   * error so duplicates get a `StoredFailureError` with its name and message.
   */
  onError?: 'release' | 'store';
  /** `true` only with a store that runs transactions: see `TransactionalOptions`. */
  transaction?: false;
}

/**
 * Transaction mode on a SQL store (`PostgresStore`, `SqliteStore`): `fn(tx, ...args)` writes
 * through `tx`, a transaction of the store's database (a `pg.PoolClient`, or the
 * better-sqlite3 `Database`, where `fn` must be synchronous), and its result is stored in that
 * same transaction: the writes commit exactly when the result does. A throw rolls back and
 * releases the key. `onError: 'store'` is not available in this mode.
 */
export interface TransactionalOptions<Tx, A extends unknown[]> extends Omit<IdempotentOptions<A>, 'store' | 'onError' | 'transaction'> {
  store: TransactionalStore<Tx>;
  transaction: true;
  onError?: 'release';
}

const KNOWN_OPTIONS = ['store', 'key', 'namespace', 'scope', 'fingerprint', 'leaseMs', 'retentionMs', 'onInProgress', 'heartbeat', 'onError', 'transaction'];

/** `onInProgress` as a wait in ms: `'throw'` waits 0. */
function inProgressWait(read: OptionReader): number {
  const value = read.raw('onInProgress');
  if (value === undefined || value === 'throw') return 0;
  const waitMs = (value as { waitMs?: unknown } | null)?.waitMs;
  if (typeof value !== 'object' || typeof waitMs !== 'number' || !Number.isSafeInteger(waitMs) || waitMs <= 0) read.invalid('onInProgress', "'throw' or { waitMs: a positive whole number of milliseconds }");
  return waitMs;
}

function decodeOutcome(bytes: Uint8Array): unknown {
  const outcome = readFunctionOutcome(bytes);
  if (outcome.ok) return fromJsonSafe(outcome.value);
  throw new StoredFailureError(outcome.error.name, outcome.error.message);
}

function describeError(error: unknown): { name: string; message: string } {
  return error instanceof Error ? { name: error.name, message: error.message } : { name: 'Error', message: String(error) };
}

const encodeValue = (value: unknown): Uint8Array => encodeFunctionOutcome({ ok: true, value: toJsonSafe(value) });

/** The store that runs `fn` in transactions, checked when wrapping; undefined without `transaction: true`. */
function transactionalStore(read: OptionReader, store: IdempotencyStore, fn: (...args: never[]) => unknown, heartbeat: boolean): TransactionalStore<unknown> | undefined {
  if (!read.boolean('transaction', false)) return undefined;
  if (!isTransactionalStore(store)) throw new InvalidOptionError(`idempotent(): \`transaction: true\` needs a store that runs transactions (PostgresStore or SqliteStore); ${store.constructor.name} does not`, 'transaction');
  if (read.raw('onError') === 'store') throw new InvalidOptionError("idempotent(): `onError: 'store'` is not available with `transaction: true`: the failure would be stored outside the rolled-back transaction", 'onError');
  store.assertTransactionWork(fn, { heartbeat });
  return store;
}

/**
 * Wraps `fn` so that calls with the same key run it once; duplicates get the stored result
 * (same type as `fn` returns). Inside `fn`, `executionContext()` gives the abort signal and a
 * `downstreamKey` to pass on. With `transaction: true`, `fn(tx, ...args)` gets a transaction
 * of the store's database that commits together with its result (`TransactionalOptions`).
 *
 * @example
 * ```ts
 * const charge = idempotent(chargeCard, { store, key: (order) => order.id });
 * await charge(order); // a retry with the same order.id returns the first charge
 *
 * const pay = idempotent(async (tx: pg.PoolClient, order: Order) => {
 *   await tx.query('INSERT INTO payments (order_id) VALUES ($1)', [order.id]);
 * }, { store: postgresStore, key: (order) => order.id, transaction: true });
 * ```
 */
export function idempotent<Tx, A extends unknown[], R>(fn: (tx: Tx, ...args: A) => R, options: TransactionalOptions<Tx, A>): (...args: A) => Promise<Awaited<R>>;
export function idempotent<A extends unknown[], R>(fn: (...args: A) => R | Promise<R>, options: IdempotentOptions<A>): (...args: A) => Promise<Awaited<R>>;
export function idempotent(fn: (...args: unknown[]) => unknown, options: IdempotentOptions<unknown[]> | TransactionalOptions<unknown, unknown[]>): (...args: unknown[]) => Promise<unknown> {
  if (typeof fn !== 'function') throw new InvalidOptionError(`idempotent(): the first argument must be the function to wrap, got ${String(fn)}`);
  const read = new OptionReader('idempotent()', options, KNOWN_OPTIONS);
  const store = read.store();
  const keyOf = read.requiredFunction<(...args: unknown[]) => string>('key');
  const namespace = read.string('namespace', fn.name);
  if (!namespace) throw new InvalidOptionError('idempotent(): an anonymous function needs a `namespace` option', 'namespace');
  const scopeOf = read.function<(...args: unknown[]) => string>('scope');
  const fingerprintOf = read.function<(...args: unknown[]) => string>('fingerprint');
  const leaseMs = read.duration('leaseMs', 30_000);
  const retentionMs = read.count('retentionMs', 86_400_000);
  const waitMs = inProgressWait(read);
  const heartbeat = read.boolean('heartbeat', true);
  const onError = read.oneOf('onError', ['release', 'store'], 'release');
  const transactional = transactionalStore(read, store, fn, heartbeat);

  async function execute(execution: Execution, args: unknown[]): Promise<unknown> {
    if (transactional) return runTransactional(execution, transactional, (tx) => fn(tx, ...args), encodeValue);
    let value: unknown;
    try {
      value = await fn(...args);
    } catch (error) {
      // The caller learns of fn's error, not of a failure to store it (the claim then lapses).
      if (onError === 'store' && !execution.signal.aborted) await execution.complete(encodeFunctionOutcome({ ok: false, error: describeError(error) })).catch(() => undefined);
      else await execution.release();
      throw error;
    }
    let outcome: Uint8Array;
    try {
      outcome = encodeValue(value);
    } catch (error) {
      await execution.release();
      throw error;
    }
    await execution.complete(outcome);
    return value;
  }

  return async function idempotentCall(...args: unknown[]): Promise<unknown> {
    const key = keyOf(...args);
    const scope = scopeOf ? scopeOf(...args) : '';
    const id = identityId(namespace, scope, key);
    const fingerprint = fingerprintOf ? fingerprintOf(...args) : sha256Hex(canonicalJson(args));
    const claim = await claimOrWait({ store, id, fingerprint, meta: { namespace, scope, key }, leaseMs, retentionMs, heartbeat, waitMs });
    switch (claim.status) {
      case 'acquired': {
        const { signal, downstreamKey } = claim.execution;
        return runInExecutionContext({ signal, downstreamKey, namespace, scope, key, protected: true }, () => execute(claim.execution, args));
      }
      case 'completed':
        return decodeOutcome(claim.record.outcome);
      case 'mismatch':
        throw new KeyReuseError(claim.record);
      case 'in_progress':
        throw new InProgressError(claim.record, Math.min(1000, leaseMs));
    }
  };
}
