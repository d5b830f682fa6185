// oncely's Fastify plugin as a contender of the peers harness: node run.mjs --plugin <this file>
import Fastify from 'fastify';
import oncely from 'oncely/fastify';
import { harness, storeFor } from './common.mjs';

export const meta = { name: 'oncely (fastify)', packages: ['oncely', 'fastify'], stores: ['memory', 'redis'] };

export async function createServer({ store, port, redisUrl }) {
  await harness.connectCounter();
  const records = storeFor(store, redisUrl);
  const app = Fastify({ bodyLimit: harness.BODY_LIMIT, logger: false });
  await app.register(oncely, { store: records.store });
  app.post('/orders', async (req, reply) => {
    const result = await harness.placeOrder(req.body, harness.controls(req.headers));
    reply.code(result.status).headers(result.headers || {});
    return result.body;
  });
  await app.listen({ port, host: '127.0.0.1' });
  return {
    async close() {
      await app.close();
      await records.close();
      await harness.closeCounter();
    },
  };
}
