import assert from 'node:assert/strict';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { Agent, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, it } from 'node:test';
import { serve } from '@hono/node-server';
import { Hono } from 'hono';
import { executionContext } from '../../core/execution-context.js';
import { MemoryStore } from '../../stores/memory/index.js';
import { endlessBody, upload, within } from '../../../test/support/uploads.js';
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

describe('idempotency (Hono) and request bodies without Content-Length', () => {
  const MAX_BODY = 64 * 1024;
  const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');

  function uploads() {
    let executions = 0;
    const app = new Hono();
    app.post('/upload', idempotency({ store: new MemoryStore(), required: true, maxBodyBytes: MAX_BODY }), async (c) => {
      executions++;
      const body = new Uint8Array(await c.req.arrayBuffer());
      return c.json({ bytes: body.byteLength, sha256: sha256(body) }, 201);
    });
    return { app, executions: () => executions };
  }

  it('answers 413 at once over real HTTP (@hono/node-server) to a chunked body and to a slow endless one', { timeout: 20_000 }, async () => {
    const { app, executions } = uploads();
    const server = await new Promise<Server>((resolve) => {
      const started: Server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(started)) as Server;
    });
    const { port } = server.address() as AddressInfo;
    const agent = new Agent({ keepAlive: true });
    try {
      const chunked = await within(2000, 'answer to a chunked body', upload(port, agent, '/upload', { 'content-type': 'application/octet-stream', 'idempotency-key': randomUUID() }, randomBytes(8 * 1024), 16, 0));
      assert.equal(chunked.status, 413);
      assert.equal(JSON.parse(chunked.body).type, 'https://oncely.dev/problems/body-too-large');
      const slow = await within(2000, 'answer to a slow endless body', upload(port, agent, '/upload', { 'content-type': 'application/octet-stream', 'idempotency-key': randomUUID() }, randomBytes(4 * 1024), Infinity, 5));
      assert.equal(slow.status, 413);
      assert.equal(executions(), 0, 'the handler never ran');
      await within(2000, 'close of the connection the client keeps sending on', slow.closed);

      const piece = randomBytes(4096);
      const whole = await within(2000, 'answer to a body at the limit', upload(port, agent, '/upload', { 'content-type': 'application/octet-stream', 'idempotency-key': randomUUID() }, piece, MAX_BODY / 4096, 1));
      assert.equal(whole.status, 201);
      assert.deepEqual(JSON.parse(whole.body), { bytes: MAX_BODY, sha256: sha256(Buffer.concat(Array(MAX_BODY / 4096).fill(piece))) }, 'the handler read the whole body');
    } finally {
      agent.destroy();
      server.closeAllConnections();
      server.close();
    }
  });

  it('answers 413 through app.request to an endless ReadableStream body, and releases the stream', { timeout: 10_000 }, async () => {
    const { app, executions } = uploads();
    const { stream, source } = endlessBody(16 * 1024);
    const headers = { 'idempotency-key': randomUUID() };
    const refused = await within(2000, 'answer', Promise.resolve(app.request('/upload', { method: 'POST', body: stream, duplex: 'half', headers })));
    assert.equal(refused.status, 413);
    assert.equal(executions(), 0);
    await source.cancelled;

    const body = randomBytes(MAX_BODY);
    const streamed = new ReadableStream<Uint8Array>({
      start(controller) {
        for (let at = 0; at < body.byteLength; at += 1000) controller.enqueue(body.subarray(at, at + 1000));
        controller.close();
      },
    });
    const whole = await app.request('/upload', { method: 'POST', body: streamed, duplex: 'half', headers: { 'idempotency-key': randomUUID() } });
    assert.deepEqual(await whole.json(), { bytes: MAX_BODY, sha256: sha256(body) }, 'a streamed body within the limit reaches the handler whole');
  });
});
