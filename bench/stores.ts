/**
 * Store throughput: claim+complete of new ids, and claim of completed ids (replay), at
 * concurrency 1 and 64, for every store whose server answers. Each row also shows the same
 * store's raw single-row write (INSERT / SET) and raw read by key (SELECT / GET) measured in the
 * same run, because these machines are shared and noisy: compare ratios, not absolute numbers.
 * A new id costs two writes (claim, complete), so 0.5 of a raw write is the floor to aim at.
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
  rawWrite: number;
  fresh: number;
  rawRead: number;
  replay: number;
}

/** The store's own client doing the least a store must do: write one row, read one row by key. */
interface Raw {
  write: () => Promise<unknown>;
  read: () => Promise<unknown>;
}

async function measure(name: string, store: IdempotencyStore, raw: Raw): Promise<Row[]> {
  const replayIds = await completedIds(store, 256);
  const rows: Row[] = [];
  for (const concurrency of [1, 64]) {
    const rawWrite = await rate(concurrency, raw.write);
    const rawRead = await rate(concurrency, raw.read);
    const fresh = await rate(concurrency, () => claimComplete(store));
    const replay = await rate(concurrency, async (i) => {
      const claim = await store.claim({ id: replayIds[i % replayIds.length]!, fingerprint: FP, leaseMs: 30_000 });
      if (claim.status !== 'completed') throw new Error(`expected completed, got ${claim.status}`);
    });
    rows.push({ store: name, concurrency, rawWrite, fresh, rawRead, replay });
    console.error(`${name} c=${concurrency}: done`);
  }
  return rows;
}

const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
const rows: Row[] = [];

{
  // The store opens the file itself (WAL, synchronous NORMAL), as users of `path` get it; the
  // raw operations run on a second connection to the same file.
  const path = join(mkdtempSync(join(tmpdir(), 'oncely-bench-')), 'bench.db');
  const store = new SqliteStore({ path });
  const raw = new Database(path);
  raw.exec("CREATE TABLE raw_rows (id TEXT PRIMARY KEY, value BLOB); INSERT INTO raw_rows VALUES ('known', x'00')");
  const insert = raw.prepare('INSERT INTO raw_rows VALUES (?, ?)');
  const select = raw.prepare('SELECT value FROM raw_rows WHERE id = ?');
  rows.push(...(await measure('sqlite (file, WAL)', store, { write: async () => insert.run(randomId(), OUTCOME), read: async () => select.get('known') })));
  await store.close();
  raw.close();
}
{
  const pool = new pg.Pool({ connectionString: POSTGRES_URL, max: 16 });
  try {
    await pool.query('SELECT 1');
    const table = `oncely_bench_${process.pid}`;
    const store = new PostgresStore({ pool, table });
    await store.migrate();
    await pool.query(`CREATE TABLE ${table}_raw (id text PRIMARY KEY, value bytea); INSERT INTO ${table}_raw VALUES ('known', '\\x00')`);
    rows.push(...(await measure('postgres (pool 16)', store, {
      write: () => pool.query({ name: 'raw_write', text: `INSERT INTO ${table}_raw VALUES ($1, $2)`, values: [randomId(), OUTCOME] }),
      read: () => pool.query({ name: 'raw_read', text: `SELECT value FROM ${table}_raw WHERE id = $1`, values: ['known'] }),
    })));
    await pool.query(`DROP TABLE IF EXISTS ${table}, ${table}_migrations, ${table}_raw`);
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
    const rawKey = `oncely-bench-raw-${process.pid}`;
    rows.push(...(await measure('redis (ioredis)', store, { write: () => client.set(`${rawKey}:${randomId()}`, OUTCOME, 'PX', 60_000), read: () => client.get(rawKey) })));
  } catch (error) {
    console.error(`redis skipped: ${(error as Error).message}`);
  }
  client.disconnect();
}

console.log(`\n### Stores (${seconds} s per cell, ops/s; ratios to the same store's raw write / raw read in this run)\n`);
console.log('| store | concurrency | raw write | claim+complete (new id) | ÷ raw write | raw read | claim (replay) | ÷ raw read |');
console.log('|---|---:|---:|---:|---:|---:|---:|---:|');
for (const r of rows) {
  console.log(`| ${r.store} | ${r.concurrency} | ${fmt(r.rawWrite)} | ${fmt(r.fresh)} | ${(r.fresh / r.rawWrite).toFixed(2)} | ${fmt(r.rawRead)} | ${fmt(r.replay)} | ${(r.replay / r.rawRead).toFixed(2)} |`);
}

console.log('\n### Memory store as records accumulate (ops/s, concurrency 1)\n');
console.log('Replay of a hot set (the same 256 ids) isolates the store\'s own cost; replay spread over every');
console.log('record held adds CPU cache misses, which any hash table of that size pays.\n');
console.log('| records held | claim+complete (new id) | claim (replay, hot set) | claim (replay, spread) |');
console.log('|---:|---:|---:|---:|');
const memory: Record<number, { fresh: number; hot: number; spread: number }> = {};
for (const held of [1_000, 1_000_000]) {
  const store = new MemoryStore({ maxRecords: 2_000_000, sweepIntervalMs: 0 });
  const ids = await completedIds(store, held);
  const replay = (pick: (i: number) => string) => rate(1, (i) => store.claim({ id: pick(i), fingerprint: FP, leaseMs: 30_000 }));
  const hot = await replay((i) => ids[i % 256]!);
  const spread = await replay((i) => ids[(i * 7919) % ids.length]!);
  const fresh = await rate(1, () => claimComplete(store));
  memory[held] = { fresh, hot, spread };
  console.log(`| ${fmt(held)} | ${fmt(fresh)} | ${fmt(hot)} | ${fmt(spread)} |`);
  await store.close();
}
const ratio = (key: 'fresh' | 'hot' | 'spread') => (memory[1_000_000]![key] / memory[1_000]![key]).toFixed(2);
console.log(`\n1e6 ÷ 1e3 records: new id ${ratio('fresh')}, replay hot set ${ratio('hot')}, replay spread ${ratio('spread')}`);
