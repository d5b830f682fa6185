// placeholder: the contract suite is being written (see storeContract signature below)
import type { IdempotencyStore } from '../core/types.js';

export interface StoreContractOptions {
  /** A fresh store on the real server. Called once per test; the suite closes it. */
  makeStore: () => IdempotencyStore | Promise<IdempotencyStore>;
  /** A store whose server cannot be reached (bad port), with a short operation timeout. */
  makeUnreachableStore?: () => IdempotencyStore | Promise<IdempotencyStore>;
  /**
   * Absolute path of a module exporting `makeStore()` (same store, same server), loaded in
   * child processes to race claims across processes. Omit for single-process stores.
   */
  processModule?: string;
  /** Child processes in the cross-process race. Default 4. */
  processes?: number;
  /** Skip the whole suite with this reason (e.g. the server is not reachable). */
  skip?: string;
}

export function storeContract(_name: string, _options: StoreContractOptions): void {
  throw new Error('not yet');
}
