import type { IdempotencyStore } from './types.js';

export interface SweepOptions {
  /** Records removed per store call. Default 1000. */
  batchSize?: number;
  /** Stop after this many batches (bounds one sweep's work). Default unlimited. */
  maxBatches?: number;
}

/**
 * Removes lapsed records batch by batch until a batch comes back short. Run it on a schedule
 * (a cron job, a `setInterval`) for SQL stores; Redis and memory expire records themselves.
 * Returns the number removed.
 */
export async function sweepExpired(store: IdempotencyStore, options: SweepOptions = {}): Promise<number> {
  const batchSize = options.batchSize ?? 1000;
  const maxBatches = options.maxBatches ?? Number.POSITIVE_INFINITY;
  let total = 0;
  for (let batch = 0; batch < maxBatches; batch++) {
    const removed = await store.purgeExpired({ limit: batchSize });
    total += removed;
    if (removed < batchSize) break;
  }
  return total;
}
