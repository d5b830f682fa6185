/**
 * `oncely/client` against a real oncely server (Express, `idempotency({ required: true })`,
 * SQLite store) behind a flaky proxy that breaks the first attempt after the work is done:
 * - it drops the response (the socket is destroyed once the order exists);
 * - it answers 503 in place of the server's 201;
 * - the handler outlasts `attemptTimeoutMs`, so the client gives up on the first attempt while
 *   it still runs, gets 409 in progress, and keeps retrying until the replay.
 * Each time the order is created once, the client gets its 201 (or the replay of it), and
 * every attempt carries the same key; so does a double submit of one checkout. The same
 * faults on an unprotected route create two orders: the test can fail.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, beforeEach, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import express from 'express';
import { createIdempotentFetch, memoryKeyStore, type RetryEvent } from '../src/client/index.js';
import { idempotency, idempotencyErrors } from '../src/http/express/index.js';
import { SqliteStore } from '../src/stores/sqlite/index.js';

type Fault = 'drop-response' | 'answer-503' | 'none';

const directory = mkdtempSync(join(tmpdir(), 'oncely-client-chaos-'));
const db = new Database(join(directory, 'shop.db'));
db.pragma('journal_mode = WAL');
db.exec('CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT NOT NULL, quantity INTEGER NOT NULL)');
const store = new SqliteStore({ database: db });
const insertOrder = db.prepare<[string, number]>('INSERT INTO orders (item, quantity) VALUES (?, ?)');
const orderIds = () => (db.prepare('SELECT id FROM orders ORDER BY id').all() as { id: number }[]).map((row) => row.id);

/** The shop: POST /orders behind oncely, and the same handler unprotected at POST /unsafe/orders. */
function shop(): express.Express {
  const app = express();
  const createOrder: express.RequestHandler = async (req, res) => {
    // The handler's own slowness, sent by the test on every attempt; only executions see it.
    await sleep(Number(req.get('x-work-ms') ?? 0));
    const { lastInsertRowid } = insertOrder.run(String(req.body.item), Number(req.body.quantity));
    res.status(201).location(`/orders/${lastInsertRowid}`).json({ id: Number(lastInsertRowid), item: req.body.item });
  };
  app.post('/orders', express.json(), idempotency({ store, required: true }), createOrder);
  app.post('/unsafe/orders', express.json(), createOrder);
  app.use(idempotencyErrors());
  return app;
}

/**
 * A proxy in front of the shop that spoils the first request it forwards (after the shop has
 * answered, so the work is done) and passes every later one through. A client that gives up
 * on a request makes the proxy drop its upstream request too, as a load balancer does.
 */
function flakyProxy(upstream: () => number) {
  const state = { fault: 'none' as Fault, requests: 0, keys: [] as (string | undefined)[] };
  const server = createServer((req, res) => {
    const first = ++state.requests === 1;
    state.keys.push(req.headers['idempotency-key'] as string | undefined);
    const forward = httpRequest({ host: '127.0.0.1', port: upstream(), method: req.method, path: req.url, headers: req.headers, agent: false }, (answer) => {
      if (first && state.fault === 'drop-response') {
        answer.resume();
        answer.once('end', () => req.socket.destroy());
      } else if (first && state.fault === 'answer-503') {
        answer.resume();
        answer.once('end', () => res.writeHead(503, { 'content-type': 'text/plain', 'retry-after': '0' }).end('upstream reset'));
      } else {
        res.writeHead(answer.statusCode!, answer.headers);
        answer.pipe(res);
      }
    });
    forward.on('error', () => res.destroy());
    res.once('close', () => {
      if (!res.writableFinished) forward.destroy();
    });
    req.pipe(forward);
  });
  return { server, state };
}

function listen(server: Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port)));
}

describe('oncely/client against a flaky proxy in front of a real oncely server', () => {
  const origin = createServer(shop());
  let originPort = 0;
  const proxy = flakyProxy(() => originPort);
  let base = '';

  before(async () => {
    originPort = await listen(origin);
    base = `http://127.0.0.1:${await listen(proxy.server)}`;
  });
  beforeEach(() => {
    db.exec('DELETE FROM orders');
    Object.assign(proxy.state, { fault: 'none', requests: 0, keys: [] });
  });
  after(async () => {
    for (const server of [proxy.server, origin]) {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
    await store.close();
    db.close();
    rmSync(directory, { recursive: true, force: true });
  });

  const placeOrder = (path: string, options: { attemptTimeoutMs?: number; workMs?: number } = {}) => {
    const retries: RetryEvent[] = [];
    const send = createIdempotentFetch({ retries: 5, baseDelayMs: 20, maxDelayMs: 100, attemptTimeoutMs: options.attemptTimeoutMs ?? 2_000, deadlineMs: 10_000, onRetry: (event) => retries.push(event) });
    const response = send(`${base}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-work-ms': String(options.workMs ?? 0) },
      body: JSON.stringify({ item: 'espresso machine', quantity: 1 }),
    });
    return { response, retries };
  };

  /** The operation ran once: one row, the id the client got, one key on every attempt. */
  async function assertCreatedOnce(response: Response, attempts: number) {
    assert.equal(response.status, 201);
    const body = (await response.json()) as { id: number };
    assert.deepEqual(orderIds(), [body.id], 'exactly one order, the one the client was told about');
    assert.equal(response.headers.get('location'), `/orders/${body.id}`);
    assert.equal(proxy.state.keys.length, attempts);
    assert.match(proxy.state.keys[0]!, /^"[0-9a-f-]{36}"$/);
    assert.equal(new Set(proxy.state.keys).size, 1, 'every attempt carried the same key');
  }

  it('no fault: one attempt, the first response', async () => {
    const { response, retries } = placeOrder('/orders');
    const res = await response;
    assert.equal(res.headers.get('idempotent-replayed'), 'false');
    await assertCreatedOnce(res, 1);
    assert.equal(retries.length, 0);
  });

  it('the response is lost after the order was made: the retry gets the replay', async () => {
    proxy.state.fault = 'drop-response';
    const { response, retries } = placeOrder('/orders');
    const res = await response;
    assert.equal(res.headers.get('idempotent-replayed'), 'true');
    await assertCreatedOnce(res, 2);
    assert.deepEqual(retries.map((r) => r.reason), ['network-error']);
  });

  it('a 503 in place of the 201: the retry gets the replay', async () => {
    proxy.state.fault = 'answer-503';
    const { response, retries } = placeOrder('/orders');
    const res = await response;
    assert.equal(res.headers.get('idempotent-replayed'), 'true');
    await assertCreatedOnce(res, 2);
    assert.deepEqual(retries.map((r) => [r.reason, r.status]), [['server-error', 503]]);
  });

  it('the first attempt outlasts attemptTimeoutMs: 409 in progress while it runs, then the replay', async () => {
    const { response, retries } = placeOrder('/orders', { attemptTimeoutMs: 150, workMs: 500 });
    const res = await response;
    assert.equal(res.headers.get('idempotent-replayed'), 'true');
    const reasons = retries.map((r) => r.reason);
    assert.equal(reasons[0], 'timeout');
    assert.ok(reasons.slice(1).length >= 1 && reasons.slice(1).every((reason) => reason === 'in-progress'), reasons.join());
    const inProgress = retries.find((r) => r.reason === 'in-progress')!;
    assert.ok(inProgress.delayMs >= 1_000, "the server's Retry-After: 1 is the floor of the wait");
    await assertCreatedOnce(res, retries.length + 1);
  });

  it('a double submit of one checkout shares its key: the second waits out the 409s and gets the replay', async () => {
    const send = createIdempotentFetch({ retries: 5, baseDelayMs: 20, maxDelayMs: 100, keyStore: memoryKeyStore() });
    const submit = () =>
      send(`${base}/orders`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-work-ms': '100' }, body: JSON.stringify({ item: 'espresso machine', quantity: 1 }) }, { operation: 'checkout' });
    const answers = await Promise.all([submit(), submit()]);
    const bodies = (await Promise.all(answers.map((res) => res.json()))) as { id: number }[];
    assert.deepEqual(answers.map((res) => res.status), [201, 201]);
    assert.deepEqual(answers.map((res) => res.headers.get('idempotent-replayed')).sort(), ['false', 'true']);
    assert.deepEqual(orderIds(), [bodies[0]!.id]);
    assert.equal(bodies[1]!.id, bodies[0]!.id);
    assert.equal(new Set(proxy.state.keys).size, 1);
  });

  for (const fault of ['drop-response', 'answer-503'] as const) {
    it(`without oncely on the route, the same fault (${fault}) creates two orders`, async () => {
      proxy.state.fault = fault;
      const res = await placeOrder('/unsafe/orders').response;
      assert.equal(res.status, 201);
      assert.equal(orderIds().length, 2, 'the retry ran the work again');
      assert.equal(new Set(proxy.state.keys).size, 1, 'with the same key, which nothing on the server read');
    });
  }
});
