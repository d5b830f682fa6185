/**
 * `oncely/client` in a real browser (headless Chromium, driven by playwright-core): the built
 * dist/client.js loaded as an ES module by a checkout page, against a real oncely server.
 *
 * - A reload while the order is being made: the page's key survives in sessionStorage, the
 *   second click after the reload sends the same key, waits out the 409s and gets the replay.
 * - A double click: two calls of one operation share the key; one order.
 *
 * Needs Chromium (`apt install chromium`, or CHROMIUM_PATH). Skipped without it, with the
 * reason printed; under CI a missing browser fails the run.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import express from 'express';
import { chromium, type Browser, type Page } from 'playwright-core';
import { MemoryStore } from 'oncely';
import { idempotency } from 'oncely/express';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

function skipReason(): string | false {
  if (!existsSync('dist/client.js')) return 'dist/ is missing: run npm run build';
  if (existsSync(CHROMIUM)) return false;
  const reason = `Chromium is not installed at ${CHROMIUM} (apt install chromium, or set CHROMIUM_PATH)`;
  if (process.env.CI === 'true') throw new Error(`${reason}; CI requires it`);
  console.log(`# skipping the browser tests: ${reason}`);
  return reason;
}

/** The checkout page: `checkout()` sends the cart's order through the client, keyed by the operation 'checkout'. */
const PAGE = `<!doctype html>
<meta charset="utf-8">
<title>checkout</title>
<script type="module">
  import { createIdempotentFetch, sessionStorageKeyStore } from '/dist/client.js';
  const send = createIdempotentFetch({ keyStore: sessionStorageKeyStore(), baseDelayMs: 50, maxDelayMs: 200, retries: 20 });
  window.checkout = async () => {
    const res = await send('/orders', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ cart: 'cart-1', amountCents: 4999 }),
    }, { operation: 'checkout' });
    return { status: res.status, replayed: res.headers.get('idempotent-replayed'), body: await res.json() };
  };
  window.storedKey = () => sessionStorage.getItem('oncely:checkout');
  window.ready = true;
</script>`;

interface CheckoutResult {
  status: number;
  replayed: string | null;
  body: { id: number };
}

/** What the page puts on `window`. */
interface CheckoutWindow {
  ready?: boolean;
  checkout(): Promise<CheckoutResult>;
  storedKey(): string | null;
}

describe('oncely/client in Chromium', { skip: skipReason() }, () => {
  let server: Server;
  let base: string;
  let browser: Browser;
  let orders: { id: number; key: string | undefined }[];
  let keysSeen: (string | undefined)[];
  let handlerDelayMs: number;

  before(async () => {
    const app = express();
    app.use('/dist', express.static(resolve('dist')));
    app.get('/', (_req, res) => void res.type('html').send(PAGE));
    app.post('/orders', (req, _res, next) => {
      keysSeen.push(req.get('idempotency-key'));
      next();
    }, express.json(), idempotency({ store: new MemoryStore(), required: true, scope: () => 'shop' }), async (req, res) => {
      await new Promise((done) => setTimeout(done, handlerDelayMs));
      const order = { id: orders.length + 1, key: req.get('idempotency-key') };
      orders.push(order);
      res.status(201).location(`/orders/${order.id}`).json({ id: order.id });
    });
    server = app.listen(0, '127.0.0.1');
    await new Promise((ready) => server.once('listening', ready));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
  });

  after(async () => {
    await browser?.close();
    server?.closeAllConnections();
    await new Promise((closed) => server?.close(closed));
  });

  async function openCheckout(): Promise<Page> {
    orders = [];
    keysSeen = [];
    const page = await browser.newPage();
    await page.goto(base);
    await page.waitForFunction(() => (globalThis as unknown as CheckoutWindow).ready === true);
    return page;
  }

  it('keeps the key across a reload mid-request: the second click gets the first order', async () => {
    const page = await openCheckout();
    try {
      handlerDelayMs = 1_500;
      // The first click: the page reloads before the answer comes.
      void page.evaluate(() => (globalThis as unknown as CheckoutWindow).checkout()).catch(() => undefined);
      await waitFor(() => keysSeen.length === 1);
      const keyBeforeReload = await page.evaluate(() => (globalThis as unknown as CheckoutWindow).storedKey());
      await page.reload();
      await page.waitForFunction(() => (globalThis as unknown as CheckoutWindow).ready === true);
      assert.equal(await page.evaluate(() => (globalThis as unknown as CheckoutWindow).storedKey()), keyBeforeReload, 'the key survived the reload');

      // The click after the reload: 409 while the first runs, then the replay.
      const result = await page.evaluate(() => (globalThis as unknown as CheckoutWindow).checkout());
      assert.equal(orders.length, 1, 'one order');
      assert.deepEqual(result, { status: 201, replayed: 'true', body: { id: 1 } });
      assert.ok(keysSeen.length >= 3, `the second click retried through the 409s (${keysSeen.length} requests)`);
      assert.deepEqual(new Set(keysSeen), new Set([`"${keyBeforeReload}"`]), 'every request carried the one key');
      assert.equal(await page.evaluate(() => (globalThis as unknown as CheckoutWindow).storedKey()), null, 'the key is dropped once the order is final');
    } finally {
      await page.close();
    }
  });

  it('makes one order of a double click, and a new key for the next checkout', async () => {
    const page = await openCheckout();
    try {
      handlerDelayMs = 200;
      const [first, second] = await page.evaluate(() => {
        const { checkout } = globalThis as unknown as CheckoutWindow;
        return Promise.all([checkout(), checkout()]);
      });
      assert.equal(orders.length, 1, 'one order');
      assert.equal(first.body.id, 1);
      assert.equal(second.body.id, 1);
      assert.equal(new Set(keysSeen).size, 1, 'both clicks sent one key');
      const next = await page.evaluate(() => (globalThis as unknown as CheckoutWindow).checkout());
      assert.equal(next.body.id, 2, 'the next checkout is a new operation');
      assert.equal(new Set(keysSeen).size, 2);
    } finally {
      await page.close();
    }
  });
});

async function waitFor(condition: () => boolean, timeoutMs = 5_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > until) throw new Error('timed out waiting for the server to see the request');
    await new Promise((tick) => setTimeout(tick, 10));
  }
}
