/** The shared store contract, run against the real PostgreSQL. */
import { fileURLToPath } from 'node:url';
import { after, before } from 'node:test';
import pg from 'pg';
import { POSTGRES_URL, skipUnlessReachable } from '../../../test/support/services.js';
import { storeContract } from '../../testing/index.js';
import { PostgresStore } from './index.js';

const skip = await skipUnlessReachable('PostgreSQL', POSTGRES_URL);
const table = `oncely_contract_${process.pid}`;
// The child processes of the cross-process race inherit this and use the same table.
process.env.ONCELY_POSTGRES_TABLE = table;
const pool = new pg.Pool({ connectionString: POSTGRES_URL, max: 10 });
const deadPool = new pg.Pool({ host: '127.0.0.1', port: 1, user: 'postgres', database: 'test' });

before(async () => {
  if (!skip) await new PostgresStore({ pool, table }).migrate();
});

after(async () => {
  if (!skip) await pool.query(`DROP TABLE IF EXISTS "${table}", "${table}_migrations"`);
  await Promise.all([pool.end(), deadPool.end()]);
});

storeContract('postgres', {
  skip,
  // One shared pool: the store never ends a user's pool, so a pool per test would leak.
  makeStore: () => new PostgresStore({ pool, table }),
  makeUnreachableStore: () => new PostgresStore({ pool: deadPool, table, timeoutMs: 500 }),
  processModule: fileURLToPath(new URL('./contract-process.ts', import.meta.url)),
});
