/**
 * `npm run demo`, the README's first command: run as `npm run demo` runs it, it must show
 * duplicates on the unprotected route, exactly one order, charge and email per scenario on the
 * oncely route, exit 0, and finish in under 30 s. And the shop it uses, in process.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { startShop } from '../examples/demo/shop.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const SCENARIOS = ['double click', 'timeout and retry', 'load balancer retry', '47 clicks', 'response lost'];

function runDemo(): Promise<{ code: number | null; stdout: string; stderr: string; ms: number }> {
  const started = performance.now();
  // What `tsx examples/demo/index.ts` does, without npm in between.
  const child = spawn(process.execPath, ['--import', 'tsx', 'examples/demo/index.ts'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  return new Promise((resolve) => child.once('close', (code) => resolve({ code, stdout, stderr, ms: performance.now() - started })));
}

describe('npm run demo', () => {
  it('shows duplicates without oncely, exactly one order, charge and email with it, and exits 0 in under 30 s', { timeout: 60_000 }, async () => {
    const { code, stdout, stderr, ms } = await runDemo();
    assert.equal(code, 0, `exit code ${code}\n${stdout}\n${stderr}`);
    assert.ok(ms < 30_000, `took ${Math.round(ms)} ms`);
    assert.doesNotMatch(stdout, /\x1b\[/, 'no colour codes when stdout is not a TTY'); // eslint-disable-line no-control-regex
    for (const scenario of SCENARIOS) {
      const row = new RegExp(`^${scenario} +(\\d+) / (\\d+) / (\\d+) +(\\d+) / (\\d+) / (\\d+)  ✓$`, 'm').exec(stdout);
      assert.ok(row, `no row for "${scenario}" in:\n${stdout}`);
      const [unprotected, oncely] = [row.slice(1, 4).map(Number), row.slice(4, 7).map(Number)];
      for (const count of unprotected) assert.ok(count > 1, `${scenario}: unprotected counts ${unprotected.join(' / ')} should show duplicates`);
      assert.deepEqual(oncely, [1, 1, 1], `${scenario}: oncely counts`);
    }
    assert.match(stdout, /oncely: every scenario created exactly one order, one charge and one email/);
  });
});

describe('startShop()', () => {
  const post = (url: string, key: string) =>
    fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', 'idempotency-key': key }, body: JSON.stringify({ amountCents: 1_200, email: 'bo@example.com' }) });

  it('POST /orders twice with one key makes one order; /orders-unsafe makes two', async () => {
    const shop = await startShop({ handlerDelayMs: 5 });
    try {
      const key = randomUUID();
      const first = await post(`${shop.url}/orders`, key);
      const retry = await post(`${shop.url}/orders`, key);
      assert.equal(first.status, 201);
      assert.equal(retry.status, 201);
      assert.equal(retry.headers.get('idempotent-replayed'), 'true');
      const order = (await first.json()) as { id: number };
      assert.deepEqual(await retry.json(), order);
      assert.equal(retry.headers.get('location'), `/orders/${order.id}`);
      assert.deepEqual(shop.counts('safe'), { orders: 1, charges: 1, emails: 1 });

      await post(`${shop.url}/orders-unsafe`, key);
      await post(`${shop.url}/orders-unsafe`, key);
      assert.deepEqual(shop.counts('unsafe'), { orders: 2, charges: 2, emails: 2 });
      assert.deepEqual(shop.counts(), { orders: 3, charges: 3, emails: 3 });

      const stored = (await (await fetch(`${shop.url}/orders/${order.id}`)).json()) as Record<string, unknown>;
      assert.deepEqual(stored, { id: order.id, route: 'safe', email: 'bo@example.com', amountCents: 1_200, status: 'confirmed', charges: 1, emails: 1 });
    } finally {
      await shop.close();
    }
  });

  it('settled() waits for a handler whose client gave up', async () => {
    const shop = await startShop();
    try {
      const headers = { 'content-type': 'application/json', 'idempotency-key': randomUUID(), 'x-demo-delay-ms': '300' };
      const body = JSON.stringify({ amountCents: 1_200, email: 'bo@example.com' });
      await assert.rejects(fetch(`${shop.url}/orders`, { method: 'POST', headers, body, signal: AbortSignal.timeout(50) }), { name: 'TimeoutError' });
      assert.deepEqual(shop.counts('safe'), { orders: 1, charges: 0, emails: 0 });
      await shop.settled();
      assert.deepEqual(shop.counts('safe'), { orders: 1, charges: 1, emails: 1 });
    } finally {
      await shop.close();
    }
  });

  it('refuses POST /orders without an Idempotency-Key', async () => {
    const shop = await startShop();
    try {
      const response = await fetch(`${shop.url}/orders`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"amountCents":1,"email":"x"}' });
      assert.equal(response.status, 400);
      assert.deepEqual(shop.counts('safe'), { orders: 0, charges: 0, emails: 0 });
    } finally {
      await shop.close();
    }
  });
});
