/**
 * The shared store contract, run twice against the real Redis: once through an ioredis
 * client and once through a node-redis client.
 */
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { after, before, describe } from 'node:test';
import { REDIS_URL, skipUnlessReachable } from '../../../test/support/services.js';
import { storeContract } from '../../testing/index.js';
import { connectClient, removeKeys, unreachableClient, type ClientKind, type TestClient } from './contract-process.js';
import { RedisStore } from './index.js';

const skip = await skipUnlessReachable('Redis', REDIS_URL);
const prefix = `oncely-contract-${randomUUID()}`;
const processModule = fileURLToPath(new URL('./contract-process.ts', import.meta.url));
const clients: TestClient[] = [];

function track(client: TestClient): TestClient {
  clients.push(client);
  return client;
}

after(async () => {
  await Promise.all(clients.map((client) => client.close()));
  if (!skip) await removeKeys(prefix);
});

for (const kind of ['ioredis', 'node-redis'] satisfies ClientKind[]) {
  describe(`RedisStore with ${kind}`, () => {
    let shared: TestClient | undefined;
    // The child processes of the cross-process race read these when they are spawned.
    before(() => {
      process.env.ONCELY_REDIS_CLIENT = kind;
      process.env.ONCELY_REDIS_PREFIX = prefix;
    });

    storeContract(`redis (${kind})`, {
      skip,
      makeStore: async () => {
        shared ??= track(await connectClient(kind));
        return new RedisStore({ client: shared.client, prefix });
      },
      makeUnreachableStore: () => new RedisStore({ client: track(unreachableClient(kind)).client, prefix, timeoutMs: 500 }),
      processModule,
    });
  });
}
