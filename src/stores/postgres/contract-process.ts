/**
 * Test helper for the contract suite's cross-process race: each child process calls
 * `makeStore()` for a store on its own Pool. `ONCELY_POSTGRES_TABLE` names the table the
 * parent test migrated.
 */
import pg from 'pg';
import { POSTGRES_URL } from '../../../test/support/services.js';
import { PostgresStore } from './index.js';

export function makeStore(): PostgresStore {
  // allowExitOnIdle: the store never ends a user's pool, so idle connections must not keep the child alive.
  const pool = new pg.Pool({ connectionString: POSTGRES_URL, max: 10, allowExitOnIdle: true });
  return new PostgresStore({ pool, table: process.env.ONCELY_POSTGRES_TABLE ?? 'oncely_records' });
}
