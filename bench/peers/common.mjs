// Shared by the oncely contenders of the peers harness (../../../shared/peers, see its README):
// the harness's own order handler contract, and an oncely store for the harness's store name.
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Redis } from 'ioredis';
import { MemoryStore } from 'oncely';
import { RedisStore } from 'oncely/redis';

// The harness runs with its own folder as the working directory; its lib/common.mjs holds the
// side-effect counters the harness reads, so it must be that very module.
export const harness = await import(pathToFileURL(join(process.env.ONCELY_PEERS_DIR ?? process.cwd(), 'lib/common.mjs')).href);

/** An oncely store for the harness's store name, and how to close what it opened. */
export function storeFor(store, redisUrl) {
  if (store !== 'redis') return { store: new MemoryStore(), close: async () => undefined };
  const client = new Redis(redisUrl);
  return { store: new RedisStore({ client }), close: async () => client.disconnect() };
}
