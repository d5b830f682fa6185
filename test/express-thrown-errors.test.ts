/**
 * DESIGN §3.5 on Express without `idempotencyErrors()`: a thrown error still reaches `onThrow`.
 * With no error handler of the app's own, Express's default error page is recognised and the key
 * released, on Express 5 and 4. With the app's own error handler and no marker, the 5xx it makes
 * is stored and oncely warns once. Its own file: the warning is once per process, and no test
 * here may mount `idempotencyErrors()` before it.
 */
import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';
import { describe, it } from 'node:test';
import express5 from 'express';
import { idempotency } from '../src/http/express/index.js';
import { MemoryStore } from '../src/stores/memory/index.js';

type Express = typeof express5;
// Express 4 is installed as `express4` (no types of its own): the same API as far as this test goes.
const express4 = createRequire(import.meta.url)('express4') as Express;

async function serve(app: ReturnType<Express>, work: (post: (key: string) => Promise<Response>) => Promise<void>): Promise<void> {
  const server = await new Promise<Server>((resolve) => {
    const listening: Server = app.listen(0, '127.0.0.1', () => resolve(listening));
  });
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/orders`;
  try {
    await work((key) => fetch(url, { method: 'POST', headers: { 'idempotency-key': key, 'content-type': 'application/json' }, body: '{}' }));
  } finally {
    server.closeAllConnections();
    server.close();
  }
}

for (const [version, express] of [['5', express5], ['4', express4]] as const) {
  describe(`Express ${version}: a thrown error without idempotencyErrors()`, () => {
    for (const how of ['sync throw', 'rejected promise']) {
      it(`${how} answered by Express's default error handler releases the key; the retry runs again`, async () => {
        let runs = 0;
        const app = express();
        app.post('/orders', express.json(), idempotency({ store: new MemoryStore() }), (_req, _res, next) => {
          runs++;
          if (how === 'sync throw') throw new Error('card declined by a bug');
          Promise.reject(new Error('card declined by a bug')).catch(next);
        });
        await serve(app, async (post) => {
          const key = randomUUID();
          assert.equal((await post(key)).status, 500);
          const retry = await post(key);
          assert.equal(retry.status, 500);
          assert.equal(retry.headers.get('idempotent-replayed'), 'false', 'ran again, not a replay');
          assert.equal(runs, 2);
        });
      });
    }

    it("Express's 404 for a request no route answered is not stored either", async () => {
      const app = express();
      app.use(express.json(), idempotency({ store: new MemoryStore() }));
      await serve(app, async (post) => {
        const key = randomUUID();
        assert.equal((await post(key)).status, 404);
        assert.equal((await post(key)).headers.get('idempotent-replayed'), 'false');
      });
    });
  });
}

describe('Express: the app has its own error handler and no idempotencyErrors()', () => {
  it('stores its 5xx (it cannot be told from a returned one) and warns once, naming the fix', async () => {
    const warnings: Error[] = [];
    const onWarning = (warning: Error) => warnings.push(warning);
    process.on('warning', onWarning);
    let runs = 0;
    const app = express5();
    app.post('/orders', express5.json(), idempotency({ store: new MemoryStore() }), () => {
      runs++;
      throw new Error('boom');
    });
    app.use(((_error, _req, res, _next) => void res.status(500).json({ error: 'internal' })) as express5.ErrorRequestHandler);
    try {
      await serve(app, async (post) => {
        const key = randomUUID();
        assert.equal((await post(key)).status, 500);
        assert.equal((await post(key)).headers.get('idempotent-replayed'), 'true');
        assert.equal((await post(randomUUID())).status, 500);
        await new Promise((resolve) => setImmediate(resolve));
      });
    } finally {
      process.off('warning', onWarning);
    }
    assert.equal(runs, 2);
    const ours = warnings.filter((warning) => (warning as { code?: string }).code === 'ONCELY_UNMARKED_5XX');
    assert.equal(ours.length, 1);
    assert.match(ours[0]!.message, /idempotencyErrors\(\)/);
  });
});
