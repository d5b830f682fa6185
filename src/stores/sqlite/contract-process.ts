/**
 * Loaded by the contract suite's child processes: a store on the same file as the parent's
 * (the path comes through the inherited environment), so the race crosses processes.
 */
import { SqliteStore } from './index.js';

export const CONTRACT_FILE_ENV = 'ONCELY_SQLITE_CONTRACT_FILE';

export function makeStore(): SqliteStore {
  const path = process.env[CONTRACT_FILE_ENV];
  if (!path) throw new Error(`${CONTRACT_FILE_ENV} is not set; the parent test sets it`);
  return new SqliteStore({ path });
}
