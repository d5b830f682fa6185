// oncely's Express adapter as a contender of the peers harness: node run.mjs --plugin <this file>
import express from 'express';
import { idempotency, idempotencyErrors } from 'oncely/express';
import { harness, storeFor } from './common.mjs';

export const meta = { name: 'oncely (express)', packages: ['oncely', 'express'], stores: ['memory', 'redis'] };

export async function createServer({ store, port, redisUrl }) {
  await harness.connectCounter();
  const records = storeFor(store, redisUrl);
  const app = express();
  app.use(express.json({ limit: harness.BODY_LIMIT }));
  app.post('/orders', idempotency({ store: records.store }), async (req, res) => {
    harness.sendExpress(res, await harness.placeOrder(req.body, harness.controls(req.headers)));
  });
  // Tells oncely a handler threw (the key is released) rather than returned a 500 (stored).
  app.use(idempotencyErrors());
  const server = await new Promise((resolve) => {
    const s = app.listen(port, '127.0.0.1', () => resolve(s));
  });
  return {
    async close() {
      await harness.closeHttpServer(server);
      await records.close();
      await harness.closeCounter();
    },
  };
}
