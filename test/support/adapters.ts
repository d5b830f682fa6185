/**
 * The same `POST /orders` route behind each HTTP adapter, for tests that must hold on every
 * adapter: the fetch handler and Hono called in process, Express and Fastify over real HTTP.
 * Express parses JSON with `express.json()` first, as the README tells users to.
 */
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import express from 'express';
import Fastify from 'fastify';
import { Hono } from 'hono';
import { idempotency as expressIdempotency } from '../../src/http/express/index.js';
import oncelyFastify from '../../src/http/fastify/index.js';
import { withIdempotency } from '../../src/http/fetch/index.js';
import { idempotency as honoIdempotency } from '../../src/http/hono/index.js';
import type { IdempotencyOptions } from '../../src/http/protocol.js';

export type AnyOptions = IdempotencyOptions<never>;

/** The handler's answer; the route sends `body` as JSON with `status`. */
export type Handle = () => { status: number; body: unknown } | Promise<{ status: number; body: unknown }>;

export interface OrderRequest {
  /** The Idempotency-Key; `null` sends none. Default `'k-1'`. */
  key?: string | null;
  body?: string;
  headers?: Record<string, string>;
}

export interface Running {
  send(request?: OrderRequest): Promise<Response>;
  close(): Promise<void>;
}

function order(url: string, { key = 'k-1', body = '{"amount":1}', headers = {} }: OrderRequest = {}): Request {
  return new Request(url, {
    method: 'POST',
    body,
    headers: { 'content-type': 'application/json', ...(key === null ? {} : { 'idempotency-key': key }), ...headers },
  });
}

function inProcess(fetchApp: (request: Request) => Response | Promise<Response>): Running {
  return { send: async (request) => fetchApp(order('http://shop.test/orders', request)), close: async () => undefined };
}

function overHttp(server: Server): Running {
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/orders`;
  return {
    send: (request) => fetch(order(url, request)),
    close: () =>
      new Promise((done) => {
        server.close(() => done());
        server.closeAllConnections();
      }),
  };
}

export const adapters: Record<string, (options: AnyOptions, handle: Handle) => Promise<Running>> = {
  fetch: async (options, handle) =>
    inProcess(
      withIdempotency(async () => {
        const { status, body } = await handle();
        return Response.json(body, { status });
      }, options as IdempotencyOptions<Request>),
    ),
  hono: async (options, handle) => {
    const app = new Hono();
    app.post('/orders', honoIdempotency(options as never), async (c) => {
      const { status, body } = await handle();
      return c.json(body as object, status as 201);
    });
    return inProcess(app.fetch);
  },
  express: async (options, handle) => {
    const app = express();
    app.post('/orders', express.json(), expressIdempotency(options as never), async (_req, res) => {
      const { status, body } = await handle();
      res.status(status).json(body);
    });
    const server = await new Promise<Server>((resolve) => {
      const listening: Server = app.listen(0, '127.0.0.1', () => resolve(listening));
    });
    return overHttp(server);
  },
  fastify: async (options, handle) => {
    const app = Fastify();
    await app.register(oncelyFastify, options as never);
    app.post('/orders', async (_request, reply) => {
      const { status, body } = await handle();
      return reply.code(status).send(body);
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    const running = overHttp(app.server);
    return { send: running.send, close: () => app.close() };
  },
};
