import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after } from 'node:test';
import Database from 'better-sqlite3';
import { storeContract } from '../../testing/index.js';
import { CONTRACT_FILE_ENV, makeStore } from './contract-process.js';
import { SqliteStore } from './index.js';

const dir = mkdtempSync(join(tmpdir(), 'oncely-sqlite-contract-'));
const connections: Database.Database[] = [];
after(() => {
  for (const connection of connections) connection.close();
  rmSync(dir, { recursive: true, force: true });
});

// Children inherit the environment, so they open the same file.
process.env[CONTRACT_FILE_ENV] = join(dir, 'contract.db');

/**
 * SQLite has no server to be unreachable; its outage is a file it cannot lock in time. The
 * file is in rollback-journal mode because there an EXCLUSIVE lock shuts out readers too (in
 * WAL mode `get` would still answer; see sqlite.test.ts). The store is built before the lock
 * is taken, as a running service would be.
 */
function makeLockedStore(): SqliteStore {
  const path = join(dir, `locked-${connections.length}.db`);
  const database = new Database(path);
  const store = new SqliteStore({ database, busyTimeoutMs: 300 });
  const locker = new Database(path);
  locker.exec('BEGIN EXCLUSIVE');
  connections.push(locker, database);
  return store;
}

storeContract('sqlite file (WAL, shared by processes)', {
  makeStore,
  makeUnreachableStore: makeLockedStore,
  processModule: fileURLToPath(new URL('./contract-process.ts', import.meta.url)),
});

storeContract('sqlite :memory:', { makeStore: () => new SqliteStore({ path: ':memory:' }) });
