/**
 * What is particular to SQLite: file settings, who closes what, the table option, batches,
 * lock errors, and claims raced by real processes on one file.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import { InvalidOptionError, StoreUnavailableError } from '../../core/errors.js';
import type { Claim } from '../../core/types.js';
import { randomId } from '../../testing/index.js';
import { SqliteStore } from './index.js';

const dir = mkdtempSync(join(tmpdir(), 'oncely-sqlite-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let files = 0;
const freshFile = () => join(dir, `store-${files++}.db`);

const FP = 'a'.repeat(64);
const MINUTE = 60_000;

function tokenOf(claim: Claim): string {
  assert.equal(claim.status, 'acquired');
  return (claim as Extract<Claim, { status: 'acquired' }>).token;
}

describe('SqliteStore settings', () => {
  it('opens a file in WAL mode with synchronous NORMAL and the busy timeout', async () => {
    const path = freshFile();
    const store = new SqliteStore({ path, busyTimeoutMs: 1234 });
    const probe = new Database(path);
    assert.equal(probe.pragma('journal_mode', { simple: true }), 'wal', 'WAL persists in the file');
    probe.close();
    // Per-connection settings: read them through the store's own connection.
    const db = (store as unknown as { db: Database.Database }).db;
    assert.equal(db.pragma('synchronous', { simple: true }), 1);
    assert.equal(db.pragma('busy_timeout', { simple: true }), 1234);
    await store.close();
  });

  it('leaves the journal mode of your database alone, and its busy timeout unless asked', async () => {
    const database = new Database(freshFile(), { timeout: 777 });
    const untouched = new SqliteStore({ database });
    assert.equal(database.pragma('journal_mode', { simple: true }), 'delete');
    assert.equal(database.pragma('busy_timeout', { simple: true }), 777);
    const tuned = new SqliteStore({ database, busyTimeoutMs: 2500 });
    assert.equal(database.pragma('busy_timeout', { simple: true }), 2500);
    await untouched.close();
    await tuned.close();
    database.close();
  });

  it('closes the database it opened, and only that one', async () => {
    const own = new SqliteStore({ path: freshFile() });
    await own.close();
    assert.equal((own as unknown as { db: Database.Database }).db.open, false);
    await assert.rejects(own.get(randomId()), StoreUnavailableError, 'a closed store fails closed');

    const database = new Database(':memory:');
    const borrowed = new SqliteStore({ database });
    tokenOf(await borrowed.claim({ id: randomId(), fingerprint: FP, leaseMs: MINUTE }));
    await borrowed.close();
    assert.equal(database.open, true);
    database.close();
    await assert.rejects(borrowed.claim({ id: randomId(), fingerprint: FP, leaseMs: MINUTE }), StoreUnavailableError);
  });

  it('keeps records in the table it is given, created with its expiry index', async () => {
    const database = new Database(':memory:');
    const orders = new SqliteStore({ database, table: 'orders_idempotency' });
    const jobs = new SqliteStore({ database });
    const id = randomId();
    tokenOf(await orders.claim({ id, fingerprint: FP, leaseMs: MINUTE }));
    assert.equal(await jobs.get(id), undefined, 'another table, another namespace of records');
    tokenOf(await jobs.claim({ id, fingerprint: FP, leaseMs: MINUTE }));
    const names = database.prepare("SELECT name FROM sqlite_master WHERE tbl_name = 'orders_idempotency' AND name NOT LIKE 'sqlite_%'").pluck().all();
    assert.deepEqual(names.sort(), ['orders_idempotency', 'orders_idempotency_expires_at']);
    assert.equal(database.prepare('SELECT count(*) FROM orders_idempotency').pluck().get(), 1);
    database.close();
  });

  it('refuses table names that are not plain identifiers, and ambiguous sources', () => {
    const database = new Database(':memory:');
    for (const table of ['', 'x"; DROP TABLE y; --', 'has space', '1st', 'sqlite_records', 'a'.repeat(64)]) {
      assert.throws(() => new SqliteStore({ database, table }), InvalidOptionError, table);
    }
    assert.throws(() => new SqliteStore({ database, busyTimeoutMs: 0 }), InvalidOptionError);
    assert.throws(() => new SqliteStore({ database, path: ':memory:' } as never), InvalidOptionError);
    assert.throws(() => new SqliteStore({} as never), InvalidOptionError);
    database.close();
  });

  it('reports a file it cannot open or read as StoreUnavailableError', () => {
    const garbage = freshFile();
    writeFileSync(garbage, randomBytes(8192));
    for (const [path, code] of [[dir, 'SQLITE_CANTOPEN'], [garbage, 'SQLITE_NOTADB']]) {
      assert.throws(() => new SqliteStore({ path: path! }), (error: unknown) =>
        error instanceof StoreUnavailableError && (error.cause as { code?: string }).code === code);
    }
  });
});

describe('SqliteStore records', () => {
  it('lets a lapsed lease be taken over, and the stale holder finish only until then', async () => {
    const store = new SqliteStore({ path: ':memory:' });
    const id = randomId();
    const first = tokenOf(await store.claim({ id, fingerprint: FP, leaseMs: 100 }));
    await sleep(150);
    // Lapsed but not taken over: the token is still current (fenced by token, not by time).
    assert.equal(await store.extend(id, first, 100), 'ok');
    await sleep(150);
    assert.equal(await store.get(id), undefined, 'a lapsed claim is not live');
    const second = tokenOf(await store.claim({ id, fingerprint: FP, leaseMs: 100 }));
    assert.equal(await store.complete(id, first, new Uint8Array([1]), MINUTE), 'lost');
    assert.equal(await store.complete(id, second, new Uint8Array([2]), MINUTE), 'ok');
    await store.close();
  });

  it('stores its own copy of the outcome and returns bytes, also when empty', async () => {
    const store = new SqliteStore({ path: ':memory:' });
    const [full, empty] = [randomId(), randomId()];
    const outcome = new Uint8Array(randomBytes(4096));
    const expected = Buffer.from(outcome);
    assert.equal(await store.complete(full, tokenOf(await store.claim({ id: full, fingerprint: FP, leaseMs: MINUTE })), outcome, MINUTE), 'ok');
    outcome.fill(0); // the caller reuses its buffer
    assert.equal(await store.complete(empty, tokenOf(await store.claim({ id: empty, fingerprint: FP, leaseMs: MINUTE })), new Uint8Array(), MINUTE), 'ok');
    const stored = await store.get(full);
    assert.ok(stored?.state === 'completed' && stored.outcome instanceof Uint8Array);
    assert.ok(Buffer.from(stored.outcome).equals(expected));
    const blank = await store.get(empty);
    assert.ok(blank?.state === 'completed');
    assert.equal(blank.outcome.byteLength, 0);
    assert.equal('meta' in blank, false, 'no meta given, none invented');
    await store.close();
  });

  it('reads epoch ms as numbers even on a connection that defaults to BigInt', async () => {
    const database = new Database(':memory:').defaultSafeIntegers(true);
    const store = new SqliteStore({ database });
    const id = randomId();
    const claim = await store.claim({ id, fingerprint: FP, leaseMs: MINUTE });
    assert.equal(typeof (claim.status === 'acquired' && claim.expiresAt), 'number');
    const again = await store.claim({ id, fingerprint: FP, leaseMs: MINUTE });
    assert.ok(again.status === 'in_progress');
    assert.equal(typeof again.record.createdAt, 'number');
    database.close();
  });

  it('purges lapsed records, in progress and completed, in batches of at most the limit, keeping live ones', async () => {
    const store = new SqliteStore({ path: ':memory:' });
    const lapsed = Array.from({ length: 7 }, randomId);
    for (const [index, id] of lapsed.entries()) {
      const token = tokenOf(await store.claim({ id, fingerprint: FP, leaseMs: index % 2 === 0 ? 50 : MINUTE }));
      if (index % 2 === 1) await store.complete(id, token, new Uint8Array([index]), 50); // completed, short retention
    }
    const live = randomId();
    const liveToken = tokenOf(await store.claim({ id: live, fingerprint: FP, leaseMs: MINUTE }));
    await store.complete(live, liveToken, new Uint8Array([9]), MINUTE);
    await sleep(100);
    assert.deepEqual([await store.purgeExpired({ limit: 3 }), await store.purgeExpired({ limit: 3 }), await store.purgeExpired({ limit: 3 })], [3, 3, 1]);
    assert.equal(await store.purgeExpired(), 0);
    assert.equal((await store.get(live))?.state, 'completed');
    await assert.rejects(store.purgeExpired({ limit: 0 }), InvalidOptionError);
    await store.close();
  });

  it('rejects instead of throwing synchronously', async () => {
    const store = new SqliteStore({ path: ':memory:' });
    let pending: Promise<unknown> | undefined;
    assert.doesNotThrow(() => (pending = store.claim({ id: 'not a digest', fingerprint: FP, leaseMs: MINUTE })));
    await assert.rejects(pending!, InvalidOptionError);
    await store.close();
    assert.doesNotThrow(() => (pending = store.delete(randomId())));
    await assert.rejects(pending!, StoreUnavailableError);
  });
});

describe('SqliteStore under lock contention', () => {
  it('fails writes with StoreUnavailableError after the busy timeout while readers still answer (WAL)', async () => {
    const path = freshFile();
    const store = new SqliteStore({ path, busyTimeoutMs: 200 });
    const held = randomId();
    tokenOf(await store.claim({ id: held, fingerprint: FP, leaseMs: MINUTE }));
    const locker = new Database(path);
    locker.exec('BEGIN EXCLUSIVE');
    try {
      const started = performance.now();
      await assert.rejects(store.claim({ id: randomId(), fingerprint: FP, leaseMs: MINUTE }), (error: unknown) =>
        error instanceof StoreUnavailableError && (error.cause as { code?: string }).code === 'SQLITE_BUSY');
      assert.ok(performance.now() - started >= 150, 'waited for the lock before giving up');
      assert.equal((await store.get(held))?.state, 'in_progress', 'WAL readers are not blocked by a writer');
    } finally {
      locker.exec('ROLLBACK');
      locker.close();
    }
    tokenOf(await store.claim({ id: randomId(), fingerprint: FP, leaseMs: MINUTE }));
    await store.close();
  });
});

interface Child {
  messages: AsyncIterator<unknown>;
  go(): void;
  kill(): void;
  exited: Promise<number | null>;
}

const CHILD_PRELUDE = `
const { SqliteStore } = await import(process.env.ONCELY_STORE_URL);
const { default: Database } = await import(process.env.ONCELY_DRIVER_URL);
const args = JSON.parse(process.env.ONCELY_CHILD_ARGS);
const send = (message) => new Promise((resolve) => process.send(message, resolve));
const go = new Promise((resolve) => process.once('message', resolve));
await send('ready');
await go;
`;

/**
 * A child node process running `source` (an ES module body) with `--import tsx`. It gets
 * `SqliteStore`, `Database` (better-sqlite3), `args` (JSON from the parent)
 * and `send`, and talks to the parent over IPC: `ready`, then waits for `go`.
 */
function startChild(source: string, args: unknown): Child {
  const execArgv = process.execArgv.filter((arg) => !arg.startsWith('--test'));
  const child = spawn(process.execPath, [...execArgv, '--input-type=module', '-e', `${CHILD_PRELUDE}${source}\nprocess.disconnect();`], {
    env: {
      ...process.env,
      ONCELY_STORE_URL: new URL('./index.ts', import.meta.url).href,
      ONCELY_DRIVER_URL: pathToFileURL(createRequire(import.meta.url).resolve('better-sqlite3')).href,
      ONCELY_CHILD_ARGS: JSON.stringify(args),
    },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const queue: unknown[] = [];
  let wake: (() => void) | undefined;
  child.on('message', (message) => {
    queue.push(message);
    wake?.();
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  void exited.then(() => wake?.());
  const messages: AsyncIterator<unknown> = {
    async next() {
      while (queue.length === 0) {
        if (child.exitCode !== null || child.signalCode !== null) throw new Error(`child exited (${child.exitCode ?? child.signalCode}) before answering`);
        await new Promise<void>((resolve) => (wake = resolve));
      }
      return { value: queue.shift(), done: false };
    },
  };
  return { messages, go: () => child.send('go'), kill: () => child.kill('SIGKILL'), exited };
}

async function next<T>(child: Child): Promise<T> {
  return (await child.messages.next()).value as T;
}

const RACE_SOURCE = `
// Every process opens the fresh file at the same moment: setup races too.
const store = args.journal === 'wal' ? new SqliteStore({ path: args.path }) : new SqliteStore({ database: new Database(args.path) });
const claim = (id) => store.claim({ id, fingerprint: args.fingerprint, leaseMs: 60000 });
const status = (id) => claim(id).then((c) => c.status);
const concurrent = await Promise.all(Array.from({ length: args.concurrent }, () => status(args.concurrentId)));
const sequential = [];
for (let i = 0; i < args.sequential; i++) sequential.push(await status(args.sequentialId));
const distinct = [];
for (const id of args.distinctIds) {
  const c = await claim(id);
  distinct.push(c.status);
  if (c.status === 'acquired' && (await store.complete(id, c.token, new Uint8Array([1]), 60000)) !== 'ok') throw new Error('lost');
}
await send('claimed');
await new Promise((resolve) => process.once('message', resolve));
const replayed = [];
for (const id of args.distinctIds) replayed.push(await status(id));
await store.close();
await send({ concurrent, sequential, distinct, replayed });
`;

describe('SqliteStore shared by processes', () => {
  for (const journal of ['wal', 'delete'] as const) {
    const how = journal === 'wal' ? 'a WAL file the store opens' : 'your own connections in rollback-journal mode';
    it(`gives exactly one acquired claim per id across 4 processes on ${how}`, { timeout: 60_000 }, async () => {
      const processes = 4;
      const args = {
        journal,
        path: freshFile(),
        fingerprint: FP,
        concurrent: 50,
        concurrentId: randomId(),
        sequential: 25,
        sequentialId: randomId(),
        distinctIds: Array.from({ length: 100 }, randomId),
      };
      const children = Array.from({ length: processes }, () => startChild(RACE_SOURCE, args));
      for (const child of children) assert.equal(await next(child), 'ready');
      for (const child of children) child.go();
      for (const child of children) assert.equal(await next(child), 'claimed');
      for (const child of children) child.go(); // every winner has completed: replay
      type Result = { concurrent: string[]; sequential: string[]; distinct: string[]; replayed: string[] };
      const results = await Promise.all(children.map((child) => next<Result>(child)));
      assert.deepEqual(await Promise.all(children.map((child) => child.exited)), Array(processes).fill(0));

      const count = (statuses: string[], status: string) => statuses.filter((s) => s === status).length;
      const concurrent = results.flatMap((result) => result.concurrent);
      assert.equal(count(concurrent, 'acquired'), 1, 'one of 200 concurrent claims');
      assert.equal(count(concurrent, 'in_progress'), processes * args.concurrent - 1);
      const sequential = results.flatMap((result) => result.sequential);
      assert.equal(count(sequential, 'acquired'), 1, 'one of 100 sequential claims');
      assert.equal(count(sequential, 'in_progress'), processes * args.sequential - 1);
      args.distinctIds.forEach((id, index) => {
        const statuses = results.map((result) => result.distinct[index]!);
        assert.equal(count(statuses, 'acquired'), 1, `id ${id}: ${statuses.join(', ')}`);
        // The others came while the winner ran, or after it completed.
        assert.equal(count(statuses, 'in_progress') + count(statuses, 'completed'), processes - 1);
      });
      assert.equal(count(results.flatMap((result) => result.replayed), 'completed'), processes * args.distinctIds.length);
    });
  }

  it('waits for another process that holds the write lock briefly, then claims', { timeout: 30_000 }, async () => {
    const path = freshFile();
    const store = new SqliteStore({ path });
    const child = startChild(`
      const db = new Database(args.path);
      db.exec('BEGIN IMMEDIATE');
      await send('locked');
      await new Promise((resolve) => setTimeout(resolve, 300));
      db.exec('COMMIT');
      db.close();
    `, { path });
    assert.equal(await next(child), 'ready');
    child.go();
    assert.equal(await next(child), 'locked');
    const started = performance.now();
    tokenOf(await store.claim({ id: randomId(), fingerprint: FP, leaseMs: MINUTE }));
    assert.ok(performance.now() - started >= 200, 'the claim waited for the lock instead of failing');
    assert.equal(await child.exited, 0);
    await store.close();
  });

  it('recovers from a process killed inside a write transaction, holding a claim', { timeout: 30_000 }, async () => {
    const path = freshFile();
    const store = new SqliteStore({ path, busyTimeoutMs: 2_000 });
    const id = randomId();
    const child = startChild(`
      const store = new SqliteStore({ path: args.path });
      await store.claim({ id: args.id, fingerprint: args.fingerprint, leaseMs: 300 });
      const db = new Database(args.path);
      db.exec('BEGIN IMMEDIATE');
      db.prepare('DELETE FROM oncely_records').run(); // uncommitted: must not survive the kill
      await send('holding');
      await new Promise(() => {});
    `, { path, id, fingerprint: FP });
    assert.equal(await next(child), 'ready');
    child.go();
    assert.equal(await next(child), 'holding');
    child.kill();
    await child.exited;
    // The OS dropped the dead process's lock; its uncommitted delete is gone; its claim lives on.
    assert.equal((await store.claim({ id, fingerprint: FP, leaseMs: MINUTE })).status, 'in_progress');
    await sleep(350);
    tokenOf(await store.claim({ id, fingerprint: FP, leaseMs: MINUTE }));
    await store.close();
  });
});
