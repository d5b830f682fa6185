/**
 * Transaction mode across real processes, on SQLite (one file) and PostgreSQL:
 * - a process SIGKILLed after its business write and before COMMIT leaves no business row;
 *   once its lease lapses the retry writes the row exactly once (DESIGN guarantee 3, the
 *   exactly-once case);
 * - 4 processes × 50 concurrent duplicates of one key write exactly one business row, and
 *   every caller gets that execution's result (waiting), or it or an InProgressError (not
 *   waiting).
 * Business rows are counted in the store's own database.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import pg from 'pg';
import { idempotent } from '../src/core/idempotent.js';
import { PostgresStore } from '../src/stores/postgres/index.js';
import { SqliteStore } from '../src/stores/sqlite/index.js';
import { POSTGRES_URL, skipUnlessReachable } from './support/services.js';

const WORKER = fileURLToPath(new URL('./support/transaction-worker.ts', import.meta.url));
const directory = mkdtempSync(join(tmpdir(), 'oncely-tx-crash-'));
const file = join(directory, 'shop.db');
const table = `oncely_tx_crash_${process.pid}`;
const business = `tx_crash_transfers_${process.pid}`;
const postgresSkip = await skipUnlessReachable('PostgreSQL', POSTGRES_URL);
const pool = new pg.Pool({ connectionString: POSTGRES_URL, max: 4 });
const sqlite = new Database(file);
sqlite.pragma('journal_mode = WAL');
sqlite.exec(`CREATE TABLE "${business}" (id INTEGER PRIMARY KEY, transfer_key TEXT NOT NULL, pid INTEGER NOT NULL)`);
if (!postgresSkip) {
  await new PostgresStore({ pool, table }).migrate();
  await pool.query(`CREATE TABLE "${business}" (id serial PRIMARY KEY, transfer_key text NOT NULL, pid int NOT NULL)`);
}
const children = new Set<ChildProcess>();

after(async () => {
  for (const child of children) child.kill('SIGKILL');
  if (!postgresSkip) await pool.query(`DROP TABLE IF EXISTS "${table}", "${table}_migrations", "${business}"`);
  await pool.end();
  sqlite.close();
  rmSync(directory, { recursive: true, force: true });
});

interface Target {
  name: 'sqlite' | 'postgres';
  skip: string | false;
  env: Record<string, string>;
  rows: (key: string) => Promise<number>;
}

const targets: Target[] = [
  {
    name: 'sqlite',
    skip: false,
    env: { ONCELY_WORKER_SQLITE: file },
    rows: async (key) => (sqlite.prepare(`SELECT count(*) AS n FROM "${business}" WHERE transfer_key = ?`).get(key) as { n: number }).n,
  },
  {
    name: 'postgres',
    skip: postgresSkip ?? false,
    env: { ONCELY_WORKER_POSTGRES: POSTGRES_URL, ONCELY_WORKER_TABLE: table },
    rows: async (key) => (await pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM "${business}" WHERE transfer_key = $1`, [key])).rows[0]!.n,
  },
];

type Outcome = { result: { pid: number; row: number } } | { error: string };

function startWorker(target: Target, mode: 'race' | 'hang', key: string, env: Record<string, string>) {
  const child = spawn(process.execPath, ['--import', 'tsx', WORKER, mode, key], {
    env: { ...process.env, ...target.env, ...env, ONCELY_WORKER_STORE: target.name, ONCELY_WORKER_BUSINESS: business },
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  children.add(child);
  let output = '';
  const waiters: { text: string; resolve: () => void }[] = [];
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (chunk: string) => {
    output += chunk;
    for (const waiter of waiters) if (output.includes(waiter.text)) waiter.resolve();
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => (children.delete(child), resolve(code))));
  return {
    child,
    printed: (text: string) => new Promise<void>((resolve) => (output.includes(text) ? resolve() : waiters.push({ text, resolve }))),
    go: () => child.stdin.write('go\n'),
    outcomes: async () => {
      assert.equal(await exited, 0, `worker failed: ${output}`);
      return JSON.parse(output.trim().split('\n').at(-1)!) as Outcome[];
    },
    exited,
  };
}

/** The parent's own wrapper of the same work, for the retry after a crash. */
function retryIn(target: Target, leaseMs: number) {
  const options = { namespace: 'transfers', key: (transferKey: string) => transferKey, leaseMs, transaction: true as const };
  if (target.name === 'sqlite') {
    const store = new SqliteStore({ database: sqlite });
    const transfer = idempotent((db: Database.Database, transferKey: string) => {
      const { lastInsertRowid } = db.prepare(`INSERT INTO "${business}" (transfer_key, pid) VALUES (?, ?)`).run(transferKey, process.pid);
      return { pid: process.pid, row: Number(lastInsertRowid) };
    }, { store, ...options });
    return { transfer, close: () => store.close() };
  }
  const store = new PostgresStore({ pool, table });
  const transfer = idempotent(async (client: pg.PoolClient, transferKey: string) => {
    const { rows } = await client.query<{ id: number }>(`INSERT INTO "${business}" (transfer_key, pid) VALUES ($1, $2) RETURNING id`, [transferKey, process.pid]);
    return { pid: process.pid, row: rows[0]!.id };
  }, { store, ...options });
  return { transfer, close: () => store.close() };
}

for (const target of targets) {
  describe(`transaction mode across processes: ${target.name}`, { skip: target.skip }, () => {
    it('a process SIGKILLed after its business write, before COMMIT: no row; after the lease lapses the retry writes it once', async () => {
      const key = `crash-${randomUUID()}`;
      const leaseMs = 1_500;
      const worker = startWorker(target, 'hang', key, { ONCELY_WORKER_LEASE_MS: String(leaseMs) });
      await worker.printed('ready\n');
      worker.go();
      await worker.printed('written\n');
      worker.child.kill('SIGKILL');
      const killedAt = Date.now();
      await worker.exited;
      assert.equal(await target.rows(key), 0, 'the uncommitted business write died with the process');

      const { transfer, close } = retryIn(target, leaseMs);
      await assert.rejects(transfer(key), { code: 'IN_PROGRESS' }, 'the dead holder still holds its lease');
      assert.equal(await target.rows(key), 0);
      await sleep(Math.max(0, killedAt + leaseMs + 300 - Date.now()));
      const first = await transfer(key);
      assert.equal(first.pid, process.pid);
      assert.equal(await target.rows(key), 1, 'the retry wrote the row');
      assert.deepEqual(await transfer(key), first, 'a duplicate gets the stored result');
      assert.equal(await target.rows(key), 1, 'exactly once');
      await close();
    });

    for (const waitMs of [10_000, 0]) {
      it(`4 processes × 50 concurrent duplicates (${waitMs ? 'waiting' : 'not waiting'}): one business row, one result`, async () => {
        const key = `race-${randomUUID()}`;
        const workers = Array.from({ length: 4 }, () => startWorker(target, 'race', key, { ONCELY_WORKER_CALLS: '50', ONCELY_WORKER_WAIT_MS: String(waitMs) }));
        await Promise.all(workers.map((worker) => worker.printed('ready\n')));
        const started = performance.now();
        for (const worker of workers) worker.go();
        const outcomes = (await Promise.all(workers.map((worker) => worker.outcomes()))).flat();
        const elapsed = performance.now() - started;
        const inProgress = outcomes.filter((outcome) => 'error' in outcome).length;
        console.log(`# ${target.name} 4×50 race (${waitMs ? 'waiting' : 'not waiting'}): ${elapsed.toFixed(0)} ms from go to the last exit; ${200 - inProgress} results, ${inProgress} InProgressError`);
        assert.equal(outcomes.length, 200);
        assert.equal(await target.rows(key), 1, 'exactly one business row');
        const results = outcomes.flatMap((outcome) => ('result' in outcome ? [JSON.stringify(outcome.result)] : []));
        const errors = outcomes.flatMap((outcome) => ('error' in outcome ? [outcome.error] : []));
        assert.equal(new Set(results).size, 1, 'every result is the one execution');
        if (waitMs) assert.deepEqual(errors, []);
        else assert.ok(errors.every((code) => code === 'IN_PROGRESS'), `only InProgressError besides the result: ${[...new Set(errors)].join(', ')}`);
        const row = JSON.parse(results[0]!) as { row: number };
        assert.equal(await target.rows(key), 1);
        assert.ok(row.row > 0);
      });
    }
  });
}
