/**
 * Test helper: Redis Cluster clients and stores for the cluster contract suite, in the test
 * process and in the child processes of its cross-process race (which call `makeStore()`).
 * `ONCELY_REDIS_CLUSTER_PORTS` lists the nodes' loopback ports (comma-separated),
 * `ONCELY_REDIS_CLIENT` picks the library (`ioredis` or `node-redis`, default `ioredis`),
 * `ONCELY_REDIS_PREFIX` the key prefix.
 */
import { Cluster } from 'ioredis';
import { createCluster } from 'redis';
import type { ClientKind, TestClient } from './contract-process.js';
import { RedisStore, type RedisClient } from './index.js';

/** An ioredis `Cluster` as users have it: default offline queue and retries. */
function ioredisCluster(ports: number[]): TestClient {
  const client = new Cluster(ports.map((port) => ({ host: '127.0.0.1', port })));
  client.on('error', () => undefined);
  return { client, close: async () => client.disconnect() };
}

export async function connectCluster(kind: ClientKind, ports: number[]): Promise<TestClient> {
  if (kind === 'ioredis') return ioredisCluster(ports);
  const client = createCluster({ rootNodes: ports.map((port) => ({ url: `redis://127.0.0.1:${port}` })) });
  client.on('error', () => undefined);
  await client.connect();
  return { client: client as unknown as RedisClient, close: async () => client.destroy() };
}

/** A cluster client whose only seed is a closed port; node-redis never connected. */
export function unreachableCluster(kind: ClientKind): TestClient {
  if (kind === 'ioredis') return ioredisCluster([1]);
  const client = createCluster({ rootNodes: [{ url: 'redis://127.0.0.1:1' }] });
  client.on('error', () => undefined);
  return { client: client as unknown as RedisClient, close: async () => undefined };
}

export function portsFromEnv(): number[] {
  return (process.env.ONCELY_REDIS_CLUSTER_PORTS ?? '').split(',').filter(Boolean).map(Number);
}

/** One store on its own cluster client; the child process exits without closing it. */
export async function makeStore(): Promise<RedisStore> {
  const kind: ClientKind = process.env.ONCELY_REDIS_CLIENT === 'node-redis' ? 'node-redis' : 'ioredis';
  const { client } = await connectCluster(kind, portsFromEnv());
  return new RedisStore({ client, prefix: process.env.ONCELY_REDIS_PREFIX ?? 'oncely-cluster' });
}
