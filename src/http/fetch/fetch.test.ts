import assert from 'node:assert/strict';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { Agent, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { getRequestListener } from '@hono/node-server';
import { executionContext } from '../../core/execution-context.js';
import { MemoryStore } from '../../stores/memory/index.js';
import type { IdempotencyEvent } from '../protocol.js';
import { endlessBody, upload, within } from '../../../test/support/uploads.js';
import { withIdempotency } from './index.js';

/** The downstream key when the handler runs protected; undefined when it was let through. */
function protectedKey(): string | undefined {
  try {
    return executionContext().downstreamKey;
  } catch {
    return undefined;
  }
}

function orders() {
  let executions = 0;
  const handler = async (request: Request) => {
    executions++;
    const body = (request.method === 'GET' ? {} : await request.json()) as { amount?: number };
    const fail = request.headers.get('x-fail');
    if (fail === 'throw') throw new Error('boom');
    const orderId = randomUUID();
    return new Response(JSON.stringify({ orderId, amount: body.amount, downstreamKey: protectedKey() }), {
      status: fail === '503' ? 503 : 201,
      headers: { 'content-type': 'application/json', location: `/orders/${orderId}`, 'set-cookie': 'session=secret', 'x-order-id': orderId },
    });
  };
  return { handler, executions: () => executions };
}

const post = (key: string | undefined, body: unknown, headers: Record<string, string> = {}) =>
  new Request('http://shop.test/orders', { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json', ...(key === undefined ? {} : { 'idempotency-key': key }), ...headers } });

describe('withIdempotency (fetch handlers)', () => {
  it('replays the first response with its headers, marks replays, and never replays Set-Cookie', async () => {
    const { handler, executions } = orders();
    const endpoint = withIdempotency(handler, { store: new MemoryStore(), required: true });
    const key = randomUUID();
    const first = await endpoint(post(key, { amount: 5 }));
    const firstBody = await first.text();
    assert.equal(first.status, 201);
    assert.equal(first.headers.get('idempotent-replayed'), 'false');
    assert.equal(first.headers.get('set-cookie'), 'session=secret', 'the first response is sent as the handler made it');
    const again = await endpoint(post(key, { amount: 5 }));
    assert.equal(again.status, 201);
    assert.equal(await again.text(), firstBody);
    assert.equal(again.headers.get('idempotent-replayed'), 'true');
    assert.equal(again.headers.get('location'), first.headers.get('location'));
    assert.equal(again.headers.get('x-order-id'), first.headers.get('x-order-id'));
    assert.equal(again.headers.get('set-cookie'), null);
    assert.equal(executions(), 1);
    assert.match(JSON.parse(firstBody).downstreamKey, /^[0-9a-f]{64}$/, 'executionContext() works inside the handler');
  });

  it('answers problems for a missing key, a reused key and a request in flight', async () => {
    const store = new MemoryStore();
    const slow = withIdempotency(async (request) => { await sleep(100); return new Response(await request.text(), { status: 201 }); }, { store, required: true });
    const missing = await slow(post(undefined, {}));
    assert.equal(missing.status, 400);
    assert.equal(missing.headers.get('content-type'), 'application/problem+json');
    assert.equal(((await missing.json()) as { type: string }).type, 'https://oncely.dev/problems/key-missing');
    const key = randomUUID();
    const running = slow(post(key, { amount: 1 }));
    await sleep(10);
    const conflict = await slow(post(key, { amount: 1 }));
    assert.equal(conflict.status, 409);
    assert.equal(conflict.headers.get('retry-after'), '1');
    const reused = await slow(post(key, { amount: 2 }));
    assert.equal(reused.status, 422, 'a different body is refused even while the first runs');
    assert.equal((await running).status, 201);
  });

  it('releases the key when the handler throws or answers a transient status, so a retry runs again', async () => {
    const { handler, executions } = orders();
    const endpoint = withIdempotency(handler, { store: new MemoryStore() });
    const key = randomUUID();
    await assert.rejects(endpoint(post(key, { amount: 1 }, { 'x-fail': 'throw' })), /boom/);
    assert.equal((await endpoint(post(key, { amount: 1 }, { 'x-fail': '503' }))).status, 503);
    assert.equal((await endpoint(post(key, { amount: 1 }))).status, 201);
    assert.equal(executions(), 3);
  });

  it('stores a thrown handler as a 500 problem with onThrow store500', async () => {
    const { handler, executions } = orders();
    const endpoint = withIdempotency(handler, { store: new MemoryStore(), onThrow: 'store500' });
    const key = randomUUID();
    const first = await endpoint(post(key, { amount: 1 }, { 'x-fail': 'throw' }));
    assert.equal(first.status, 500);
    const again = await endpoint(post(key, { amount: 1 }));
    assert.equal(again.status, 500);
    assert.equal(again.headers.get('idempotent-replayed'), 'true');
    assert.equal(executions(), 1);
  });

  it('sends a response over maxStoredBytes whole, and answers its retries response-not-replayable', async () => {
    const payload = randomBytes(300_000);
    let executions = 0;
    const endpoint = withIdempotency(async () => { executions++; return new Response(payload, { status: 201, headers: { 'content-type': 'application/octet-stream' } }); }, { store: new MemoryStore(), maxStoredBytes: 100_000 });
    const key = randomUUID();
    const first = await endpoint(post(key, {}));
    assert.ok(Buffer.from(await first.arrayBuffer()).equals(payload));
    const again = await endpoint(post(key, {}));
    assert.equal(again.status, 410);
    const problem = (await again.json()) as { type: string; originalStatus: number };
    assert.equal(problem.type, 'https://oncely.dev/problems/response-not-replayable');
    assert.equal(problem.originalStatus, 201);
    assert.equal(executions, 1);
  });

  it('fails closed with 503 when the store is down, or runs unprotected with failOpen, telling the observer', async () => {
    const events: IdempotencyEvent[] = [];
    const full = new MemoryStore({ maxRecords: 1 });
    await full.claim({ id: 'a'.repeat(64), fingerprint: 'f', leaseMs: 60_000 });
    const { handler, executions } = orders();
    const closed = withIdempotency(handler, { store: full, observer: (event) => events.push(event) });
    const refused = await closed(post(randomUUID(), { amount: 1 }));
    assert.equal(refused.status, 503);
    assert.equal(executions(), 0);
    const open = withIdempotency(handler, { store: full, failOpen: true, observer: (event) => events.push(event) });
    assert.equal((await open(post(randomUUID(), { amount: 1 }))).status, 201);
    assert.equal(executions(), 1);
    assert.deepEqual(events.map((event) => event.type === 'store_error' && event.failOpen), [false, true]);
  });

  it('fingerprints the query string and replays encoded bodies with their Content-Encoding', async () => {
    let executions = 0;
    const endpoint = withIdempotency(async () => {
      executions++;
      return new Response(new Uint8Array([0x1f, 0x8b, 1]), { status: 201, headers: { 'content-encoding': 'gzip', 'content-disposition': 'attachment' } });
    }, { store: new MemoryStore() });
    const key = randomUUID();
    const at = (query: string) => new Request(`http://shop.test/orders${query}`, { method: 'POST', body: '{}', headers: { 'content-type': 'application/json', 'idempotency-key': key } });
    await endpoint(at('?dry_run=1'));
    assert.equal((await endpoint(at('?dry_run=0'))).status, 422);
    const replay = await endpoint(at('?dry_run=1'));
    assert.equal(replay.headers.get('content-encoding'), 'gzip');
    assert.equal(replay.headers.get('content-disposition'), 'attachment');
    assert.equal(executions, 1);
  });

  it('fingerprints the chosen headers, or uses a custom fingerprint', async () => {
    const store = new MemoryStore();
    const ok = async () => new Response('{}', { status: 201 });
    const byTenantHeader = withIdempotency(ok, { store, namespace: 'headers', fingerprintHeaders: ['X-Currency'] });
    const key = randomUUID();
    assert.equal((await byTenantHeader(post(key, { amount: 1 }, { 'x-currency': 'EUR' }))).status, 201);
    assert.equal((await byTenantHeader(post(key, { amount: 1 }, { 'x-currency': 'USD' }))).status, 422, 'another value of a fingerprinted header');
    assert.equal((await byTenantHeader(post(key, { amount: 1 }, { 'x-currency': 'EUR', 'x-other': '1' }))).headers.get('idempotent-replayed'), 'true');
    const byOrderId = withIdempotency(ok, { store, namespace: 'custom', fingerprint: async (request) => ((await request.clone().json()) as { orderId: string }).orderId });
    const other = randomUUID();
    await byOrderId(post(other, { orderId: 'o-1', note: 'first' }));
    assert.equal((await byOrderId(post(other, { orderId: 'o-1', note: 'changed' }))).headers.get('idempotent-replayed'), 'true', 'only the custom fingerprint counts');
    assert.equal((await byOrderId(post(other, { orderId: 'o-2' }))).status, 422);
  });

  it('lets GET and key-less requests on an optional route through untouched', async () => {
    const { handler, executions } = orders();
    const endpoint = withIdempotency(handler, { store: new MemoryStore() });
    const key = randomUUID();
    for (let i = 0; i < 2; i++) {
      const get = await endpoint(new Request('http://shop.test/orders', { method: 'GET', headers: { 'idempotency-key': key } }));
      assert.equal(get.headers.get('idempotent-replayed'), null);
      assert.equal(((await get.json()) as { downstreamKey?: string }).downstreamKey, undefined);
    }
    const keyless = await endpoint(post(undefined, { amount: 1 }));
    assert.equal(keyless.status, 201);
    assert.equal(keyless.headers.get('idempotent-replayed'), null);
    assert.equal(executions(), 3);
  });
});

/** Compiles only when `A` and `B` are the same type: the type-level assertions below are checked by tsc. */
const sameType = <A, B>(proof: (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false) => proof;

/** A subclass of Request as Next.js hands route handlers (`NextRequest`). */
class NextRequest extends Request {
  get nextUrl(): URL {
    return new URL(this.url);
  }
}

describe('withIdempotency passes the arguments after the request on', () => {
  interface Env {
    TENANT: string;
  }
  interface Ctx {
    waitUntil(promise: Promise<unknown>): void;
  }

  it('to the handler on every path, and to scope and fingerprint (Workers: env, ctx)', async () => {
    const seen: unknown[][] = [];
    const endpoint = withIdempotency(
      async (request: Request, env: Env, ctx: Ctx) => {
        seen.push([request.method, env, ctx]);
        return new Response('{}', { status: 201 });
      },
      {
        store: new MemoryStore(),
        scope: (_request, env) => (seen.push(['scope', env]), env.TENANT),
        fingerprint: (request, env, ctx) => (seen.push(['fingerprint', env, ctx]), request.method),
      },
    );
    sameType<Parameters<typeof endpoint>, [Request, Env, Ctx]>(true);
    const env: Env = { TENANT: 't-1' };
    const ctx: Ctx = { waitUntil: () => undefined };
    const key = randomUUID();
    assert.equal((await endpoint(post(key, {}), env, ctx)).headers.get('idempotent-replayed'), 'false');
    assert.equal((await endpoint(post(key, {}), env, ctx)).headers.get('idempotent-replayed'), 'true');
    await endpoint(post(undefined, {}), env, ctx);
    await endpoint(new Request('http://shop.test/orders'), env, ctx);
    assert.deepEqual(seen, [
      ['scope', env], ['fingerprint', env, ctx], ['POST', env, ctx], // executed
      ['scope', env], ['fingerprint', env, ctx], // replayed
      ['POST', env, ctx], // no key: passed through
      ['GET', env, ctx], // not a protected method: passed through
    ]);
  });

  it("keeps a typed Next.js handler's types and hands it the very request it was given", async () => {
    type RouteContext = { params: Promise<{ id: string }> };
    let received: [NextRequest, string] | undefined;
    const POST = withIdempotency(async (request: NextRequest, { params }: RouteContext) => {
      received = [request, `${request.nextUrl.pathname} ${(await params).id} ${await request.text()}`];
      return Response.json({ ok: true }, { status: 201 });
    }, { store: new MemoryStore(), required: true, scope: (request, { params }) => params.then(({ id }) => `${request.nextUrl.host}/${id}`) });
    sameType<Parameters<typeof POST>, [NextRequest, RouteContext]>(true);
    sameType<ReturnType<typeof POST>, Promise<Response>>(true);
    // @ts-expect-error the route context is required, as the handler says
    const _withoutContext: (request: NextRequest) => Promise<Response> = POST;
    // @ts-expect-error a plain Request is not the NextRequest the handler asks for
    const _plainRequest: (request: Request, context: RouteContext) => Promise<Response> = POST;
    const request = new NextRequest('http://shop.test/orders/o-1', { method: 'POST', body: '{"amount":1}', headers: { 'content-type': 'application/json', 'idempotency-key': randomUUID() } });
    assert.equal((await POST(request, { params: Promise.resolve({ id: 'o-1' }) })).status, 201);
    assert.equal(received?.[0], request, 'the same NextRequest object, not a copy');
    assert.equal(received?.[1], '/orders/o-1 o-1 {"amount":1}');
  });
});

describe('withIdempotency and request bodies without Content-Length', () => {
  const MAX_BODY = 64 * 1024;
  const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');

  function echo() {
    let executions = 0;
    const endpoint = withIdempotency(async (request: Request) => {
      executions++;
      const body = new Uint8Array(await request.arrayBuffer());
      return Response.json({ bytes: body.byteLength, sha256: sha256(body) }, { status: 201 });
    }, { store: new MemoryStore(), required: true, maxBodyBytes: MAX_BODY });
    return { endpoint, executions: () => executions };
  }

  it('answers 413 at once over real HTTP to a chunked body and to a slow endless one, and lets the connection go', { timeout: 20_000 }, async () => {
    const { endpoint, executions } = echo();
    const server = createServer(getRequestListener(endpoint));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    const agent = new Agent({ keepAlive: true });
    const headers = { 'content-type': 'application/octet-stream', 'idempotency-key': randomUUID() };
    try {
      const chunked = await within(2000, 'answer to a chunked body', upload(port, agent, '/orders', headers, randomBytes(8 * 1024), 16, 0));
      assert.equal(chunked.status, 413);
      assert.equal(JSON.parse(chunked.body).type, 'https://oncely.dev/problems/body-too-large');

      const slow = await within(2000, 'answer to a slow endless body', upload(port, agent, '/orders', { ...headers, 'idempotency-key': randomUUID() }, randomBytes(4 * 1024), Infinity, 5));
      assert.equal(slow.status, 413);
      await within(2000, 'close of the connection the client keeps sending on', slow.closed);
      assert.equal(executions(), 0, 'the handler never ran');

      const piece = randomBytes(4096);
      const whole = await within(2000, 'answer to a body at the limit', upload(port, agent, '/orders', { ...headers, 'idempotency-key': randomUUID() }, piece, MAX_BODY / 4096, 1));
      assert.equal(whole.status, 201);
      assert.deepEqual(JSON.parse(whole.body), { bytes: MAX_BODY, sha256: sha256(Buffer.concat(Array(MAX_BODY / 4096).fill(piece))) }, 'the handler read the whole body');
    } finally {
      agent.destroy();
      server.closeAllConnections();
      server.close();
    }
  });

  it('answers 413 to an endless ReadableStream body, reading no more than the limit and releasing the stream', { timeout: 10_000 }, async () => {
    const { endpoint, executions } = echo();
    const chunk = 16 * 1024;
    const { stream, source } = endlessBody(chunk);
    const request = new Request('http://shop.test/orders', { method: 'POST', body: stream, duplex: 'half', headers: { 'idempotency-key': randomUUID() } });
    const response = await within(2000, 'answer', endpoint(request));
    assert.equal(response.status, 413);
    assert.equal(executions(), 0);
    assert.ok(source.pulled <= MAX_BODY + 2 * chunk, `read ${source.pulled} bytes for a limit of ${MAX_BODY} (allowed: the chunk that crossed it and one read ahead)`);
    await source.cancelled;

    const body = randomBytes(MAX_BODY);
    const streamed = new ReadableStream<Uint8Array>({
      start(controller) {
        for (let at = 0; at < body.byteLength; at += 1000) controller.enqueue(body.subarray(at, at + 1000));
        controller.close();
      },
    });
    const whole = await endpoint(new Request('http://shop.test/orders', { method: 'POST', body: streamed, duplex: 'half', headers: { 'idempotency-key': randomUUID() } }));
    assert.deepEqual(await whole.json(), { bytes: MAX_BODY, sha256: sha256(body) }, 'a streamed body within the limit reaches the handler whole');
  });
});
