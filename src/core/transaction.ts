/**
 * Transaction mode (DESIGN.md §1): the claim is an ordinary autocommitted lease claim, made
 * before this runs, so a concurrent duplicate sees `in_progress` (or waits) and never blocks on
 * the transaction's locks. Then the work runs in one transaction of the store's database and
 * the outcome is completed inside it, so the work's writes commit if and only if the outcome
 * does: a throw or a crash rolls both back, and the retry runs cleanly.
 */
import type { Execution } from './engine.js';
import type { TransactionalStore } from './types.js';

/** Whether `store` can run transaction mode (implements `TransactionalStore`). */
export function isTransactionalStore(store: object): store is TransactionalStore<unknown> {
  const candidate = store as Partial<TransactionalStore<unknown>>;
  return typeof candidate.runTransaction === 'function' && typeof candidate.assertTransactionWork === 'function';
}

/**
 * Runs `work(tx)` under `execution`'s claim in one transaction of `store` and completes the
 * claim with `encode(value)` inside that transaction, then commits. When the work or `encode`
 * throws, the transaction rolls back and the claim is released, so a retry runs again. When
 * the completion finds the claim lost, or the COMMIT fails, the store has already settled the
 * claim (see `TransactionalStore.runTransaction`).
 */
export async function runTransactional<Tx, R>(
  execution: Execution,
  store: TransactionalStore<Tx>,
  work: (tx: Tx) => R,
  encode: (value: Awaited<R>) => Uint8Array,
): Promise<Awaited<R>> {
  let completing = false;
  try {
    return await store.runTransaction(work, (value, bound) => {
      const outcome = encode(value);
      completing = true;
      return execution.complete(outcome, bound);
    });
  } catch (error) {
    if (!completing) await execution.release();
    throw error;
  }
}
