/**
 * `idempotent()` across real processes sharing one store (SQLite file, PostgreSQL, Redis):
 * concurrent duplicates from 4 processes run the work once (guarantees 1 and 2), and a
 * process SIGKILLed mid-work blocks retries until its lease lapses, then the work runs again
 * (guarantee 3). Executions are counted from a file each execution appends to.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import pg from 'pg';
import { InProgressError } from '../src/core/errors.js';
import { idempotent } from '../src/core/idempotent.js';
import type { IdempotencyStore } from '../src/core/types.js';
import { PostgresStore } from '../src/stores/postgres/index.js';
import { RedisStore } from '../src/stores/redis/index.js';
import { SqliteStore } from '../src/stores/sqlite/index.js';
import { POSTGRES_URL, REDIS_URL, skipUnlessReachable } from './support/services.js';

const WORKER = fileURLToPath(new URL('./support/idempotent-worker.ts', import.meta.url));
const directory = mkdtempSync(join(tmpdir(), 'oncely-xproc-'));
const table = `oncely_xproc_${process.pid}`;
const prefix = `oncely-xproc-${randomUUID()}`;
const pool = new pg.Pool({ connectionString: POSTGRES_URL, max: 4 });
const redis = new Redis(REDIS_URL, { lazyConnect: true });
const postgresSkip = await skipUnlessReachable('PostgreSQL', POSTGRES_URL);
const redisSkip = await skipUnlessReachable('Redis', REDIS_URL);
if (!postgresSkip) await new PostgresStore({ pool, table }).migrate();

after(async () => {
  if (!postgresSkip) await pool.query(`DROP TABLE IF EXISTS "${table}", "${table}_migrations"`);
  await pool.end();
  redis.disconnect();
  rmSync(directory, { recursive: true, force: true });
});

interface Target {
  name: string;
  skip: string | false;
  env: Record<string, string>;
  store: () => IdempotencyStore;
}

const targets: Target[] = [
  { name: 'sqlite', skip: false, env: { ONCELY_WORKER_SQLITE: join(directory, 'records.db') }, store: () => new SqliteStore({ path: join(directory, 'records.db') }) },
  { name: 'postgres', skip: postgresSkip ?? false, env: { ONCELY_WORKER_POSTGRES: POSTGRES_URL, ONCELY_WORKER_TABLE: table }, store: () => new PostgresStore({ pool, table }) },
  { name: 'redis', skip: redisSkip ?? false, env: { ONCELY_WORKER_REDIS: REDIS_URL, ONCELY_WORKER_PREFIX: prefix }, store: () => new RedisStore({ client: redis, prefix }) },
];

function startWorker(target: Target, mode: 'race' | 'hang', key: string, effects: string, leaseMs: number) {
  const child = spawn(process.execPath, ['--import', 'tsx', WORKER, mode, key], {
    env: { ...process.env, ...target.env, ONCELY_WORKER_STORE: target.name, ONCELY_WORKER_EFFECTS: effects, ONCELY_WORKER_LEASE_MS: String(leaseMs) },
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  let output = '';
  const waiters: { text: string; resolve: () => void }[] = [];
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (chunk: string) => {
    output += chunk;
    for (const waiter of waiters) if (output.includes(waiter.text)) waiter.resolve();
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  return {
    child,
    printed: (text: string) => new Promise<void>((resolve) => (output.includes(text) ? resolve() : waiters.push({ text, resolve }))),
    go: () => child.stdin.write('go\n'),
    lastLine: async () => {
      assert.equal(await exited, 0, `worker failed: ${output}`);
      return output.trim().split('\n').at(-1)!;
    },
    exited,
  };
}

const executions = (effects: string) => readFileSync(effects, 'utf8').split('\n').filter(Boolean).length;

for (const target of targets) {
  describe(`idempotent() across processes: ${target.name}`, { skip: target.skip }, () => {
    it('runs once for 4 processes × 10 concurrent duplicates, and all 40 get the same result', async () => {
      const effects = join(directory, `effects-${randomUUID()}`);
      writeFileSync(effects, '');
      const key = `race-${randomUUID()}`;
      const workers = Array.from({ length: 4 }, () => startWorker(target, 'race', key, effects, 30_000));
      await Promise.all(workers.map((worker) => worker.printed('ready\n')));
      for (const worker of workers) worker.go();
      const results = (await Promise.all(workers.map(async (worker) => JSON.parse(await worker.lastLine()) as { orderId: string; at: string; isDate: boolean }[]))).flat();
      assert.equal(executions(effects), 1);
      assert.equal(results.length, 40);
      assert.equal(new Set(results.map((result) => `${result.orderId}@${result.at}`)).size, 1);
      assert.ok(results.every((result) => result.isDate), 'the Date came back as a Date in every process');
    });

    it('after a SIGKILL mid-work: retries get InProgressError until the lease lapses, then the work runs again', async () => {
      const effects = join(directory, `effects-${randomUUID()}`);
      writeFileSync(effects, '');
      const key = `crash-${randomUUID()}`;
      const leaseMs = 1_500;
      const worker = startWorker(target, 'hang', key, effects, leaseMs);
      await worker.printed('ready\n');
      worker.go();
      await worker.printed('working\n');
      const killedAt = Date.now();
      worker.child.kill('SIGKILL');
      await worker.exited;

      const store = target.store();
      const retry = idempotent(async (orderKey: string) => {
        writeFileSync(effects, `${process.pid} ${orderKey}\n`, { flag: 'a' });
        return 'ran again';
      }, { store, namespace: 'orders', key: (orderKey) => orderKey, leaseMs });
      await assert.rejects(retry(key), InProgressError, 'the dead holder still holds its lease');
      assert.equal(executions(effects), 1);
      await sleep(Math.max(0, killedAt + leaseMs + 300 - Date.now()));
      assert.equal(await retry(key), 'ran again');
      assert.equal(executions(effects), 2, 'at-least-once on crash: the work ran again after the lease lapsed');
      assert.equal(await retry(key), 'ran again', 'and is now stored');
      assert.equal(executions(effects), 2);
      await store.close();
    });
  });
}
