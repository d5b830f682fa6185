/**
 * Store throughput: claim+complete of new ids, and claim of completed ids (replay), at
 * concurrency 1 and 64, for every store whose server answers. Each row also shows the store's
 * raw round trip (SQLite `SELECT 1`, PostgreSQL `SELECT 1`, Redis `PING`) measured in the same
 * run, because these machines are shared and noisy: compare ratios, not absolute numbers.
 * The memory store is measured with 1e3 and 1e6 records already held.
 *
 * Run: npm run bench [-- --seconds 2]
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import Database from 'better-sqlite3';
import { Redis } from 'ioredis';
import pg from 'pg';
import { MemoryStore, sha256Hex, type IdempotencyStore } from '../src/index.js';
import { PostgresStore } from '../src/stores/postgres/index.js';
import { RedisStore } from '../src/stores/redis/index.js';
import { SqliteStore } from '../src/stores/sqlite/index.js';
import { randomId } from '../src/testing/index.js';
import { POSTGRES_URL, REDIS_URL } from '../test/support/services.js';

const { values } = parseArgs({ options: { seconds: { type: 'string', default: '2' } } });
const seconds = Number(values.seconds);
const FP = sha256Hex('bench');
const OUTCOME = Buffer.from(JSON.stringify({ ok: true, value: { orderId: 'ord_123', amount: 4999 } }));
const DAY = 86_400_000;

/** Runs `op` from `concurrency` loops for `seconds`; returns operations per second. */
async function rate(concurrency: number, op: (i: number) => Promise<unknown>): Promise<number> {
  const end = performance.now() + seconds * 1000;
  let done = 0;
  const loop = async () => {
    while (performance.now() < end) await op(done++);
  };
  const start = performance.now();
  await Promise.all(Array.from({ length: concurrency }, loop));
  return done / ((performance.now() - start) / 1000);
}

async function claimComplete(store: IdempotencyStore, id = randomId()): Promise<void> {
  const claim = await store.claim({ id, fingerprint: FP, leaseMs: 30_000 });
  if (claim.status !== 'acquired') throw new Error(`expected acquired, got ${claim.status}`);
  if ((await store.complete(id, claim.token, OUTCOME, DAY)) !== 'ok') throw new Error('complete lost');
}

async function completedIds(store: IdempotencyStore, count: number): Promise<string[]> {
  const ids = Array.from({ length: count }, randomId);
  for (const id of ids) await claimComplete(store, id);
  return ids;
}

interface Row {
  store: string;
  concurrency: number;
  baseline: number;
  fresh: number;
  replay: number;
}

async function measure(name: string, store: IdempotencyStore, baseline: () => Promise<unknown>): Promise<Row[]> {
  const replayIds = await completedIds(store, 256);
  const rows: Row[] = [];
  for (const concurrency of [1, 64]) {
    const base = await rate(concurrency, baseline);
    const fresh = await rate(concurrency, () => claimComplete(store));
    const replay = await rate(concurrency, async (i) => {
      const claim = await store.claim({ id: replayIds[i % replayIds.length]!, fingerprint: FP, leaseMs: 30_000 });
      if (claim.status !== 'completed') throw new Error(`expected completed, got ${claim.status}`);
    });
    rows.push({ store: name, concurrency, baseline: base, fresh, replay });
    console.error(`${name} c=${concurrency}: done`);
  }
  return rows;
}

const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
const rows: Row[] = [];

{
  const database = new Database(join(mkdtempSync(join(tmpdir(), 'oncely-bench-')), 'bench.db'));
  const store = new SqliteStore({ database });
  const select = database.prepare('SELECT 1');
  rows.push(...(await measure('sqlite (file, WAL)', store, async () => select.get())));
  await store.close();
  database.close();
}
{
  const pool = new pg.Pool({ connectionString: POSTGRES_URL, max: 16 });
  try {
    await pool.query('SELECT 1');
    const table = `oncely_bench_${process.pid}`;
    const store = new PostgresStore({ pool, table });
    await store.migrate();
    rows.push(...(await measure('postgres (pool 16)', store, () => pool.query('SELECT 1'))));
    await pool.query(`DROP TABLE IF EXISTS ${table}, ${table}_migrations`);
  } catch (error) {
    console.error(`postgres skipped: ${(error as Error).message}`);
  }
  await pool.end();
}
{
  const client = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await client.connect();
    const store = new RedisStore({ client, prefix: `oncely-bench-${process.pid}` });
    rows.push(...(await measure('redis (ioredis)', store, () => client.ping())));
  } catch (error) {
    console.error(`redis skipped: ${(error as Error).message}`);
  }
  client.disconnect();
}

console.log(`\n### Stores (${seconds} s per cell, ops/s; ratio = ops/s ÷ raw round trips/s of the same store in this run)\n`);
console.log('| store | concurrency | raw round trip | claim+complete (new id) | ratio | claim (replay) | ratio |');
console.log('|---|---:|---:|---:|---:|---:|---:|');
for (const r of rows) {
  console.log(`| ${r.store} | ${r.concurrency} | ${fmt(r.baseline)} | ${fmt(r.fresh)} | ${(r.fresh / r.baseline).toFixed(2)} | ${fmt(r.replay)} | ${(r.replay / r.baseline).toFixed(2)} |`);
}

console.log('\n### Memory store as records accumulate (ops/s, concurrency 1)\n');
console.log('| records held | claim+complete (new id) | claim (replay) |');
console.log('|---:|---:|---:|');
const memory: Record<number, { fresh: number; replay: number }> = {};
for (const held of [1_000, 1_000_000]) {
  const store = new MemoryStore({ maxRecords: 2_000_000, sweepIntervalMs: 0 });
  const ids = await completedIds(store, held);
  const fresh = await rate(1, () => claimComplete(store));
  const replay = await rate(1, (i) => store.claim({ id: ids[(i * 7919) % ids.length]!, fingerprint: FP, leaseMs: 30_000 }));
  memory[held] = { fresh, replay };
  console.log(`| ${fmt(held)} | ${fmt(fresh)} | ${fmt(replay)} |`);
  await store.close();
}
console.log(`\n1e6 ÷ 1e3 records: new id ${(memory[1_000_000]!.fresh / memory[1_000]!.fresh).toFixed(2)}, replay ${(memory[1_000_000]!.replay / memory[1_000]!.replay).toFixed(2)}`);
