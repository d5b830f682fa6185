/**
 * The exported HTTP conformance suite against every adapter (fetch, Hono, Express, Fastify),
 * each on a real port, over every store on its real server; then the black-box `oncely check`
 * against the same server, which must find no failure. Express 4 and Fastify 4 (installed as
 * `express4` and `fastify4`) run it too, on the memory store: the store is not what differs.
 */
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { Readable } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { serve } from '@hono/node-server';
import express from 'express';
import Fastify, { type FastifyRequest } from 'fastify';
import { Hono } from 'hono';
import type { IdempotencyStore } from '../src/core/types.js';
import { idempotency as expressIdempotency, idempotencyErrors } from '../src/http/express/index.js';
import oncelyFastify from '../src/http/fastify/index.js';
import { withIdempotency } from '../src/http/fetch/index.js';
import { idempotency } from '../src/http/hono/index.js';
import { conformanceHandler, httpConformance } from '../src/testing/index.js';
import { runCli, shown } from './support/cli.js';
import { closeStoresUnderTest, storesUnderTest } from './support/stores.js';

/** Short, so the suite's heartbeat case (a handler running 2.5 leases) stays quick. */
const LEASE_MS = 1000;
/** The test contract's `/orders-wait`. */
const WAIT_MS = 2000;

type App = (request: Request) => Response | Promise<Response>;

/** The test contract with `withIdempotency`, routed by path the way a bare fetch server would. */
function fetchApp(store: IdempotencyStore): App {
  const orders = conformanceHandler();
  const common = { store, leaseMs: LEASE_MS, namespace: 'conformance-fetch' };
  const required = withIdempotency(orders.handle, { ...common, required: true });
  const optional = withIdempotency(orders.handle, { ...common, required: false });
  const waiting = withIdempotency(orders.handle, { ...common, required: true, wait: WAIT_MS });
  return (request) => {
    switch (new URL(request.url).pathname) {
      case '/orders':
        return required(request);
      case '/orders-optional':
        return optional(request);
      case '/orders-wait':
        return waiting(request);
      case '/__executions':
        return orders.handle(request);
      default:
        return new Response('not found', { status: 404 });
    }
  };
}

/** The test contract with the Hono middleware on each route. */
function honoApp(store: IdempotencyStore): App {
  const orders = conformanceHandler();
  const common = { store, leaseMs: LEASE_MS, namespace: 'conformance-hono' };
  const app = new Hono();
  app.all('/orders', idempotency({ ...common, required: true }), (c) => orders.handle(c.req.raw));
  app.post('/orders-optional', idempotency({ ...common, required: false }), (c) => orders.handle(c.req.raw));
  app.post('/orders-wait', idempotency({ ...common, required: true, wait: WAIT_MS }), (c) => orders.handle(c.req.raw));
  app.get('/__executions', (c) => orders.handle(c.req.raw));
  return app.fetch;
}

interface Running {
  url: string;
  close(): Promise<void>;
}

/** The contract handler is fetch-style; Node frameworks hand it a Request made from their parsed request. */
function asRequest(method: string, url: string, headers: Record<string, string | string[] | undefined>, body: unknown): Request {
  const flat = Object.entries(headers).flatMap(([name, value]) => (value === undefined ? [] : [[name, [value].flat().join(', ')] as [string, string]]));
  const hasBody = method !== 'GET' && method !== 'HEAD';
  return new Request(`http://127.0.0.1${url}`, { method, headers: flat, body: hasBody ? JSON.stringify(body ?? {}) : null });
}

// The previous majors at run time, typed as the current ones: the adapters use only APIs both have.
const require = createRequire(import.meta.url);
const express4 = require('express4') as typeof express;
const Fastify4 = require('fastify4') as typeof Fastify;

/** The test contract with the Express middleware on each route (and its error marker). */
async function expressServer(store: IdempotencyStore, express: typeof express4): Promise<Running> {
  const orders = conformanceHandler();
  const common = { store, leaseMs: LEASE_MS, namespace: 'conformance-express' };
  const app = express();
  app.use(express.json({ limit: '16mb' }));
  // Express 4 does not catch a rejected async handler (5 does): pass the error on, as Express 4 apps must.
  const handle: express.RequestHandler = (req, res, next) => {
    orders.handle(asRequest(req.method, req.originalUrl, req.headers, req.body)).then((response) => {
      res.status(response.status);
      for (const [name, value] of response.headers) res.append(name, value);
      if (response.body) Readable.fromWeb(response.body as WebReadableStream).pipe(res);
      else res.end();
    }, next);
  };
  app.all('/orders', expressIdempotency({ ...common, required: true }), handle);
  app.post('/orders-optional', expressIdempotency({ ...common, required: false }), handle);
  app.post('/orders-wait', expressIdempotency({ ...common, required: true, wait: WAIT_MS }), handle);
  app.get('/__executions', handle);
  app.use(idempotencyErrors());
  const server = await new Promise<Server>((resolve) => {
    const listening: Server = app.listen(0, '127.0.0.1', () => resolve(listening));
  });
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise<void>((done, fail) => {
        server.close((error) => (error ? fail(error) : done()));
        server.closeAllConnections();
      }),
  };
}

/** The test contract with the Fastify plugin (and per-route overrides). */
async function fastifyServer(store: IdempotencyStore, Fastify: typeof Fastify4): Promise<Running> {
  const orders = conformanceHandler();
  const app = Fastify({ bodyLimit: 16 * 1024 * 1024 });
  await app.register(oncelyFastify, { store, leaseMs: LEASE_MS, namespace: 'conformance-fastify', required: true });
  const handle = (request: FastifyRequest) => orders.handle(asRequest(request.method, request.url, request.headers, request.body));
  app.route({ method: ['GET', 'POST'], url: '/orders', handler: handle });
  app.post('/orders-optional', { config: { idempotency: { required: false } } }, handle);
  app.post('/orders-wait', { config: { idempotency: { wait: WAIT_MS } } }, handle);
  app.get('/__executions', handle);
  await app.listen({ port: 0, host: '127.0.0.1' });
  return { url: `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`, close: () => app.close() };
}

function listen(fetch: App): Promise<Running> {
  return new Promise((resolve) => {
    const server = serve({ fetch, port: 0, hostname: '127.0.0.1' }, (info: AddressInfo) => {
      resolve({
        url: `http://127.0.0.1:${info.port}`,
        close: () =>
          new Promise<void>((done, fail) => {
            (server as Server).close((error) => (error ? fail(error) : done()));
            (server as Server).closeAllConnections();
          }),
      });
    });
  });
}

interface Adapter {
  name: string;
  start: (store: IdempotencyStore) => Promise<Running>;
  /** Run on the memory store only. */
  memoryOnly?: boolean;
}

const adapters: Adapter[] = [
  { name: 'fetch (withIdempotency)', start: async (store) => listen(fetchApp(store)) },
  { name: 'Hono (idempotency)', start: async (store) => listen(honoApp(store)) },
  { name: 'Express (idempotency)', start: (store) => expressServer(store, express) },
  { name: 'Fastify (oncely plugin)', start: (store) => fastifyServer(store, Fastify) },
  { name: 'Express 4 (idempotency)', start: (store) => expressServer(store, express4), memoryOnly: true },
  { name: 'Fastify 4 (oncely plugin)', start: (store) => fastifyServer(store, Fastify4), memoryOnly: true },
];

async function executions(baseUrl: string): Promise<number> {
  return ((await (await fetch(`${baseUrl}/__executions`)).json()) as { count: number }).count;
}

async function checkFindsNoFailure(baseUrl: string): Promise<void> {
  const before = await executions(baseUrl);
  const run = await runCli(['check', `${baseUrl}/orders`, '--json', '--quiet'], { timeoutMs: 60_000 });
  assert.equal(run.code, 0, shown(run));
  const report = JSON.parse(run.stdout) as { summary: { failed: number; executions: number }; probes: { id: string; verdict: string }[] };
  assert.equal(report.summary.failed, 0);
  assert.equal(report.probes.find((probe) => probe.id === 'concurrent')?.verdict, 'pass', 'concurrent duplicates ran once');
  assert.equal(report.summary.executions, (await executions(baseUrl)) - before, 'inferred executions = counted executions');
}

const stores = await storesUnderTest();
after(closeStoresUnderTest);

for (const storeUnderTest of stores) {
  for (const adapter of adapters) {
    if (adapter.memoryOnly && storeUnderTest.name !== 'memory') continue;
    describe(`${adapter.name} on ${storeUnderTest.name}`, { skip: storeUnderTest.skip }, () => {
      let store: IdempotencyStore | undefined;
      let server: Running | undefined;
      before(async () => {
        store = await storeUnderTest.make();
        server = await adapter.start(store);
      });
      after(async () => {
        await server?.close();
        await store?.close();
      });
      httpConformance({ name: 'HTTP conformance', baseUrl: () => server?.url ?? '', leaseMs: LEASE_MS, waitRoute: true });
      it('passes `oncely check`, which infers as many executions as the handler counted', () => checkFindsNoFailure(server!.url));
    });
  }
}
