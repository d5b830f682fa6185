/**
 * BullMQ worker processes (worker-process.ts) sharing a RedisStore: a worker SIGKILLed after
 * its side effect and before the job completed, and two workers competing for duplicates.
 * Effects are counted from the file the workers append to. In transaction mode, on a
 * PostgresStore: a worker SIGKILLed after its INSERT and before the COMMIT, counted from the
 * table the workers insert into.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Queue } from 'bullmq';
import pg from 'pg';
import { PostgresStore } from '../../stores/postgres/index.js';
import { POSTGRES_URL, REDIS_URL, skipUnlessReachable } from '../../../test/support/services.js';

const connection = { host: '127.0.0.1', port: 6379, maxRetriesPerRequest: null };
const WORKER = new URL('./worker-process.ts', import.meta.url).pathname;
const LEASE_MS = 1500;
const skip = await skipUnlessReachable('Redis (BullMQ)', REDIS_URL);
const directory = mkdtempSync(join(tmpdir(), 'oncely-bullmq-'));
after(() => rmSync(directory, { recursive: true, force: true }));

async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** Transaction mode: the PostgresStore's table and the table the handler inserts its effect into. */
interface TransactionTables {
  storeTable: string;
  effectsTable: string;
}

/**
 * A worker process on `queue`; `printed(text)` resolves once it wrote that line. Lease mode on
 * a RedisStore under `storePrefix`, or with `transaction`, transaction mode on a PostgresStore.
 */
function startWorker(queue: string, storePrefix: string, effects: string, hang = false, transaction?: TransactionTables) {
  const mode = transaction ? { ONCELY_TRANSACTION: '1', ONCELY_POSTGRES_URL: POSTGRES_URL, ONCELY_STORE_TABLE: transaction.storeTable, ONCELY_EFFECTS_TABLE: transaction.effectsTable } : {};
  const child = spawn(process.execPath, ['--import', 'tsx', WORKER], {
    env: { ...process.env, ...mode, ONCELY_QUEUE: queue, ONCELY_STORE_PREFIX: storePrefix, ONCELY_EFFECTS: effects, ONCELY_LEASE_MS: String(LEASE_MS), ONCELY_HANG: hang ? '1' : '0' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let output = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (chunk: string) => (output += chunk));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return {
    child,
    printed: (text: string) => until(`"${text}" from worker ${child.pid}`, () => output.includes(`${text}\n`)),
    stop: async () => {
      child.kill('SIGTERM');
      await exited;
    },
  };
}

const lines = (file: string) => {
  try {
    return readFileSync(file, 'utf8').trim().split('\n').filter(Boolean).map((line) => line.split(' '));
  } catch {
    return [];
  }
};

describe('oncely/bullmq across worker processes (RedisStore)', { skip }, () => {
  it('a worker killed after the effect, before completing: another runs it once more after the lease, same downstreamKey; later repeats run nothing', async () => {
    const queue = new Queue(`oncely-bullmq-${randomUUID()}`, { connection });
    const effects = join(directory, 'crash.log');
    const prefix = `oncely-bullmq-${randomUUID()}`;
    const doomed = startWorker(queue.name, prefix, effects, true);
    let survivor: ReturnType<typeof startWorker> | undefined;
    try {
      await doomed.printed('ready');
      await queue.add('welcome', { order: 'welcome-42' }, { jobId: 'welcome-42' });
      await doomed.printed('effect');
      doomed.child.kill('SIGKILL');
      survivor = startWorker(queue.name, prefix, effects);
      await until('the re-run to complete', async () => (await queue.getJobState('welcome-42')) === 'completed');
      const runs = lines(effects);
      assert.equal(runs.length, 2, 'lease mode: the effect repeats exactly once after a crash');
      assert.deepEqual(runs.map(([order, , pid]) => [order, Number(pid)]), [['welcome-42', doomed.child.pid], ['welcome-42', survivor.child.pid]]);
      assert.equal(runs[0]![1], runs[1]![1], 'the same downstreamKey both times');
      assert.deepEqual((await queue.getJob('welcome-42'))!.returnvalue, { by: survivor.child.pid });

      await queue.remove('welcome-42');
      await queue.add('welcome', { order: 'welcome-42' }, { jobId: 'welcome-42' });
      await until('the repeat to complete', async () => (await queue.getJobState('welcome-42')) === 'completed');
      assert.equal(lines(effects).length, 2);
      assert.deepEqual((await queue.getJob('welcome-42'))!.returnvalue, { by: survivor.child.pid }, 'the first completed value');
    } finally {
      doomed.child.kill('SIGKILL');
      await survivor?.stop();
      await queue.obliterate({ force: true });
      await queue.close();
    }
  });

  it('two worker processes competing for interleaved duplicates: each order runs once', async () => {
    const queue = new Queue(`oncely-bullmq-${randomUUID()}`, { connection });
    const effects = join(directory, 'compete.log');
    const prefix = `oncely-bullmq-${randomUUID()}`;
    const workers = [startWorker(queue.name, prefix, effects), startWorker(queue.name, prefix, effects)];
    try {
      await Promise.all(workers.map((worker) => worker.printed('ready')));
      const orders = Array.from({ length: 10 }, (_, i) => `order-${i}`);
      await queue.addBulk(['a', 'b', 'c'].flatMap((copy) => orders.map((order) => ({ name: 'pay', data: { order }, opts: { jobId: `${order}.${copy}` } }))));
      await until('30 completed jobs', async () => (await queue.getJobCounts('completed')).completed === 30);
      const runs = lines(effects);
      assert.deepEqual(runs.map(([order]) => order).sort(), [...orders].sort());
      const values = await Promise.all(orders.map(async (order) => new Set(await Promise.all(['a', 'b', 'c'].map(async (copy) => JSON.stringify((await queue.getJob(`${order}.${copy}`))!.returnvalue))))));
      assert.ok(values.every((set) => set.size === 1), 'every copy completed with its order’s one value');
    } finally {
      await Promise.all(workers.map((worker) => worker.stop()));
      await queue.obliterate({ force: true });
      await queue.close();
    }
  });
});

const postgresSkip = skip ?? (await skipUnlessReachable('PostgreSQL', POSTGRES_URL));

describe('oncely/bullmq across worker processes, transaction mode (PostgresStore)', { skip: postgresSkip }, () => {
  it('a worker killed after its INSERT, before the COMMIT: the row rolls back, another worker inserts it once, same downstreamKey; a repeat inserts nothing', async () => {
    const run = randomUUID().slice(0, 8);
    const tables: TransactionTables = { storeTable: `oncely_bullmq_tx_${run}`, effectsTable: `bullmq_tx_effects_${run}` };
    const pool = new pg.Pool({ connectionString: POSTGRES_URL, max: 3 });
    const store = new PostgresStore({ pool, table: tables.storeTable });
    const queue = new Queue(`oncely-bullmq-${randomUUID()}`, { connection });
    const effects = join(directory, 'transaction-crash.log');
    const rows = async () => (await pool.query<{ downstream_key: string; pid: number }>(`SELECT downstream_key, pid FROM "${tables.effectsTable}" WHERE order_id = 'welcome-43'`)).rows;
    let doomed: ReturnType<typeof startWorker> | undefined;
    let survivor: ReturnType<typeof startWorker> | undefined;
    try {
      await store.migrate();
      // No unique constraint: an effect applied twice would show as two rows.
      await pool.query(`CREATE TABLE "${tables.effectsTable}" (order_id text NOT NULL, downstream_key text NOT NULL, pid integer NOT NULL)`);
      doomed = startWorker(queue.name, '', effects, true, tables);
      await doomed.printed('ready');
      await queue.add('welcome', { order: 'welcome-43' }, { jobId: 'welcome-43' });
      await doomed.printed('effect');
      assert.deepEqual(await rows(), [], 'the INSERT is not committed while the worker hangs');
      doomed.child.kill('SIGKILL');
      survivor = startWorker(queue.name, '', effects, false, tables);
      await until('the re-run to complete', async () => (await queue.getJobState('welcome-43')) === 'completed');

      const runs = lines(effects);
      assert.deepEqual(runs.map(([order, , pid]) => [order, Number(pid)]), [['welcome-43', doomed.child.pid], ['welcome-43', survivor.child.pid]], 'the handler ran in the killed worker, then once in the other');
      assert.equal(runs[0]![1], runs[1]![1], 'the same downstreamKey both times');
      assert.deepEqual(await rows(), [{ downstream_key: runs[0]![1], pid: survivor.child.pid }], "one row: the killed worker's rolled back, the other's committed");
      assert.deepEqual((await queue.getJob('welcome-43'))!.returnvalue, { by: survivor.child.pid }, "BullMQ completed the job with the survivor's value");

      // The same job id again (BullMQ takes it once the first job is gone): completed as a duplicate, no second row.
      await queue.remove('welcome-43');
      await queue.add('welcome', { order: 'welcome-43' }, { jobId: 'welcome-43' });
      await until('the repeat to complete', async () => (await queue.getJobState('welcome-43')) === 'completed');
      assert.deepEqual((await queue.getJob('welcome-43'))!.returnvalue, { by: survivor.child.pid }, 'the first completed value');
      assert.equal(lines(effects).length, 2, 'the repeat did not run the handler');
      assert.equal((await rows()).length, 1);
    } finally {
      doomed?.child.kill('SIGKILL');
      await survivor?.stop();
      await queue.obliterate({ force: true });
      await queue.close();
      await store.close();
      await pool.query(`DROP TABLE IF EXISTS "${tables.storeTable}", "${tables.storeTable}_migrations", "${tables.effectsTable}"`);
      await pool.end();
    }
  });
});
