/**
 * DESIGN §3.9 on every adapter: when the store cannot be reached, nothing runs and the client
 * gets 503 `store-unavailable` (fail closed); with `failOpen` the handler runs unprotected and
 * the observer hears about it. The store is a real RedisStore whose server is unreachable.
 */
import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { after, describe, it } from 'node:test';
import express from 'express';
import Fastify from 'fastify';
import { Hono } from 'hono';
import { Redis } from 'ioredis';
import { idempotency as expressIdempotency } from '../src/http/express/index.js';
import oncelyFastify from '../src/http/fastify/index.js';
import { withIdempotency } from '../src/http/fetch/index.js';
import { idempotency as honoIdempotency } from '../src/http/hono/index.js';
import type { IdempotencyEvent, IdempotencyOptions } from '../src/http/protocol.js';
import { RedisStore } from '../src/stores/redis/index.js';

const deadClient = new Redis('redis://127.0.0.1:1', { lazyConnect: true });
deadClient.on('error', () => undefined);
const store = new RedisStore({ client: deadClient, timeoutMs: 300 });
after(() => deadClient.disconnect());

type Options = Omit<IdempotencyOptions<unknown>, 'store'>;

/** One adapter serving `POST /orders` (201, counting executions): how to send it an order, and how to stop it. */
interface Running {
  send(): Promise<Response>;
  close(): Promise<void>;
}

const order = (url: string) => new Request(url, { method: 'POST', body: '{"amount":1}', headers: { 'content-type': 'application/json', 'idempotency-key': 'k-1' } });

/** A fetch-style app, called in process. */
function inProcess(fetchApp: (request: Request) => Response | Promise<Response>): Running {
  return { send: async () => fetchApp(order('http://shop.test/orders')), close: async () => undefined };
}

/** A Node server, called over HTTP. */
function overHttp(server: Server): Running {
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/orders`;
  return {
    send: () => fetch(order(url)),
    close: () => new Promise((done) => { server.close(() => done()); server.closeAllConnections(); }),
  };
}

const adapters: Record<string, (options: Options, count: () => void) => Promise<Running>> = {
  fetch: async (options, count) => inProcess(withIdempotency(async () => (count(), new Response('{}', { status: 201 })), { store, ...options })),
  hono: async (options, count) => {
    const app = new Hono();
    app.post('/orders', honoIdempotency({ store, ...options }), (c) => (count(), c.json({}, 201)));
    return inProcess(app.fetch);
  },
  express: async (options, count) => {
    const app = express();
    app.post('/orders', express.json(), expressIdempotency({ store, ...options }), (_req, res) => (count(), res.status(201).json({})));
    return overHttp(await new Promise<Server>((resolve) => { const server: Server = app.listen(0, '127.0.0.1', () => resolve(server)); }));
  },
  fastify: async (options, count) => {
    const app = Fastify();
    await app.register(oncelyFastify, { store, ...options });
    app.post('/orders', async (_request, reply) => (count(), reply.code(201).send({})));
    await app.listen({ port: 0, host: '127.0.0.1' });
    const running = overHttp(app.server);
    return { send: running.send, close: () => app.close() };
  },
};

for (const [name, start] of Object.entries(adapters)) {
  describe(`store unreachable: ${name}`, () => {
    it('answers 503 store-unavailable with Retry-After and runs nothing', async () => {
      let runs = 0;
      const events: IdempotencyEvent[] = [];
      const server = await start({ observer: (event) => events.push(event) }, () => runs++);
      try {
        const response = await server.send();
        assert.equal(response.status, 503);
        assert.equal(response.headers.get('retry-after'), '1');
        assert.equal(((await response.json()) as { type: string }).type, 'https://oncely.dev/problems/store-unavailable');
        assert.equal(runs, 0);
        assert.deepEqual(events.map((event) => event.type), ['store_error']);
      } finally {
        await server.close();
      }
    });

    it('with failOpen runs the handler unprotected and tells the observer', async () => {
      let runs = 0;
      const events: IdempotencyEvent[] = [];
      const server = await start({ failOpen: true, observer: (event) => events.push(event) }, () => runs++);
      try {
        const response = await server.send();
        assert.equal(response.status, 201);
        assert.equal(response.headers.get('idempotent-replayed'), null, 'not protected, so not marked');
        assert.equal(runs, 1);
        assert.deepEqual(events.map((event) => event.type === 'store_error' && event.failOpen), [true]);
      } finally {
        await server.close();
      }
    });
  });
}
