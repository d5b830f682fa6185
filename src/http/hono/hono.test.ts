import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, it } from 'node:test';
import { Hono } from 'hono';
import { executionContext } from '../../core/execution-context.js';
import { MemoryStore } from '../../stores/memory/index.js';
import { idempotency } from './index.js';

function shop(options: Partial<Parameters<typeof idempotency>[0]> = {}) {
  let executions = 0;
  const app = new Hono<{ Variables: { user: string } }>();
  app.use('*', async (c, next) => {
    c.set('user', c.req.header('x-user') ?? 'anonymous');
    await next();
  });
  app.post('/orders', idempotency({ store: new MemoryStore(), required: true, scope: (c) => c.get('user'), ...options }), async (c) => {
    executions++;
    if (c.req.header('x-fail') === 'throw') throw new Error('boom');
    const { amount } = await c.req.json<{ amount: number }>();
    c.header('location', `/orders/${executions}`);
    return c.json({ order: executions, amount, downstreamKey: executionContext().downstreamKey }, 201);
  });
  const post = (key: string, body: unknown, headers: Record<string, string> = {}) =>
    app.request('/orders', { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json', 'idempotency-key': key, ...headers } });
  return { post, executions: () => executions };
}

describe('idempotency (Hono)', () => {
  it('replays the first response, and the handler can still read the body', async () => {
    const { post, executions } = shop();
    const key = randomUUID();
    const first = await post(key, { amount: 7 });
    assert.equal(first.status, 201);
    assert.equal(first.headers.get('idempotent-replayed'), 'false');
    const body = await first.text();
    assert.equal(JSON.parse(body).amount, 7);
    const again = await post(key, { amount: 7 });
    assert.equal(again.headers.get('idempotent-replayed'), 'true');
    assert.equal(again.headers.get('location'), '/orders/1');
    assert.equal(await again.text(), body);
    assert.equal(executions(), 1);
  });

  it('scopes keys by the scope callback, which receives the Hono context', async () => {
    const { post, executions } = shop();
    const key = randomUUID();
    await post(key, { amount: 1 }, { 'x-user': 'alice' });
    const bob = await post(key, { amount: 1 }, { 'x-user': 'bob' });
    assert.equal(bob.headers.get('idempotent-replayed'), 'false');
    assert.equal(executions(), 2);
  });

  it('releases the key when the handler throws (Hono answers 500), so a retry runs again', async () => {
    const { post, executions } = shop();
    const key = randomUUID();
    assert.equal((await post(key, { amount: 1 }, { 'x-fail': 'throw' })).status, 500);
    assert.equal((await post(key, { amount: 1 })).status, 201);
    assert.equal(executions(), 2);
  });

  it('stores the 500 of a thrown handler with onThrow store500', async () => {
    const { post, executions } = shop({ onThrow: 'store500' });
    const key = randomUUID();
    assert.equal((await post(key, { amount: 1 }, { 'x-fail': 'throw' })).status, 500);
    const again = await post(key, { amount: 1 });
    assert.equal(again.status, 500);
    assert.equal(again.headers.get('idempotent-replayed'), 'true');
    assert.equal(executions(), 1);
  });
});
