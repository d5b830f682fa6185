import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { request as httpRequest, type IncomingHttpHeaders, type OutgoingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import express, { type Request } from 'express';
import { executionContext } from '../../core/execution-context.js';
import { MemoryStore } from '../../stores/memory/index.js';
import { idempotency, idempotencyErrors } from './index.js';

interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

const user = (req: Request) => (req as Request & { user: { id: string } }).user;

/** One app with every way of answering; each route counts its executions. */
function shop(options: Partial<Parameters<typeof idempotency>[0]> = {}) {
  const executions = new Map<string, number>();
  const scopedRequests: unknown[] = [];
  const binary = randomBytes(4096);
  const app = express();
  app.use((req, _res, next) => {
    Object.assign(req, { user: { id: req.get('x-user') ?? 'anonymous' } });
    next();
  });
  const guard = idempotency({
    store: new MemoryStore(),
    required: true,
    maxStoredBytes: 64 * 1024,
    scope: (req) => (scopedRequests.push(req), user(req).id),
    ...options,
  });
  app.post('/:route', express.json(), guard, async (req, res, next) => {
    const route = String(req.params['route']);
    executions.set(route, (executions.get(route) ?? 0) + 1);
    const count = executions.get(route);
    switch (route) {
      case 'orders': {
        if (req.get('x-slow')) await sleep(200);
        res.set({ location: `/orders/${count}`, etag: `"order-${count}"`, 'x-order-id': String(count) });
        res.cookie('session', 'secret');
        res.status(201).json({ order: count, amount: req.body.amount, downstreamKey: executionContext().downstreamKey, user: user(req).id });
        return;
      }
      case 'write':
        res.status(202).setHeader('content-type', 'text/plain; charset=latin1');
        res.write(`chunk ${count}, `);
        res.write(Buffer.from('bytes, '));
        res.write('caf\xe9', 'latin1');
        res.end(' end', 'utf8');
        return;
      case 'pipe':
        res.type('text/csv');
        Readable.from([`row,${count}\n`, Buffer.from('a,b\n'), 'c,d\n']).pipe(res);
        return;
      case 'binary':
        res.type('application/octet-stream').send(Buffer.concat([Buffer.from([count!]), binary]));
        return;
      case 'big':
        res.type('text/plain').send('x'.repeat(100 * 1024));
        return;
      case 'throw':
        throw new Error('boom');
      case 'returned-500':
        res.status(500).json({ error: 'returned', count });
        return;
      case 'unavailable':
        res.status(503).json({ error: 'try later', count });
        return;
      case 'then-next':
        res.status(201).json({ count });
        return next();
      case 'raw':
        res.json({ isBuffer: Buffer.isBuffer(req.body), body: Buffer.isBuffer(req.body) ? req.body.toString('utf8') : null });
        return;
    }
    res.sendStatus(404);
  });
  app.use(idempotencyErrors());
  return { app, executions: (route: string) => executions.get(route) ?? 0, scopedRequests };
}

function listen(app: express.Express): Promise<Server> {
  return new Promise((resolve) => {
    const server = app.listen(0, () => resolve(server));
  });
}

/** A raw HTTP request: header values may be arrays (one header line each). */
function call(server: Server, path: string, headers: OutgoingHttpHeaders, body?: string | Buffer): Promise<Reply> {
  const { port } = server.address() as AddressInfo;
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, method: 'POST', headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

const json = (key: string | undefined, body: unknown, headers: OutgoingHttpHeaders = {}) => ({
  headers: { 'content-type': 'application/json', ...(key === undefined ? {} : { 'idempotency-key': key }), ...headers },
  body: JSON.stringify(body),
});

describe('idempotency (Express)', () => {
  const { app, executions, scopedRequests } = shop();
  let server: Server;
  const post = (path: string, key: string | undefined, body: unknown = {}, headers: OutgoingHttpHeaders = {}) => {
    const request = json(key, body, headers);
    return call(server, path, request.headers, request.body);
  };
  before(async () => {
    server = await listen(app);
  });
  after(() => {
    server.closeAllConnections();
    server.close();
  });

  it('replays status, body bytes, Location, ETag and X- headers; marks replays; never replays Set-Cookie', async () => {
    const key = randomUUID();
    const first = await post('/orders', key, { amount: 5 });
    assert.equal(first.status, 201);
    assert.equal(first.headers['idempotent-replayed'], 'false');
    assert.ok(first.headers['set-cookie'], 'the first response is sent as the handler made it');
    const again = await post('/orders', key, { amount: 5 });
    assert.equal(again.status, 201);
    assert.equal(again.headers['idempotent-replayed'], 'true');
    assert.deepEqual(again.body, first.body);
    for (const name of ['location', 'etag', 'x-order-id', 'content-type']) assert.equal(again.headers[name], first.headers[name], name);
    assert.equal(again.headers['set-cookie'], undefined);
    assert.equal(executions('orders'), 1);
    assert.match(JSON.parse(first.body.toString()).downstreamKey, /^[0-9a-f]{64}$/, 'executionContext() works in the handler');
  });

  it('refuses two Idempotency-Key header lines with 400', async () => {
    const before = executions('orders');
    const reply = await post('/orders', undefined, { amount: 1 }, { 'idempotency-key': [randomUUID(), randomUUID()] });
    assert.equal(reply.status, 400);
    assert.equal(reply.headers['content-type'], 'application/problem+json');
    assert.match(JSON.parse(reply.body.toString()).type, /key-invalid$/);
    assert.equal(executions('orders'), before);
  });

  it('refuses a missing key on a required route with a 400 problem', async () => {
    const reply = await post('/orders', undefined, { amount: 1 });
    assert.equal(reply.status, 400);
    assert.equal(reply.headers['content-type'], 'application/problem+json');
    assert.match(JSON.parse(reply.body.toString()).type, /key-missing$/);
  });

  it('answers 422 for the same key with another body', async () => {
    const key = randomUUID();
    assert.equal((await post('/orders', key, { amount: 1 })).status, 201);
    const reused = await post('/orders', key, { amount: 2 });
    assert.equal(reused.status, 422);
    assert.match(JSON.parse(reused.body.toString()).type, /key-reused$/);
  });

  it('runs 50 concurrent requests with one key exactly once', async () => {
    const before = executions('orders');
    const key = randomUUID();
    const replies = await Promise.all(Array.from({ length: 50 }, () => post('/orders', key, { amount: 3 }, { 'x-slow': '1' })));
    assert.equal(executions('orders') - before, 1);
    assert.equal(replies.filter((r) => r.headers['idempotent-replayed'] === 'false').length, 1);
    // The others arrived while it ran (409) or, on a slow machine, after it finished (replay).
    assert.ok(replies.every((r) => r.status === 409 || (r.status === 201 && r.headers['idempotent-replayed'] !== undefined)));
  });

  it('replays a body sent with res.write and res.end, strings in several encodings, byte for byte', async () => {
    const key = randomUUID();
    const first = await post('/write', key);
    assert.equal(first.status, 202);
    assert.deepEqual(first.body, Buffer.from('chunk 1, bytes, caf\xe9 end', 'latin1'));
    const again = await post('/write', key);
    assert.equal(again.status, 202);
    assert.deepEqual(again.body, first.body);
    assert.equal(again.headers['content-type'], 'text/plain; charset=latin1');
    assert.equal(executions('write'), 1);
  });

  it('replays a piped stream', async () => {
    const key = randomUUID();
    const first = await post('/pipe', key);
    assert.equal(first.body.toString(), 'row,1\na,b\nc,d\n');
    const again = await post('/pipe', key);
    assert.equal(again.headers['idempotent-replayed'], 'true');
    assert.deepEqual(again.body, first.body);
    assert.equal(again.headers['content-type'], first.headers['content-type']);
  });

  it('replays a binary Buffer exactly', async () => {
    const key = randomUUID();
    const first = await post('/binary', key);
    assert.equal(first.body.length, 4097);
    const again = await post('/binary', key);
    assert.ok(again.body.equals(first.body));
    assert.equal(executions('binary'), 1);
  });

  it('sends a body over maxStoredBytes whole, then answers 410 response-not-replayable', async () => {
    const key = randomUUID();
    const first = await post('/big', key);
    assert.equal(first.status, 200);
    assert.equal(first.body.length, 100 * 1024);
    const again = await post('/big', key);
    assert.equal(again.status, 410);
    const problem = JSON.parse(again.body.toString());
    assert.match(problem.type, /response-not-replayable$/);
    assert.equal(problem.originalStatus, 200);
    assert.equal(executions('big'), 1);
  });

  it('releases the key when the handler throws, so a retry runs again', async () => {
    const key = randomUUID();
    assert.equal((await post('/throw', key)).status, 500);
    const again = await post('/throw', key);
    assert.equal(again.status, 500);
    assert.equal(again.headers['idempotent-replayed'], 'false');
    assert.equal(executions('throw'), 2);
  });

  it('stores a returned 500 and replays it', async () => {
    const key = randomUUID();
    const first = await post('/returned-500', key);
    const again = await post('/returned-500', key);
    assert.equal(again.status, 500);
    assert.equal(again.headers['idempotent-replayed'], 'true');
    assert.deepEqual(again.body, first.body);
    assert.equal(executions('returned-500'), 1);
  });

  it('does not store a 503: a retry runs again', async () => {
    const key = randomUUID();
    assert.equal((await post('/unavailable', key)).status, 503);
    const again = await post('/unavailable', key);
    assert.equal(again.status, 503);
    assert.equal(JSON.parse(again.body.toString()).count, 2);
  });

  it('scopes keys by the scope callback, which receives the Express req', async () => {
    const key = randomUUID();
    const alice = await post('/orders', key, { amount: 1 }, { 'x-user': 'alice' });
    const bob = await post('/orders', key, { amount: 1 }, { 'x-user': 'bob' });
    assert.equal(bob.headers['idempotent-replayed'], 'false');
    assert.notEqual(JSON.parse(bob.body.toString()).order, JSON.parse(alice.body.toString()).order);
    const last = scopedRequests.at(-1) as Request;
    assert.equal(typeof last.get, 'function');
    assert.equal(user(last).id, 'bob');
  });

  it('keeps the key while the handler runs after the client disconnected, and stores its response', async () => {
    const before = executions('orders');
    const key = randomUUID();
    const { port } = server.address() as AddressInfo;
    const request = json(key, { amount: 9 }, { 'x-slow': '1' });
    const gone = new Promise<void>((resolve) => {
      const req = httpRequest({ host: '127.0.0.1', port, path: '/orders', method: 'POST', headers: request.headers, agent: false });
      req.on('error', () => resolve());
      req.end(request.body);
      setTimeout(() => (req.destroy(), resolve()), 50);
    });
    await gone;
    assert.equal((await post('/orders', key, { amount: 9 })).status, 409, 'the handler still runs: no second execution');
    await sleep(250);
    const again = await post('/orders', key, { amount: 9 });
    assert.equal(again.status, 201);
    assert.equal(again.headers['idempotent-replayed'], 'true');
    assert.equal(executions('orders') - before, 1);
  });

  it('without a body parser, reads the raw body into req.body and fingerprints it', async () => {
    const key = randomUUID();
    const headers = { 'content-type': 'text/plain', 'idempotency-key': key };
    const first = await call(server, '/raw', headers, 'hello');
    assert.deepEqual(JSON.parse(first.body.toString()), { isBuffer: true, body: 'hello' });
    assert.equal((await call(server, '/raw', headers, 'hello')).headers['idempotent-replayed'], 'true');
    assert.equal((await call(server, '/raw', headers, 'other')).status, 422);
  });
  it('holds the end until stored (a slow store), without letting a later next() change the response', async () => {
    const store = new MemoryStore();
    const complete = store.complete.bind(store);
    store.complete = async (...args: Parameters<MemoryStore['complete']>) => (await sleep(50), complete(...args));
    const slow = shop({ store });
    const slowServer = await listen(slow.app);
    try {
      const key = randomUUID();
      const first = await call(slowServer, '/then-next', { 'idempotency-key': key });
      assert.equal(first.status, 201, 'the 404 Express sends when next() is called after a response does not replace it');
      assert.equal(first.headers['content-length'], String(first.body.length));
      const again = await call(slowServer, '/then-next', { 'idempotency-key': key });
      assert.equal(again.headers['idempotent-replayed'], 'true', 'the record was complete when the client got the response');
      assert.deepEqual(again.body, first.body);
    } finally {
      slowServer.closeAllConnections();
      slowServer.close();
    }
  });

  it('refuses a body over maxBodyBytes with 413, declared or chunked, without running the handler', async () => {
    const small = shop({ maxBodyBytes: 1024 });
    const smallServer = await listen(small.app);
    try {
      const declared = await call(smallServer, '/raw', { 'content-type': 'text/plain', 'idempotency-key': randomUUID() }, 'x'.repeat(2048));
      assert.equal(declared.status, 413);
      const parsed = await call(smallServer, '/orders', { 'content-type': 'application/json', 'idempotency-key': randomUUID() }, JSON.stringify({ pad: 'x'.repeat(2048) }));
      assert.equal(parsed.status, 413, 'also when express.json() parsed it first');
      assert.equal(small.executions('orders'), 0);
      const { port } = smallServer.address() as AddressInfo;
      const chunked = await new Promise<number>((resolve, reject) => {
        const req = httpRequest({ host: '127.0.0.1', port, path: '/raw', method: 'POST', agent: false, headers: { 'content-type': 'text/plain', 'idempotency-key': randomUUID() } }, (res) => {
          res.resume();
          resolve(res.statusCode!);
        });
        req.on('error', reject);
        for (let i = 0; i < 8; i++) req.write('y'.repeat(512));
        req.end();
      });
      assert.equal(chunked, 413);
      assert.equal(small.executions('raw'), 0);
    } finally {
      smallServer.closeAllConnections();
      smallServer.close();
    }
  });
});

describe('idempotency (Express) with onThrow store500', () => {
  it("stores the response Express' error handler made for a thrown error", async () => {
    const { app, executions } = shop({ onThrow: 'store500' });
    const server = await listen(app);
    try {
      const key = randomUUID();
      const first = await call(server, '/throw', { 'idempotency-key': key });
      assert.equal(first.status, 500);
      const again = await call(server, '/throw', { 'idempotency-key': key });
      assert.equal(again.status, 500);
      assert.equal(again.headers['idempotent-replayed'], 'true');
      assert.deepEqual(again.body, first.body);
      assert.equal(executions('throw'), 1);
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });
});
