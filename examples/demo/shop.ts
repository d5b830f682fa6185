/**
 * The demo shop: one Express 5 API with two checkout routes over one SQLite database.
 *
 * - `POST /orders-unsafe`: no protection. Every request that reaches it creates an order,
 *   charges the card and sends the confirmation email.
 * - `POST /orders`: the same handler behind `idempotency({ store, required: true })`.
 * - `GET /orders/:id`: an order with its number of charges and emails.
 *
 * Body of a POST: `{ "amountCents": 4999, "email": "ada@example.com" }`. The answer is 201 with
 * `{ id, status, amountCents, chargeId }` and `Location: /orders/<id>`.
 *
 * A card charge and an email are rows the handler writes after a wait, standing in for calls to
 * a payment provider and a mailer. The payment provider takes `handlerDelayMs`; a request can
 * make it slower with the header `x-demo-delay-ms: <ms>` (the "timeout and retry" scenario).
 *
 * The idempotency records live in the same file and connection as the orders (table
 * `oncely_records`): one process and one file to inspect or back up, and better-sqlite3 is
 * synchronous, so one connection serves both without lock waits. A store shared by several
 * processes would open the file itself (`new SqliteStore({ path })`).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import express, { type Request, type RequestHandler } from 'express';
import { idempotency, idempotencyErrors } from 'oncely/express';
import { SqliteStore } from 'oncely/sqlite';

export interface ShopOptions {
  /** Directory for `shop.db`, kept after `close()`. Default: a new temp directory, removed by `close()`. */
  dir?: string;
  /** Port on 127.0.0.1; 0 or undefined picks a free one. */
  port?: number;
  /** How long the payment provider takes to charge a card, in ms. Default 50. */
  handlerDelayMs?: number;
}

/** `'unsafe'` is `POST /orders-unsafe`, `'safe'` is `POST /orders`. */
export type ShopRoute = 'unsafe' | 'safe';

export interface ShopCounts {
  orders: number;
  charges: number;
  emails: number;
}

export interface Shop {
  /** `http://127.0.0.1:PORT`; the routes are `${url}/orders` and `${url}/orders-unsafe`. */
  url: string;
  /** The SQLite file: tables `orders`, `charges`, `emails` and `oncely_records`. */
  databasePath: string;
  /** Rows in the database made through one route, or through both. */
  counts(route?: ShopRoute): ShopCounts;
  /** Resolves when no request is being handled, including handlers whose client has given up. */
  settled(): Promise<void>;
  /** Waits for running handlers, then closes the server, the store and the database. */
  close(): Promise<void>;
}

/** How long the mailer takes to accept an email. */
const MAILER_MS = 10;
/** Upper bound of `x-demo-delay-ms`. */
const MAX_DELAY_MS = 10_000;

const SCHEMA = `
  CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, route TEXT NOT NULL, email TEXT NOT NULL, amount_cents INTEGER NOT NULL, status TEXT NOT NULL);
  CREATE TABLE IF NOT EXISTS charges (id INTEGER PRIMARY KEY, order_id INTEGER NOT NULL REFERENCES orders (id), amount_cents INTEGER NOT NULL);
  CREATE TABLE IF NOT EXISTS emails (id INTEGER PRIMARY KEY, order_id INTEGER NOT NULL REFERENCES orders (id), recipient TEXT NOT NULL, subject TEXT NOT NULL);
`;

// `@route` NULL counts both routes.
const COUNTS = `
  SELECT
    (SELECT count(*) FROM orders WHERE @route IS NULL OR route = @route) AS orders,
    (SELECT count(*) FROM charges JOIN orders ON orders.id = charges.order_id WHERE @route IS NULL OR route = @route) AS charges,
    (SELECT count(*) FROM emails JOIN orders ON orders.id = emails.order_id WHERE @route IS NULL OR route = @route) AS emails
`;

export async function startShop(options: ShopOptions = {}): Promise<Shop> {
  const ownsDir = options.dir === undefined;
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), 'oncely-demo-'));
  const databasePath = join(dir, 'shop.db');
  const db = new Database(databasePath);
  // WAL so another process (a CLI, sqlite3) can read while the shop writes.
  db.pragma('journal_mode = WAL');
  db.exec(SCHEMA);
  const store = new SqliteStore({ database: db });
  const sql = {
    insertOrder: db.prepare<[string, string, number]>("INSERT INTO orders (route, email, amount_cents, status) VALUES (?, ?, ?, 'pending')"),
    insertCharge: db.prepare<[number, number]>('INSERT INTO charges (order_id, amount_cents) VALUES (?, ?)'),
    insertEmail: db.prepare<[number, string, string]>('INSERT INTO emails (order_id, recipient, subject) VALUES (?, ?, ?)'),
    confirm: db.prepare<[number]>("UPDATE orders SET status = 'confirmed' WHERE id = ?"),
    order: db.prepare<[number], Record<string, unknown>>(
      `SELECT id, route, email, amount_cents AS amountCents, status,
        (SELECT count(*) FROM charges WHERE order_id = orders.id) AS charges,
        (SELECT count(*) FROM emails WHERE order_id = orders.id) AS emails
       FROM orders WHERE id = ?`,
    ),
    counts: db.prepare<[{ route: ShopRoute | null }], ShopCounts>(COUNTS),
  };
  const work = activityTracker();
  const paymentDelayMs = options.handlerDelayMs ?? 50;

  const placeOrder = (route: ShopRoute): RequestHandler =>
    async function placeOrderHandler(req, res) {
      const { amountCents, email } = (req.body ?? {}) as { amountCents?: unknown; email?: unknown };
      if (typeof amountCents !== 'number' || !Number.isSafeInteger(amountCents) || amountCents <= 0 || typeof email !== 'string') {
        res.status(400).json({ error: 'expected { "amountCents": a positive integer, "email": a string }' });
        return;
      }
      // The handler keeps running when its client gives up; settled() must wait for it.
      const done = work.begin();
      try {
        const orderId = Number(sql.insertOrder.run(route, email, amountCents).lastInsertRowid);
        await sleep(requestedDelayMs(req) ?? paymentDelayMs); // the payment provider
        const chargeId = Number(sql.insertCharge.run(orderId, amountCents).lastInsertRowid);
        await sleep(MAILER_MS);
        sql.insertEmail.run(orderId, email, `Order #${orderId} confirmed`);
        sql.confirm.run(orderId);
        res.status(201).location(`/orders/${orderId}`).json({ id: orderId, status: 'confirmed', amountCents, chargeId });
      } finally {
        done();
      }
    };

  const app = express();
  // Every request counts as activity until its response is closed (sent, or the client left).
  app.use((_req, res, next) => (res.once('close', work.begin()), next()));
  app.use(express.json());
  app.post('/orders-unsafe', placeOrder('unsafe'));
  app.post('/orders', idempotency({ store, required: true }), placeOrder('safe'));
  app.get('/orders/:id', (req, res) => {
    const order = sql.order.get(Number(req.params.id));
    if (order) res.json(order);
    else res.status(404).json({ error: 'no such order' });
  });
  app.use(idempotencyErrors());

  const server = createServer(app);
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(options.port ?? 0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    databasePath,
    counts: (route) => sql.counts.get({ route: route ?? null })!,
    settled: work.idle,
    async close() {
      const closed = new Promise((resolve) => server.close(resolve));
      await work.idle();
      server.closeAllConnections(); // keep-alive sockets would hold close() open
      await closed;
      await store.close();
      db.close();
      if (ownsDir) rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** `x-demo-delay-ms`, when present and sane. */
function requestedDelayMs(req: Request): number | undefined {
  const delay = Number(req.get('x-demo-delay-ms'));
  return Number.isInteger(delay) && delay >= 0 && delay <= MAX_DELAY_MS ? delay : undefined;
}

/** Counts running pieces of work; `idle()` resolves when there are none. */
function activityTracker() {
  let active = 0;
  let waiters: (() => void)[] = [];
  return {
    /** Marks one piece of work as running; call the returned function once when it ends. */
    begin(): () => void {
      active += 1;
      let ended = false;
      return () => {
        if (ended) return;
        ended = true;
        active -= 1;
        if (active > 0) return;
        for (const wake of waiters) wake();
        waiters = [];
      };
    },
    idle: (): Promise<void> => (active === 0 ? Promise.resolve() : new Promise((resolve) => waiters.push(resolve))),
  };
}
