/**
 * The store contract on a real Redis Cluster (3 masters started for this file), through an
 * ioredis `Cluster` and a node-redis `createCluster()` client; plus where records land
 * (one slot per record, spread over the nodes) and settle wake-ups across clients and nodes.
 * The contract's operator cases (`stats()`, `findByKey()`, `forceRelease()`) run too: the
 * scans visit every master.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { skipUnlessRedisServer, startRedisCluster, type RedisCluster } from '../../../test/support/redis-cluster.js';
import { randomId, storeContract } from '../../testing/index.js';
import { connectCluster, unreachableCluster } from './cluster-process.js';
import type { ClientKind, TestClient } from './contract-process.js';
import { RedisStore } from './index.js';

const skip = await skipUnlessRedisServer();
const prefix = `oncely-cluster-${randomUUID()}`;
const processModule = fileURLToPath(new URL('./cluster-process.ts', import.meta.url));
const FP = 'a'.repeat(64);
let cluster: RedisCluster | undefined;
const clients: TestClient[] = [];

async function connect(kind: ClientKind): Promise<TestClient> {
  const client = await connectCluster(kind, cluster!.ports);
  clients.push(client);
  return client;
}

before(async () => {
  if (skip) return;
  cluster = await startRedisCluster();
  process.env.ONCELY_REDIS_CLUSTER_PORTS = cluster.ports.join(',');
  process.env.ONCELY_REDIS_PREFIX = prefix;
}, { timeout: 30_000 });

after(async () => {
  await Promise.all(clients.map((client) => client.close()));
  await cluster?.stop();
});

for (const kind of ['ioredis', 'node-redis'] satisfies ClientKind[]) {
  describe(`RedisStore on a Redis Cluster with ${kind}`, () => {
    let shared: TestClient | undefined;
    // The child processes of the cross-process race read this when they are spawned.
    before(() => {
      process.env.ONCELY_REDIS_CLIENT = kind;
    });

    storeContract(`redis cluster (${kind})`, {
      skip,
      makeStore: async () => {
        shared ??= await connect(kind);
        return new RedisStore({ client: shared.client, prefix });
      },
      makeUnreachableStore: () => {
        const unreachable = unreachableCluster(kind);
        clients.push(unreachable);
        return new RedisStore({ client: unreachable.client, prefix, timeoutMs: 500 });
      },
      processModule,
    });
  });
}

describe('RedisStore on a Redis Cluster', { skip }, () => {
  it('puts each record in the one slot of its id, and spreads records over the nodes', async () => {
    const { client } = await connect('ioredis');
    const store = new RedisStore({ client, prefix });
    const ids = Array.from({ length: 24 }, randomId);
    for (const id of ids) await store.claim({ id, fingerprint: FP, leaseMs: 60_000 });
    // Each node's own keys, read on a plain connection to that node.
    const holders = new Map<string, number[]>();
    const slotOwner = new Map<number, number>();
    for (const port of cluster!.ports) {
      const node = new Redis({ host: '127.0.0.1', port });
      try {
        const keys = await node.keys(`${prefix}:*`);
        for (const key of keys) holders.set(key, [...(holders.get(key) ?? []), port]);
        for (const [from, to, owner] of await node.cluster('SLOTS')) {
          const ownerPort = owner![1];
          for (let slot = from; slot <= to; slot++) slotOwner.set(slot, ownerPort);
        }
        for (const id of ids) {
          const key = `${prefix}:{${id}}`;
          assert.equal(await node.cluster('KEYSLOT', key), await node.cluster('KEYSLOT', id), 'the key hashes by its {id} tag');
        }
      } finally {
        node.disconnect();
      }
    }
    const nodesUsed = new Set<number>();
    for (const id of ids) {
      const key = `${prefix}:{${id}}`;
      const on = holders.get(key) ?? [];
      assert.equal(on.length, 1, `${key} is on exactly one node, found on ${JSON.stringify(on)}`);
      const probe = new Redis({ host: '127.0.0.1', port: on[0]! });
      const slot = Number(await probe.cluster('KEYSLOT', key));
      probe.disconnect();
      assert.equal(slotOwner.get(slot), on[0], `${key} sits on the node that owns slot ${slot}`);
      nodesUsed.add(on[0]!);
    }
    assert.ok(nodesUsed.size >= 2, `24 records spread over ${nodesUsed.size} node(s)`);
    for (const id of ids) await store.delete(id);
    await store.close();
  });

  for (const kind of ['ioredis', 'node-redis'] satisfies ClientKind[]) {
    it(`force-releases live claims on every node through ${kind}, never a stored outcome`, async () => {
      const store = new RedisStore({ client: (await connect(kind)).client, prefix });
      try {
        for (let round = 0; round < 6; round++) {
          const stuck = randomId();
          const claim = await store.claim({ id: stuck, fingerprint: FP, leaseMs: 60_000 });
          assert.equal(claim.status, 'acquired');
          assert.equal(await store.forceRelease(stuck), true);
          assert.equal(await store.get(stuck), undefined);
          assert.equal(await store.complete(stuck, (claim as { token: string }).token, new Uint8Array([1]), 60_000), 'lost');
          const done = randomId();
          const held = await store.claim({ id: done, fingerprint: FP, leaseMs: 60_000 });
          assert.equal(await store.complete(done, (held as { token: string }).token, new Uint8Array([1]), 60_000), 'ok');
          assert.equal(await store.forceRelease(done), false);
          assert.equal((await store.get(done))?.state, 'completed');
          await store.delete(done);
        }
      } finally {
        await store.close();
      }
    });
  }

  for (const [waiterKind, settlerKind] of [['ioredis', 'node-redis'], ['node-redis', 'ioredis']] satisfies [ClientKind, ClientKind][]) {
    it(`wakes a waiter on ${waiterKind} when the record is completed through ${settlerKind}`, { timeout: 20_000 }, async () => {
      const waiter = new RedisStore({ client: (await connect(waiterKind)).client, prefix });
      const settler = new RedisStore({ client: (await connect(settlerKind)).client, prefix });
      try {
        assert.ok(waiter.waitForSettle, 'the cluster client can duplicate() itself');
        // Several ids, so their slots are on different nodes than the subscriber's.
        for (let round = 0; round < 4; round++) {
          const id = randomId();
          const claim = await settler.claim({ id, fingerprint: FP, leaseMs: 60_000 });
          assert.equal(claim.status, 'acquired');
          const started = Date.now();
          const woken = waiter.waitForSettle(id, 8_000).then(() => Date.now() - started);
          // Long enough for the subscription (and its look at the record) on the first round;
          // afterwards the subscription stands, so only a published message can wake the waiter.
          await sleep(round === 0 ? 1_000 : 100);
          assert.equal(await settler.complete(id, (claim as { token: string }).token, new Uint8Array([1]), 60_000), 'ok');
          const waited = await woken;
          assert.ok(waited < 4_000, `round ${round}: woken after ${waited} ms, the timeout was 8000 ms`);
        }
      } finally {
        await waiter.close();
        await settler.close();
      }
    });
  }
});
