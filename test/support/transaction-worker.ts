/**
 * A child process for the transaction-mode tests. Builds the store named by
 * ONCELY_WORKER_STORE (sqlite or postgres, see store-from-env.ts) and wraps, in transaction
 * mode, a function that inserts one row into the business table ONCELY_WORKER_BUSINESS (in
 * the store's own database) per execution. On "go" from stdin:
 *
 * argv: <mode> <key>. Modes:
 *   race  — ONCELY_WORKER_CALLS concurrent calls of one key; prints one JSON line of outcomes
 *           (`{ result }` or `{ error: code }`). ONCELY_WORKER_WAIT_MS > 0 waits for the result.
 *   hang  — one call that inserts its row, prints "written", then never commits (the parent
 *           SIGKILLs this process before COMMIT).
 */
import type Database from 'better-sqlite3';
import type pg from 'pg';
import { OncelyError } from '../../src/core/errors.js';
import { idempotent } from '../../src/core/idempotent.js';
import type { TransactionalStore } from '../../src/core/types.js';
import { storeFromEnv } from './store-from-env.js';

const env = process.env as Record<string, string>;
const [mode, key] = process.argv.slice(-2) as [string, string];
const business = env.ONCELY_WORKER_BUSINESS!;
const waitMs = Number(env.ONCELY_WORKER_WAIT_MS ?? 0);
const options = {
  namespace: 'transfers',
  key: (transferKey: string) => transferKey,
  leaseMs: Number(env.ONCELY_WORKER_LEASE_MS ?? 30_000),
  onInProgress: waitMs > 0 ? { waitMs } : ('throw' as const),
  transaction: true as const,
};
const result = (id: number | bigint) => ({ pid: process.pid, row: Number(id) });

/** Blocks the thread: a SQLite transaction's work is synchronous. */
function hangForever(): never {
  for (;;) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1_000);
}

function transfer(): (transferKey: string) => Promise<{ pid: number; row: number }> {
  if (env.ONCELY_WORKER_STORE === 'sqlite') {
    const store = storeFromEnv() as TransactionalStore<Database.Database>;
    return idempotent((db: Database.Database, transferKey: string) => {
      const { lastInsertRowid } = db.prepare(`INSERT INTO "${business}" (transfer_key, pid) VALUES (?, ?)`).run(transferKey, process.pid);
      if (mode === 'hang') {
        process.stdout.write('written\n');
        hangForever();
      }
      return result(lastInsertRowid);
    }, { store, ...options });
  }
  const store = storeFromEnv() as TransactionalStore<pg.PoolClient>;
  return idempotent(async (client: pg.PoolClient, transferKey: string) => {
    const { rows } = await client.query<{ id: number }>(`INSERT INTO "${business}" (transfer_key, pid) VALUES ($1, $2) RETURNING id`, [transferKey, process.pid]);
    if (mode === 'hang') {
      process.stdout.write('written\n');
      await new Promise(() => setInterval(() => undefined, 1_000));
    }
    // Long enough for every duplicate to arrive while this one runs.
    await new Promise((resolve) => setTimeout(resolve, 50));
    return result(rows[0]!.id);
  }, { store, ...options });
}

const run = transfer();
process.stdout.write('ready\n');
await new Promise((resolve) => process.stdin.once('data', resolve));
const calls = mode === 'race' ? Number(env.ONCELY_WORKER_CALLS ?? 50) : 1;
const outcomes = await Promise.all(
  Array.from({ length: calls }, () =>
    run(key).then(
      (value) => ({ result: value }),
      (error: unknown) => ({ error: error instanceof OncelyError ? error.code : String(error) }),
    ),
  ),
);
process.stdout.write(`${JSON.stringify(outcomes)}\n`);
process.exit(0);
