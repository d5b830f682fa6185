import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import { createGunzip, gzipSync } from 'node:zlib';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import Fastify, { type FastifyReply, type FastifyRequest, type RequestPayload } from 'fastify';
import { executionContext } from '../../core/execution-context.js';
import { MemoryStore } from '../../stores/memory/index.js';
import oncely, { type FastifyIdempotencyOptions } from './index.js';

/** The downstream key when the handler runs protected; undefined when it was let through. */
function protectedKey(): string | undefined {
  try {
    return executionContext().downstreamKey;
  } catch {
    return undefined;
  }
}

async function shop(options: Partial<FastifyIdempotencyOptions> = {}) {
  const counts = new Map<string, number>();
  const count = (route: string) => counts.set(route, (counts.get(route) ?? 0) + 1).get(route) ?? 0;
  const scoped: FastifyRequest[] = [];
  const app = Fastify();
  await app.register(oncely, {
    store: new MemoryStore(),
    required: true,
    scope: (request) => {
      scoped.push(request);
      return String(request.headers['x-user'] ?? 'anonymous');
    },
    ...options,
  });
  app.post<{ Body: { amount?: number } }>('/orders', async (request, reply) => {
    const n = count('/orders');
    const fail = request.headers['x-fail'];
    if (fail === 'throw') throw new Error('boom');
    if (fail === '500') return reply.code(500).send({ error: 'declined', n });
    if (fail === '503') return reply.code(503).send({ error: 'busy', n });
    const orderId = randomUUID();
    reply.code(201).headers({ location: `/orders/${orderId}`, etag: `"${orderId}"`, 'x-order-id': orderId, 'set-cookie': 'session=secret' });
    return { orderId, amount: request.body.amount, n, downstreamKey: protectedKey() };
  });
  app.post('/slow', async () => {
    count('/slow');
    await sleep(200);
    return { n: randomUUID() };
  });
  app.post('/binary', async (_request, reply) => {
    count('/binary');
    return reply.type('application/octet-stream').send(randomBytes(4096));
  });
  app.post('/stream', async (_request, reply) => {
    count('/stream');
    const chunks = Array.from({ length: 20 }, () => randomBytes(1000));
    return reply.type('application/octet-stream').send(Readable.from(chunks));
  });
  app.post('/web', async () => {
    count('/web');
    return new Response(randomBytes(3000), { status: 202, headers: { 'content-type': 'application/octet-stream', 'x-web': 'yes' } });
  });
  app.post('/big', { config: { idempotency: { maxStoredBytes: 10_000 } } }, async (_request, reply) => {
    count('/big');
    return reply.type('application/octet-stream').send(randomBytes(30_000));
  });
  app.post('/big-stream', { config: { idempotency: { maxStoredBytes: 10_000 } } }, async (_request, reply) => {
    count('/big-stream');
    return reply.type('application/octet-stream').send(Readable.from([randomBytes(8000), randomBytes(8000), randomBytes(8000)]));
  });
  app.post('/broken-stream', async (_request, reply) => {
    count('/broken-stream');
    const body = new Readable({ read() {} });
    body.push(randomBytes(1000));
    setTimeout(() => body.destroy(new Error('disk gone')), 20);
    return reply.type('application/octet-stream').send(body);
  });
  app.register(async (child) => {
    child.post('/nested', async () => ({ n: count('/child/nested') }));
  }, { prefix: '/child' });
  app.post('/search', { config: { idempotency: false } }, async () => ({ n: count('/search'), downstreamKey: protectedKey() }));
  app.post('/optional', { config: { idempotency: { required: false } } }, async () => ({ n: count('/optional'), downstreamKey: protectedKey() }));
  app.post('/fragile', { config: { idempotency: { onThrow: 'store500' } } }, async () => {
    count('/fragile');
    throw new Error('boom');
  });
  const send = (url: string, key: string | string[] | undefined, body: unknown = { amount: 1 }, headers: Record<string, string> = {}) =>
    app.inject({ method: 'POST', url, payload: body as Record<string, unknown>, headers: { ...(key === undefined ? {} : { 'idempotency-key': key }), ...headers } });
  return { app, send, executions: (route: string) => counts.get(route) ?? 0, scoped };
}

describe('oncely (Fastify plugin)', () => {
  it('replays status, body, Location, ETag and X- headers, marks replays, never replays Set-Cookie', async () => {
    const { send, executions } = await shop();
    const key = randomUUID();
    const first = await send('/orders', key, { amount: 5 });
    assert.equal(first.statusCode, 201);
    assert.equal(first.headers['idempotent-replayed'], 'false');
    assert.equal(first.headers['set-cookie'], 'session=secret', 'the first response is sent as the handler made it');
    assert.match(first.json<{ downstreamKey: string }>().downstreamKey, /^[0-9a-f]{64}$/, 'executionContext() works inside the handler');
    const again = await send('/orders', key, { amount: 5 });
    assert.equal(again.statusCode, 201);
    assert.equal(again.body, first.body);
    assert.equal(again.headers['idempotent-replayed'], 'true');
    for (const name of ['location', 'etag', 'x-order-id', 'content-type']) assert.equal(again.headers[name], first.headers[name], name);
    assert.equal(again.headers['set-cookie'], undefined);
    assert.equal(executions('/orders'), 1);
  });

  it('answers 400 problems for a missing key and for two Idempotency-Key lines', async () => {
    const { send, executions } = await shop();
    const missing = await send('/orders', undefined);
    assert.equal(missing.statusCode, 400);
    assert.equal(missing.headers['content-type'], 'application/problem+json');
    assert.equal(missing.json<{ type: string }>().type, 'https://oncely.dev/problems/key-missing');
    const twice = await send('/orders', [randomUUID(), randomUUID()]);
    assert.equal(twice.statusCode, 400);
    assert.equal(twice.json<{ type: string }>().type, 'https://oncely.dev/problems/key-invalid');
    assert.equal(executions('/orders'), 0);
  });

  it('answers 422 for the same key with another body, also while the first runs, and 409 for a duplicate in flight', async () => {
    const { send, executions } = await shop();
    const key = randomUUID();
    const running = send('/slow', key, { amount: 1 });
    await sleep(50);
    assert.equal((await send('/slow', key, { amount: 2 })).statusCode, 422);
    const conflict = await send('/slow', key, { amount: 1 });
    assert.equal(conflict.statusCode, 409);
    assert.equal(conflict.headers['retry-after'], '1');
    assert.equal((await running).statusCode, 200);
    assert.equal((await send('/slow', key, { amount: 2 })).statusCode, 422);
    assert.equal(executions('/slow'), 1, 'a problem response stops the request before the handler');
  });

  it('runs the handler once for 50 concurrent requests with one key over a real port', async () => {
    const { app, executions } = await shop();
    after(() => app.close());
    const base = await app.listen({ port: 0, host: '127.0.0.1' });
    const key = randomUUID();
    const responses = await Promise.all(
      Array.from({ length: 50 }, () => fetch(`${base}/slow`, { method: 'POST', body: '{"amount":1}', headers: { 'content-type': 'application/json', 'idempotency-key': key } })),
    );
    const outcomes = await Promise.all(responses.map(async (response) => `${response.status} ${response.headers.get('idempotent-replayed')} ${await response.text()}`));
    assert.equal(executions('/slow'), 1);
    const first = outcomes.filter((outcome) => outcome.startsWith('200 false '));
    assert.equal(first.length, 1);
    // The rest arrived while it ran (409) or after (a replay of the same body).
    const replay = first[0]?.replace('200 false ', '200 true ');
    assert.deepEqual(outcomes.filter((outcome) => !outcome.startsWith('409 null ') && outcome !== replay), first);
  });

  it('replays Buffer, Node stream and Web Response bodies byte for byte', async () => {
    const { send, executions } = await shop();
    for (const route of ['/binary', '/stream', '/web']) {
      const key = randomUUID();
      const first = await send(route, key);
      const again = await send(route, key);
      assert.equal(again.statusCode, first.statusCode, route);
      assert.ok(again.rawPayload.equals(first.rawPayload), route);
      assert.ok(first.rawPayload.byteLength >= 3000, route);
      assert.equal(again.headers['content-type'], 'application/octet-stream', route);
      assert.equal(again.headers['idempotent-replayed'], 'true', route);
      assert.equal(executions(route), 1, route);
    }
    const key = randomUUID();
    const web = await send('/web', key);
    assert.equal(web.statusCode, 202);
    assert.equal(web.headers['idempotent-replayed'], 'false');
    assert.equal((await send('/web', key)).headers['x-web'], 'yes');
  });

  it('sends a response over maxStoredBytes whole, then answers its retries response-not-replayable', async () => {
    const { send, executions } = await shop();
    for (const [route, size] of [['/big', 30_000], ['/big-stream', 24_000]] as const) {
      const key = randomUUID();
      const first = await send(route, key);
      assert.equal(first.rawPayload.byteLength, size, route);
      const again = await send(route, key);
      assert.equal(again.statusCode, 410, route);
      const problem = again.json<{ type: string; originalStatus: number }>();
      assert.equal(problem.type, 'https://oncely.dev/problems/response-not-replayable');
      assert.equal(problem.originalStatus, 200);
      assert.equal(executions(route), 1, route);
    }
  });

  it('releases the key for a thrown handler and a 503, and replays a returned 500', async () => {
    const { send, executions } = await shop();
    const key = randomUUID();
    assert.equal((await send('/orders', key, { amount: 1 }, { 'x-fail': 'throw' })).statusCode, 500);
    assert.equal((await send('/orders', key, { amount: 1 }, { 'x-fail': '503' })).statusCode, 503);
    assert.equal((await send('/orders', key, { amount: 1 })).statusCode, 201);
    assert.equal(executions('/orders'), 3);

    const declined = randomUUID();
    const first = await send('/orders', declined, { amount: 1 }, { 'x-fail': '500' });
    assert.equal(first.statusCode, 500);
    const again = await send('/orders', declined, { amount: 1 });
    assert.equal(again.statusCode, 500);
    assert.equal(again.body, first.body);
    assert.equal(again.headers['idempotent-replayed'], 'true');
    assert.equal(executions('/orders'), 4);
  });

  it('stores a thrown handler as a 500 problem on a route configured with onThrow store500', async () => {
    const { send, executions } = await shop();
    const key = randomUUID();
    const first = await send('/fragile', key);
    assert.equal(first.statusCode, 500);
    assert.equal(first.headers['content-type'], 'application/problem+json');
    assert.equal(first.headers['idempotent-replayed'], 'false');
    const again = await send('/fragile', key);
    assert.equal(again.statusCode, 500);
    assert.equal(again.body, first.body);
    assert.equal(again.headers['idempotent-replayed'], 'true');
    assert.equal(executions('/fragile'), 1);
  });

  it('stores the response of a handler whose client went away, so the retry replays it', async () => {
    const { app, send, executions } = await shop();
    after(() => app.close());
    const base = await app.listen({ port: 0, host: '127.0.0.1' });
    const key = randomUUID();
    const gone = fetch(`${base}/slow`, { method: 'POST', body: '{"amount":1}', headers: { 'content-type': 'application/json', 'idempotency-key': key }, signal: AbortSignal.timeout(50) });
    await assert.rejects(gone);
    await sleep(300);
    const retry = await send('/slow', key, { amount: 1 });
    assert.equal(retry.statusCode, 200);
    assert.equal(retry.headers['idempotent-replayed'], 'true');
    assert.equal(executions('/slow'), 1);
  });

  it('releases the key when a streamed body breaks off, so a retry runs again', async () => {
    const { app, executions } = await shop();
    after(() => app.close());
    const base = await app.listen({ port: 0, host: '127.0.0.1' });
    const key = randomUUID();
    const post = () => fetch(`${base}/broken-stream`, { method: 'POST', body: '{}', headers: { 'content-type': 'application/json', 'idempotency-key': key } }).then((response) => response.arrayBuffer());
    await assert.rejects(post());
    await sleep(50);
    await assert.rejects(post());
    assert.equal(executions('/broken-stream'), 2);
  });

  it('protects routes of child plugins registered after it', async () => {
    const { send, executions } = await shop();
    const key = randomUUID();
    assert.equal((await send('/child/nested', undefined)).statusCode, 400);
    const first = await send('/child/nested', key);
    assert.equal((await send('/child/nested', key)).body, first.body);
    assert.equal(executions('/child/nested'), 1);
  });

  it('honours per-route opt-out and overrides', async () => {
    const { send, executions } = await shop();
    const key = randomUUID();
    for (let i = 0; i < 2; i++) {
      const search = await send('/search', key);
      assert.equal(search.headers['idempotent-replayed'], undefined);
      assert.equal(search.json<{ downstreamKey?: string }>().downstreamKey, undefined);
    }
    assert.equal(executions('/search'), 2);
    assert.equal((await send('/optional', undefined)).statusCode, 200, 'required: false on this route');
    const first = await send('/optional', key);
    assert.equal((await send('/optional', key)).body, first.body);
    assert.equal(executions('/optional'), 2);
  });

  it('passes the Fastify request to scope, and keys never cross scopes', async () => {
    const { send, executions, scoped } = await shop();
    const key = randomUUID();
    await send('/orders', key, { amount: 1 }, { 'x-user': 'alice' });
    const bob = await send('/orders', key, { amount: 1 }, { 'x-user': 'bob' });
    assert.equal(bob.headers['idempotent-replayed'], 'false');
    assert.equal(executions('/orders'), 2);
    assert.equal(scoped[0]?.routeOptions.url, '/orders');
    assert.equal(typeof scoped[0]?.log.info, 'function');
  });
});

describe('oncely (Fastify plugin): the fingerprint covers the body as sent', () => {
  async function echo(options: Partial<FastifyIdempotencyOptions> = {}, setup: (app: ReturnType<typeof Fastify>) => void = () => {}) {
    let runs = 0;
    const app = Fastify();
    setup(app);
    await app.register(oncely, { store: new MemoryStore(), required: true, ...options });
    app.post('/echo', async (request) => ({ run: ++runs, amount: (request.body as { amount?: unknown } | null)?.amount }));
    const post = (key: string, payload: string | Buffer | Readable, contentType = 'application/json', headers: Record<string, string> = {}) =>
      app.inject({ method: 'POST', url: '/echo', payload, headers: { 'content-type': contentType, 'idempotency-key': key, ...headers } });
    return { app, post, runs: () => runs };
  }

  it('answers 422 for numbers one double cannot tell apart, and replays the same JSON with other key order and whitespace', async () => {
    const { post, runs } = await echo();
    const key = randomUUID();
    assert.equal((await post(key, '{"amount":18446744073709551616,"currency":"eur"}')).statusCode, 200);
    assert.equal((await post(key, '{"amount":18446744073709551617,"currency":"eur"}')).statusCode, 422);
    const retry = await post(key, '{ "currency": "eur",\n  "amount": 18446744073709551616 }');
    assert.equal(retry.headers['idempotent-replayed'], 'true');
    assert.equal(runs(), 1);
  });

  it('answers 422 for the same bytes under another content type', async () => {
    const { app, post } = await echo();
    app.addContentTypeParser('text/plain', { parseAs: 'string' }, (_request, body, done) => done(null, JSON.parse(body as string)));
    const key = randomUUID();
    assert.equal((await post(key, '{"a":1}', 'application/json')).statusCode, 200);
    assert.equal((await post(key, '{"a":1}', 'text/plain')).statusCode, 422);
  });

  it('answers 413 for a body over maxBodyBytes sent without Content-Length, before the handler runs', async () => {
    const { post, runs } = await echo({ maxBodyBytes: 1000 });
    const chunks = Array.from({ length: 3 }, () => Buffer.from(`"${'x'.repeat(598)}"`));
    const body = Readable.from([Buffer.from('['), chunks[0]!, Buffer.from(','), chunks[1]!, Buffer.from(','), chunks[2]!, Buffer.from(']')]);
    const response = await post(randomUUID(), body);
    assert.equal(response.statusCode, 413);
    assert.equal(runs(), 0);
  });

  it('fingerprints what the parser reads after an app hook that decompresses, with Content-Length still checked', async () => {
    const { post, runs } = await echo({}, (app) =>
      app.addHook('preParsing', async (request: FastifyRequest, _reply: FastifyReply, payload: RequestPayload) => {
        if (request.headers['content-encoding'] !== 'gzip') return payload;
        let received = 0;
        payload.on('data', (chunk: Buffer) => (received += chunk.length));
        const inflated = payload.pipe(createGunzip());
        Object.defineProperty(inflated, 'receivedEncodedLength', { get: () => received });
        return inflated;
      }),
    );
    const key = randomUUID();
    const first = await post(key, gzipSync('{"amount":18446744073709551616}'), 'application/json', { 'content-encoding': 'gzip' });
    assert.equal(first.statusCode, 200);
    assert.equal(first.json<{ amount: number }>().amount, 18446744073709551616);
    assert.equal((await post(key, '{ "amount": 18446744073709551616 }')).headers['idempotent-replayed'], 'true', 'the same JSON sent plain');
    assert.equal((await post(key, gzipSync('{"amount":18446744073709551617}'), 'application/json', { 'content-encoding': 'gzip' })).statusCode, 422);
    assert.equal(runs(), 1);
  });

  it('answers a body nested 20,000 levels deep without a 500', async () => {
    const { post } = await echo();
    const deep = `${'['.repeat(20_000)}1${']'.repeat(20_000)}`;
    const response = await post(randomUUID(), deep);
    assert.ok(response.statusCode < 500, `status ${response.statusCode}: ${response.body.slice(0, 200)}`);
  });

  it('leaves the body to a custom fingerprint', async () => {
    const { post, runs } = await echo({ fingerprint: () => 'one' });
    const key = randomUUID();
    await post(key, '{"a":1}');
    assert.equal((await post(key, '{"a":2}')).headers['idempotent-replayed'], 'true');
    assert.equal(runs(), 1);
  });
});
