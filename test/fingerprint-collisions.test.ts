/**
 * The fingerprint never makes two different requests equal (DESIGN §1), through every adapter:
 * bodies that once collided (numbers past a double's precision, invalid UTF-8, one body under
 * two content types) get 422 `key-reused`, never the other's response; a retry that writes
 * the same JSON differently (member order, whitespace) is replayed; JSON nested 20,000
 * levels deep is fingerprinted, never a 500.
 *
 * Express behind `express.json()` has only the parsed body: there two bodies the parser makes
 * equal are one request to the handler (the README's fingerprint paragraph), and that
 * contract is what is checked for them.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import express, { type RequestHandler } from 'express';
import Fastify from 'fastify';
import { Hono } from 'hono';
import { idempotency as expressIdempotency } from '../src/http/express/index.js';
import oncely from '../src/http/fastify/index.js';
import { withIdempotency } from '../src/http/fetch/index.js';
import { idempotency as honoIdempotency } from '../src/http/hono/index.js';
import { MemoryStore } from '../src/stores/memory/index.js';

interface Answer {
  status: number;
  replayed: string | null;
  type: string | undefined;
}

interface Adapter {
  name: string;
  /** Express behind express.json(): the handler gets the parsed body, and so does the fingerprint. */
  parsed: boolean;
  post(key: string, body: Buffer, contentType: string): Promise<Answer>;
  runs(): number;
}

async function answer(response: Response): Promise<Answer> {
  const text = await response.text();
  const type = response.headers.get('content-type') === 'application/problem+json' ? (JSON.parse(text) as { type: string }).type : undefined;
  return { status: response.status, replayed: response.headers.get('idempotent-replayed'), type };
}

function counter() {
  let runs = 0;
  return { run: () => ++runs, runs: () => runs };
}

const cleanups: (() => Promise<unknown>)[] = [];
after(() => Promise.all(cleanups.map((cleanup) => cleanup())));

async function expressAdapter(name: string, parser: RequestHandler[]): Promise<Adapter> {
  const { run, runs } = counter();
  const app = express();
  // The handler answers without echoing the body: a deep body is oncely's to survive, not the handler's.
  app.post('/orders', ...parser, expressIdempotency({ store: new MemoryStore(), required: true }), (_req, res) => void res.status(201).json({ run: run() }));
  const server = app.listen(0, '127.0.0.1');
  cleanups.push(() => new Promise((resolve) => server.close(resolve)));
  await new Promise((resolve) => server.once('listening', resolve));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    name,
    parsed: parser.length > 0,
    runs,
    post: async (key, body, contentType) => answer(await fetch(`${base}/orders`, { method: 'POST', body, headers: { 'content-type': contentType, 'idempotency-key': key } })),
  };
}

async function fastifyAdapter(): Promise<Adapter> {
  const { run, runs } = counter();
  const app = Fastify();
  // Text bodies are parsed as JSON too, so that one body under two content types reaches the handler both ways.
  app.addContentTypeParser('text/plain', { parseAs: 'string' }, (_request, body, done) => {
    try {
      done(null, JSON.parse(body as string));
    } catch (error) {
      done(error as Error);
    }
  });
  await app.register(oncely, { store: new MemoryStore(), required: true });
  app.post('/orders', async (_request, reply) => reply.code(201).send({ run: run() }));
  cleanups.push(() => app.close());
  return {
    name: 'Fastify',
    parsed: false,
    runs,
    async post(key, body, contentType) {
      const response = await app.inject({ method: 'POST', url: '/orders', payload: body, headers: { 'content-type': contentType, 'idempotency-key': key } });
      const type = response.headers['content-type'] === 'application/problem+json' ? response.json<{ type: string }>().type : undefined;
      return { status: response.statusCode, replayed: (response.headers['idempotent-replayed'] as string | undefined) ?? null, type };
    },
  };
}

function honoAdapter(): Adapter {
  const { run, runs } = counter();
  const app = new Hono();
  app.post('/orders', honoIdempotency({ store: new MemoryStore(), required: true }), (c) => c.json({ run: run() }, 201));
  return {
    name: 'Hono',
    parsed: false,
    runs,
    post: async (key, body, contentType) => answer(await app.request('/orders', { method: 'POST', body, headers: { 'content-type': contentType, 'idempotency-key': key } })),
  };
}

function fetchAdapter(): Adapter {
  const { run, runs } = counter();
  const handler = withIdempotency(() => Response.json({ run: run() }, { status: 201 }), { store: new MemoryStore(), required: true });
  return {
    name: 'fetch handler',
    parsed: false,
    runs,
    post: async (key, body, contentType) => answer(await handler(new Request('http://localhost/orders', { method: 'POST', body, headers: { 'content-type': contentType, 'idempotency-key': key } }))),
  };
}

const JSON_TYPE = 'application/json';
const latin1 = (text: string) => Buffer.from(text, 'latin1');

/** Two requests that once got one fingerprint. `parserMerges`: JSON.parse (after lossy UTF-8 decoding) makes them equal. */
const COLLISIONS = [
  { name: 'integers past a double', first: '{"amount":18446744073709551616}', second: '{"amount":18446744073709551617}', parserMerges: true },
  { name: 'decimals past a double', first: '{"amount":0.1}', second: '{"amount":0.10000000000000000001}', parserMerges: true },
  { name: 'a bare number past a double', first: '0.1', second: '0.10000000000000000001', parserMerges: true },
  { name: 'invalid UTF-8', first: latin1('{"a":"\xff"}'), second: latin1('{"a":"\xfe"}'), parserMerges: true },
  { name: 'one body under two content types', first: '{"a":1}', second: '{"a":1}', secondType: 'text/plain', parserMerges: false },
].map((collision) => ({ ...collision, first: Buffer.from(collision.first), second: Buffer.from(collision.second), secondType: collision.secondType ?? JSON_TYPE }));

const DEPTH = 20_000;
const DEEP_BODIES = {
  arrays: `${'['.repeat(DEPTH)}1${']'.repeat(DEPTH)}`,
  objects: `${'{"a":'.repeat(DEPTH)}1${'}'.repeat(DEPTH)}`,
};

describe('the request fingerprint through every adapter', () => {
  const adapters: Adapter[] = [];
  before(async () => {
    adapters.push(
      await expressAdapter('Express 5 without a body parser', []),
      await expressAdapter('Express 5 with express.json()', [express.json({ limit: '1mb' })]),
      await fastifyAdapter(),
      honoAdapter(),
      fetchAdapter(),
    );
  });

  it('answers 422 key-reused to a colliding second body, never the first one\'s response', async () => {
    for (const adapter of adapters) {
      for (const collision of COLLISIONS) {
        // express.json() is strict: a bare number is refused (400) before oncely sees it.
        if (adapter.parsed && collision.first[0] !== 0x7b) continue;
        const label = `${adapter.name}: ${collision.name}`;
        const key = randomUUID();
        const runs = adapter.runs();
        assert.equal((await adapter.post(key, collision.first, JSON_TYPE)).status, 201, label);
        const second = await adapter.post(key, collision.second, collision.secondType);
        if (adapter.parsed && collision.parserMerges) {
          // The handler would get an equal body: the replay is what it would have answered.
          const parse = (body: Buffer) => JSON.parse(new TextDecoder().decode(body)) as unknown;
          assert.deepEqual(parse(collision.second), parse(collision.first), label);
          assert.equal(second.replayed, 'true', label);
        } else {
          assert.equal(second.status, 422, label);
          assert.equal(second.type, 'https://oncely.dev/problems/key-reused', label);
          assert.equal(second.replayed, null, label);
        }
        assert.equal(adapter.runs(), runs + 1, label);
      }
    }
  });

  it('replays a retry that writes the same JSON with other member order and whitespace', async () => {
    const first = Buffer.from('{"amount":18446744073709551616,"currency":"eur","items":[{"sku":"a","qty":1},{"qty":2,"sku":"b"}],"note":"caf\u00e9"}');
    const retry = Buffer.from('{\n  "note": "caf\\u00e9",\n  "items": [ { "qty": 1, "sku": "a" }, { "sku": "b", "qty": 2 } ],\n  "currency": "eur", "amount": 18446744073709551616\n}\n');
    for (const adapter of adapters) {
      const key = randomUUID();
      const runs = adapter.runs();
      const answers = [await adapter.post(key, first, JSON_TYPE), await adapter.post(key, retry, JSON_TYPE), await adapter.post(key, first, 'Application/JSON')];
      assert.deepEqual(
        answers.map(({ status, replayed }) => `${status} ${replayed}`),
        ['201 false', '201 true', '201 true'],
        adapter.name,
      );
      assert.equal(adapter.runs(), runs + 1, adapter.name);
    }
  });

  it('fingerprints JSON nested 20,000 levels deep: never a 500, and a retry replays', async () => {
    for (const adapter of adapters) {
      for (const [shape, text] of Object.entries(DEEP_BODIES)) {
        const label = `${adapter.name}: ${shape}`;
        const key = randomUUID();
        const first = await adapter.post(key, Buffer.from(text), JSON_TYPE);
        assert.ok(first.status < 500, `${label}: ${first.status}`);
        const retry = await adapter.post(key, Buffer.from(text), JSON_TYPE);
        assert.ok(retry.status < 500, `${label}: ${retry.status}`);
        if (first.status === 201) assert.equal(retry.replayed, 'true', label);
      }
    }
  });
});
