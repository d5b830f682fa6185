/**
 * Test helper: builds Redis clients and stores for the contract suite, in the test process
 * and in the child processes of its cross-process race (which call `makeStore()`).
 * `ONCELY_REDIS_CLIENT` picks the library (`ioredis` or `node-redis`, default `ioredis`);
 * `ONCELY_REDIS_PREFIX` the key prefix.
 */
import { Redis } from 'ioredis';
import { createClient } from 'redis';
import { REDIS_URL } from '../../../test/support/services.js';
import { RedisStore, type RedisClient } from './index.js';

export type ClientKind = 'ioredis' | 'node-redis';

/** A connected client plus how to close it; errors are expected in tests, so they are not logged. */
export interface TestClient {
  client: RedisClient;
  close(): Promise<void>;
}

/** An ioredis client as users have it: default offline queue and reconnect retries. */
function ioredisClient(url: string): TestClient {
  const client = new Redis(url);
  client.on('error', () => undefined);
  return { client, close: async () => client.disconnect() };
}

export async function connectClient(kind: ClientKind, url = REDIS_URL): Promise<TestClient> {
  if (kind === 'ioredis') return ioredisClient(url);
  const client = createClient({ url });
  client.on('error', () => undefined);
  await client.connect();
  return { client, close: async () => client.destroy() };
}

/**
 * A client for a closed port, left as users would have it: ioredis with its default offline
 * queue and reconnect retries, node-redis never connected.
 */
export function unreachableClient(kind: ClientKind): TestClient {
  const url = 'redis://127.0.0.1:1';
  if (kind === 'ioredis') return ioredisClient(url);
  const client = createClient({ url });
  client.on('error', () => undefined);
  return { client, close: async () => undefined };
}

/** Removes every key under `prefix`, so a test run leaves nothing behind in a shared Redis. */
export async function removeKeys(prefix: string, url = REDIS_URL): Promise<void> {
  const client = new Redis(url);
  try {
    for await (const keys of client.scanStream({ match: `${prefix}:*`, count: 1000 })) {
      if ((keys as string[]).length > 0) await client.unlink(...(keys as string[]));
    }
  } finally {
    client.disconnect();
  }
}

function kindFromEnv(): ClientKind {
  return process.env.ONCELY_REDIS_CLIENT === 'node-redis' ? 'node-redis' : 'ioredis';
}

/** One store on its own client; the child process exits without closing it. */
export async function makeStore(): Promise<RedisStore> {
  const { client } = await connectClient(kindFromEnv());
  return new RedisStore({ client, prefix: process.env.ONCELY_REDIS_PREFIX ?? 'oncely-contract' });
}
