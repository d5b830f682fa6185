/**
 * Consumers in transaction mode on real PostgreSQL and SQLite: the handler's writes through
 * `context.transaction` and the message's outcome commit together, so a projection applies a
 * `PaymentReceived` once however often it is delivered; a handler that throws after writing
 * leaves nothing behind, and the retry applies it once.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import pg from 'pg';
import { InvalidOptionError } from '../core/errors.js';
import { MemoryStore } from '../stores/memory/index.js';
import { PostgresStore } from '../stores/postgres/index.js';
import { SqliteStore } from '../stores/sqlite/index.js';
import { POSTGRES_URL, skipUnlessReachable } from '../../test/support/services.js';
import { createMessageProtocol, type DeliveryFacts } from './protocol.js';

interface PaymentReceived {
  eventId: string;
  account: string;
  cents: number;
}

const postgresSkip = await skipUnlessReachable('PostgreSQL', POSTGRES_URL);
const table = `oncely_msg_tx_${process.pid}`;
const balances = `msg_tx_balances_${process.pid}`;
const pool = new pg.Pool({ connectionString: POSTGRES_URL, max: 3 });
const pgStore = new PostgresStore({ pool, table });
if (!postgresSkip) {
  await pgStore.migrate();
  await pool.query(`CREATE TABLE "${balances}" (account text PRIMARY KEY, cents bigint NOT NULL)`);
}
const directory = mkdtempSync(join(tmpdir(), 'oncely-msg-tx-'));
const db = new Database(join(directory, 'ledger.db'));
db.exec('CREATE TABLE balances (account TEXT PRIMARY KEY, cents INTEGER NOT NULL)');
const sqliteStore = new SqliteStore({ database: db });

after(async () => {
  await pgStore.close();
  if (!postgresSkip) await pool.query(`DROP TABLE IF EXISTS "${table}", "${table}_migrations", "${balances}"`);
  await pool.end();
  db.close();
  rmSync(directory, { recursive: true, force: true });
});

const facts = (event: PaymentReceived, attempt = 1): DeliveryFacts => ({ id: event.eventId, body: Buffer.from(JSON.stringify(event)), attempt, source: 'payments' });
const payment = (cents: number): PaymentReceived => ({ eventId: randomUUID(), account: randomUUID(), cents });

describe('consumer transaction mode: PostgreSQL', { skip: postgresSkip }, () => {
  const balance = async (account: string) => Number((await pool.query<{ cents: string }>(`SELECT cents FROM "${balances}" WHERE account = $1`, [account])).rows[0]?.cents ?? 0);
  const apply = (client: pg.PoolClient, event: PaymentReceived) =>
    client.query(`INSERT INTO "${balances}" (account, cents) VALUES ($1, $2) ON CONFLICT (account) DO UPDATE SET cents = "${balances}".cents + EXCLUDED.cents`, [event.account, event.cents]);

  it('applies a payment delivered three times once, and acks every delivery', async () => {
    const { deliver } = createMessageProtocol<PaymentReceived>({ store: pgStore, transaction: true });
    const event = payment(500);
    const actions = [];
    for (const attempt of [1, 2, 3]) actions.push(await deliver(event, facts(event, attempt), (e, context) => apply(context.transaction as pg.PoolClient, e)));
    assert.deepEqual(actions.map((a) => a.action === 'ack' && a.outcome), ['processed', 'duplicate', 'duplicate']);
    assert.equal(await balance(event.account), 500);
  });

  it('rolls the write back when the handler throws after it, and the retry applies it once', async () => {
    const { deliver } = createMessageProtocol<PaymentReceived>({ store: pgStore, transaction: true, backoff: { baseMs: 10, maxMs: 10 } });
    const event = payment(700);
    const first = await deliver(event, facts(event), async (e, context) => {
      await apply(context.transaction as pg.PoolClient, e);
      throw new Error('downstream validation failed after the write');
    });
    assert.equal(first.action === 'retry' && first.reason, 'failed');
    assert.equal(await balance(event.account), 0, 'the write rolled back with the failure');
    assert.equal((await deliver(event, facts(event, 2), (e, context) => apply(context.transaction as pg.PoolClient, e))).action, 'ack');
    assert.equal(await balance(event.account), 700);
  });

  it('answers a duplicate delivered while the transaction runs at once, never blocked by it', async () => {
    const { deliver } = createMessageProtocol<PaymentReceived>({ store: pgStore, transaction: true, leaseMs: 5_000 });
    const event = payment(300);
    let letGo!: () => void;
    const held = new Promise<void>((resolve) => (letGo = resolve));
    const first = deliver(event, facts(event), async (e, context) => {
      await apply(context.transaction as pg.PoolClient, e);
      await held;
    });
    await new Promise((resolve) => setTimeout(resolve, 50));
    const started = performance.now();
    const duplicate = await deliver(event, facts(event), () => assert.fail('a duplicate must not run'));
    assert.equal(duplicate.action === 'retry' && duplicate.reason, 'in_progress');
    assert.ok(performance.now() - started < 500);
    letGo();
    assert.equal((await first).action, 'ack');
    assert.equal(await balance(event.account), 300);
  });
});

describe('consumer transaction mode: SQLite', () => {
  const balance = (account: string) => (db.prepare('SELECT cents FROM balances WHERE account = ?').get(account) as { cents: number } | undefined)?.cents ?? 0;
  const apply = (tx: Database.Database, event: PaymentReceived) =>
    tx.prepare('INSERT INTO balances (account, cents) VALUES (?, ?) ON CONFLICT (account) DO UPDATE SET cents = cents + excluded.cents').run(event.account, event.cents);

  it('applies a payment delivered twice once; a throw after the write leaves nothing', async () => {
    const { deliver } = createMessageProtocol<PaymentReceived>({ store: sqliteStore, transaction: true, backoff: { baseMs: 10, maxMs: 10 } });
    const event = payment(250);
    const failed = await deliver(event, facts(event), (e, context) => {
      apply(context.transaction as Database.Database, e);
      throw new Error('after the write');
    });
    assert.equal(failed.action, 'retry');
    assert.equal(balance(event.account), 0);
    for (const attempt of [2, 3]) assert.equal((await deliver(event, facts(event, attempt), (e, context) => void apply(context.transaction as Database.Database, e))).action, 'ack');
    assert.equal(balance(event.account), 250);
  });

  it('refuses an async handler on SQLite: nothing is written, the message is retried, never acked', async () => {
    const { deliver } = createMessageProtocol<PaymentReceived>({ store: sqliteStore, transaction: true });
    const event = payment(100);
    const action = await deliver(event, facts(event), async (e, context) => void apply(context.transaction as Database.Database, e));
    assert.equal(action.action === 'retry' && action.reason, 'failed');
    assert.match(String(action.action === 'retry' && (action.error as Error).message), /synchronous|promise/i);
    assert.equal(balance(event.account), 0);
  });
});

describe('consumer transaction mode: options', () => {
  it('refuses transaction: true on a store without transactions', () => {
    assert.throws(() => createMessageProtocol({ store: new MemoryStore(), transaction: true }), (error: unknown) => error instanceof InvalidOptionError && error.option === 'transaction');
  });
});
