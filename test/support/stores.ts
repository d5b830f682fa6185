/** Every store of the repo, on its real server, for tests that run across all of them. */
import { MemoryStore } from '../../src/stores/memory/index.js';
import type { IdempotencyStore } from '../../src/core/types.js';

export interface StoreUnderTest {
  name: string;
  make: () => Promise<IdempotencyStore>;
  /** Why this store is skipped here (its server is unreachable outside CI), or false. */
  skip: string | false;
}

export async function storesUnderTest(): Promise<StoreUnderTest[]> {
  return [{ name: 'memory', make: async () => new MemoryStore(), skip: false }];
}
