/**
 * What is particular to Redis: key layout, Redis-side expiry, the script cache, both client
 * libraries on the same records, server time, and failing fast when the server goes away.
 * The behaviour every store shares is in contract.test.ts.
 */
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import net from 'node:net';
import type { Redis } from 'ioredis';
import { after, before, describe, it } from 'node:test';
import { InvalidOptionError, StoreUnavailableError } from '../../core/errors.js';
import type { Claim } from '../../core/types.js';
import { randomId } from '../../testing/index.js';
import { REDIS_URL, skipUnlessReachable } from '../../../test/support/services.js';
import { connectClient, removeKeys, unreachableClient, type ClientKind, type TestClient } from './contract-process.js';
import { RedisStore, type RedisClient } from './index.js';
import { CLAIM } from './scripts.js';

const skip = await skipUnlessReachable('Redis', REDIS_URL);
const prefix = `oncely-redis-test-${randomUUID()}`;
const FP = 'a'.repeat(64);
const OTHER_FP = 'b'.repeat(64);
const MINUTE = 60_000;
const DAY = 86_400_000;
const KINDS = ['ioredis', 'node-redis'] satisfies ClientKind[];

function tokenOf(claim: Claim): string {
  assert.equal(claim.status, 'acquired');
  return (claim as Extract<Claim, { status: 'acquired' }>).token;
}

/**
 * Registers, in the calling describe, one client of each library plus an ioredis inspector
 * that only reads what the stores wrote; closes them and removes the test keys afterwards.
 */
function useClients(): { clients: Record<ClientKind, TestClient>; redis: () => Redis } {
  const clients = {} as Record<ClientKind, TestClient>;
  let inspector: TestClient;
  before(async () => {
    for (const kind of KINDS) clients[kind] = await connectClient(kind);
    inspector = await connectClient('ioredis');
  });
  after(async () => {
    await Promise.all([...Object.values(clients), inspector].map((client) => client.close()));
    await removeKeys(prefix);
  });
  return { clients, redis: () => inspector.client as Redis };
}

describe('RedisStore on Redis', { skip }, () => {
  const { clients, redis: inspector } = useClients();
  const storeOn = (kind: ClientKind, options: { timeoutMs?: number } = {}) => new RedisStore({ client: clients[kind].client, prefix, ...options });
  const keyOf = (id: string) => `${prefix}:{${id}}`;
  const serverNow = async () => {
    const [seconds, micros] = await inspector().time();
    return Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
  };


  it('keeps each record in one hash named by its id inside a hash tag, never by the raw key', async () => {
    const id = randomId();
    const rawKey = `raw-client-key-${randomUUID()}`;
    await storeOn('ioredis').claim({ id, fingerprint: FP, leaseMs: MINUTE, meta: { namespace: 'orders', scope: 'tenant-1', key: rawKey } });
    assert.deepEqual(await inspector().keys(`${prefix}*`), [keyOf(id)]);
    assert.deepEqual(await inspector().keys(`*${rawKey}*`), [], 'the raw key never becomes a key name');
    assert.equal(await inspector().type(keyOf(id)), 'hash');
    const hash = await inspector().hgetall(keyOf(id));
    assert.deepEqual(Object.keys(hash).sort(), ['created', 'exp', 'fp', 'key', 'ns', 'scope', 'state', 'token']);
    assert.equal(hash.key, rawKey, 'the raw key is kept inside the record for operators');
    await inspector().del(keyOf(id));
  });

  it('lets Redis expire records: lease end while in progress, retention end once completed', async () => {
    const store = storeOn('node-redis');
    const id = randomId();
    const token = tokenOf(await store.claim({ id, fingerprint: FP, leaseMs: MINUTE }));
    const leaseTtl = await inspector().pttl(keyOf(id));
    assert.ok(leaseTtl > MINUTE - 2_000 && leaseTtl <= MINUTE, `PTTL ${leaseTtl} ≈ lease`);
    assert.equal(await store.extend(id, token, 2 * MINUTE), 'ok');
    const extendedTtl = await inspector().pttl(keyOf(id));
    assert.ok(extendedTtl > 2 * MINUTE - 2_000 && extendedTtl <= 2 * MINUTE, `PTTL ${extendedTtl} ≈ extended lease`);
    assert.equal(await store.complete(id, token, Buffer.from('done'), 7 * DAY), 'ok');
    const retentionTtl = await inspector().pttl(keyOf(id));
    assert.ok(retentionTtl > 7 * DAY - 2_000 && retentionTtl <= 7 * DAY, `PTTL ${retentionTtl} ≈ retention`);
    assert.equal(await inspector().hexists(keyOf(id), 'token'), 0, 'a completed record has no holder');
    assert.equal(Number(await inspector().hget(keyOf(id), 'exp')), (await store.get(id))?.expiresAt);

    const released = randomId();
    assert.equal(await store.release(released, tokenOf(await store.claim({ id: released, fingerprint: FP, leaseMs: MINUTE }))), 'ok');
    assert.equal(await inspector().exists(keyOf(released)), 0, 'release deletes the key');
    assert.equal(await store.purgeExpired(), 0, 'nothing to purge: Redis expires keys itself');
    await inspector().del(keyOf(id));
  });

  for (const kind of KINDS) {
    it(`reloads its scripts after SCRIPT FLUSH (${kind})`, async () => {
      const store = storeOn(kind);
      const id = randomId();
      await inspector().script('FLUSH');
      const token = tokenOf(await store.claim({ id, fingerprint: FP, leaseMs: MINUTE }));
      assert.deepEqual(await inspector().script('EXISTS', CLAIM.sha), [1], 'the fallback cached the script again');
      await inspector().script('FLUSH');
      assert.equal(await store.complete(id, token, Buffer.from('after flush'), MINUTE), 'ok');
      await inspector().script('FLUSH');
      const record = await store.get(id);
      assert.ok(record?.state === 'completed');
      assert.equal(Buffer.from(record.outcome).toString(), 'after flush');
      await inspector().del(keyOf(id));
    });
  }

  it('shares records between ioredis and node-redis clients, bytes included', async () => {
    const viaIoredis = storeOn('ioredis');
    const viaNodeRedis = storeOn('node-redis');
    for (const outcome of [randomBytes(1024 * 1024), new Uint8Array(0)]) {
      const id = randomId();
      const token = tokenOf(await viaIoredis.claim({ id, fingerprint: FP, leaseMs: MINUTE, meta: { key: 'k' } }));
      const seen = await viaNodeRedis.claim({ id, fingerprint: FP, leaseMs: MINUTE });
      assert.equal(seen.status, 'in_progress');
      assert.equal((await viaNodeRedis.claim({ id, fingerprint: OTHER_FP, leaseMs: MINUTE })).status, 'mismatch');
      assert.equal(await viaNodeRedis.complete(id, token, outcome, MINUTE), 'ok');
      const replay = await viaIoredis.claim({ id, fingerprint: FP, leaseMs: MINUTE });
      assert.ok(replay.status === 'completed');
      assert.ok(Buffer.from(replay.record.outcome).equals(outcome), 'outcome bytes differ');
      assert.deepEqual(replay.record.meta, { key: 'k' });
      assert.equal(await viaIoredis.delete(id), true);
    }
  });

  it('gives exactly one of 200 concurrent claims through both clients', async () => {
    const id = randomId();
    const stores = [storeOn('ioredis'), storeOn('node-redis')];
    const claims = await Promise.all(Array.from({ length: 200 }, (_, i) => stores[i % 2]!.claim({ id, fingerprint: FP, leaseMs: MINUTE })));
    assert.equal(claims.filter((claim) => claim.status === 'acquired').length, 1);
    assert.equal(claims.filter((claim) => claim.status === 'in_progress').length, 199);
    await inspector().del(keyOf(id));
  });

  it('works on an ioredis client with enableAutoPipelining (scripts keep their command name)', async () => {
    const { Redis: IORedis } = await import('ioredis');
    const pipelined = new IORedis(REDIS_URL, { enableAutoPipelining: true });
    try {
      const store = new RedisStore({ client: pipelined, prefix });
      const id = randomId();
      const claims = await Promise.all(Array.from({ length: 50 }, () => store.claim({ id, fingerprint: FP, leaseMs: MINUTE })));
      assert.equal(claims.filter((claim) => claim.status === 'acquired').length, 1);
      const token = tokenOf(claims.find((claim) => claim.status === 'acquired')!);
      assert.equal(await store.complete(id, token, Buffer.from('done'), DAY), 'ok');
      const replay = await store.claim({ id, fingerprint: FP, leaseMs: MINUTE });
      assert.equal(replay.status, 'completed');
      await inspector().del(keyOf(id));
    } finally {
      pipelined.disconnect();
    }
  });

  it("reads time from the server's clock, not Date.now()", async () => {
    const store = storeOn('ioredis');
    const id = randomId();
    const originalNow = Date.now;
    Date.now = () => originalNow() + 10 * 365 * DAY;
    try {
      const before = await serverNow();
      const claim = await store.claim({ id, fingerprint: FP, leaseMs: MINUTE });
      const after = await serverNow();
      assert.ok(claim.status === 'acquired');
      assert.ok(claim.expiresAt >= before + MINUTE && claim.expiresAt <= after + MINUTE, 'lease end = server TIME + lease');
      const second = await store.claim({ id, fingerprint: FP, leaseMs: MINUTE });
      assert.equal(second.status, 'in_progress');
    } finally {
      Date.now = originalNow;
    }
    await inspector().del(keyOf(id));
  });

  it('turns server errors into StoreUnavailableError with the cause', async () => {
    for (const kind of KINDS) {
      const id = randomId();
      await inspector().set(keyOf(id), 'not a hash');
      const error = await storeOn(kind).claim({ id, fingerprint: FP, leaseMs: MINUTE }).then(() => undefined, (e: unknown) => e);
      assert.ok(error instanceof StoreUnavailableError, `${kind}: ${String(error)}`);
      assert.match(String((error.cause as Error).message), /WRONGTYPE/);
      await inspector().del(keyOf(id));
    }
  });

  it('leaves the client open on close()', async () => {
    for (const kind of KINDS) {
      await storeOn(kind).close();
      assert.equal(await storeOn(kind).delete(randomId()), false, `${kind} client still answers`);
    }
  });

  for (const kind of KINDS) {
    it(`fails with StoreUnavailableError within timeoutMs when the connection drops (${kind})`, async () => {
      const proxy = await startProxy(new URL(REDIS_URL));
      const through = await connectClient(kind, `redis://127.0.0.1:${proxy.port}`);
      try {
        const store = new RedisStore({ client: through.client, prefix, timeoutMs: 500 });
        const id = randomId();
        tokenOf(await store.claim({ id, fingerprint: FP, leaseMs: MINUTE }));
        await proxy.close();
        const started = performance.now();
        await assert.rejects(store.claim({ id, fingerprint: FP, leaseMs: MINUTE }), StoreUnavailableError);
        await assert.rejects(store.get(id), StoreUnavailableError);
        assert.ok(performance.now() - started < 1_500, 'each call gave up after its 500 ms');
        await inspector().del(keyOf(id));
      } finally {
        await through.close();
      }
    });
  }
});

describe('RedisStore waitForSettle (pub/sub)', { skip }, () => {
  const channel = `${prefix}:settled`;
  const { clients, redis: inspector } = useClients();
  const storeOn = (kind: ClientKind) => new RedisStore({ client: clients[kind].client, prefix });
  const otherKind = (kind: ClientKind): ClientKind => (kind === 'ioredis' ? 'node-redis' : 'ioredis');
  const subscribers = async () => Number(((await inspector().pubsub('NUMSUB', channel)) as [string, number])[1]);
  /** Resolves once `condition()` holds; fails after `ms`. */
  async function until(condition: () => Promise<boolean>, what: string, ms = 3_000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!(await condition())) {
      if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }
  const settledAt = (wait: Promise<void>): Promise<number> => wait.then(() => performance.now());


  for (const kind of KINDS) {
    for (const [name, settle] of [
      ['complete', (store: RedisStore, id: string, token: string) => store.complete(id, token, Buffer.from('done'), MINUTE)],
      ['release', (store: RedisStore, id: string, token: string) => store.release(id, token)],
      ['delete', (store: RedisStore, id: string) => store.delete(id)],
    ] as const) {
      it(`wakes a waiter (${kind}) within 100 ms on ${name} through another client (${otherKind(kind)})`, async () => {
        const waiter = storeOn(kind);
        const settler = storeOn(otherKind(kind));
        try {
          const id = randomId();
          const token = tokenOf(await settler.claim({ id, fingerprint: FP, leaseMs: MINUTE }));
          const woke = settledAt(waiter.waitForSettle!(id, 10_000));
          await until(async () => (await subscribers()) === 1, 'the subscriber');
          const started = performance.now();
          assert.ok(await settle(settler, id, token));
          const elapsed = (await woke) - started;
          assert.ok(elapsed < 100, `woken after ${elapsed.toFixed(0)} ms`);
        } finally {
          await waiter.close();
        }
      });
    }

    it(`without a settle a waiter resolves at its timeout; a fenced-out write does not wake it (${kind})`, async () => {
      const waiter = storeOn(kind);
      const settler = storeOn(otherKind(kind));
      try {
        const id = randomId();
        const token = tokenOf(await settler.claim({ id, fingerprint: FP, leaseMs: MINUTE }));
        const started = performance.now();
        const woke = settledAt(waiter.waitForSettle!(id, 600));
        await until(async () => (await subscribers()) === 1, 'the subscriber');
        assert.equal(await settler.complete(id, 'not-the-token', Buffer.from('x'), MINUTE), 'lost');
        assert.equal(await settler.release(id, 'not-the-token'), 'lost');
        assert.equal(await settler.delete(randomId()), false);
        const elapsed = (await woke) - started;
        assert.ok(elapsed >= 590 && elapsed < 800, `resolved after ${elapsed.toFixed(0)} ms`);
        assert.equal(await settler.release(id, token), 'ok');
      } finally {
        await waiter.close();
      }
    });

    it(`a waiter on a record that is absent or already settled wakes at once (${kind})`, async () => {
      const waiter = storeOn(kind);
      try {
        const id = randomId();
        const token = tokenOf(await waiter.claim({ id, fingerprint: FP, leaseMs: MINUTE }));
        assert.equal(await waiter.complete(id, token, Buffer.from('done'), MINUTE), 'ok');
        const started = performance.now();
        await waiter.waitForSettle!(id, 5_000);
        await waiter.waitForSettle!(randomId(), 5_000);
        assert.ok(performance.now() - started < 1_000, 'no waiting out the timeout');
      } finally {
        await waiter.close();
      }
    });

    it(`many waiters share one subscription and all wake on one complete (${kind})`, async () => {
      const waiter = storeOn(kind);
      try {
        const id = randomId();
        const token = tokenOf(await waiter.claim({ id, fingerprint: FP, leaseMs: MINUTE }));
        const woke = Array.from({ length: 50 }, () => waiter.waitForSettle!(id, 10_000));
        // Other records in progress too: a waiter on an absent or settled record wakes at once.
        const others = Array.from({ length: 5 }, randomId);
        for (const other of others) await waiter.claim({ id: other, fingerprint: FP, leaseMs: MINUTE });
        const unrelated = others.map((other) => settledAt(waiter.waitForSettle!(other, 1_000)));
        await until(async () => (await subscribers()) === 1, 'the subscriber');
        await new Promise((resolve) => setTimeout(resolve, 50));
        assert.equal(await subscribers(), 1);
        const started = performance.now();
        assert.equal(await storeOn(otherKind(kind)).complete(id, token, Buffer.from('done'), MINUTE), 'ok');
        await Promise.all(woke);
        assert.ok(performance.now() - started < 100);
        for (const at of await Promise.all(unrelated)) assert.ok(at - started > 500, 'waiters of other ids sleep on');
      } finally {
        await waiter.close();
      }
    });

    it(`close() closes only the subscriber it opened and wakes its waiters (${kind})`, async () => {
      const waiter = storeOn(kind);
      const woke = waiter.waitForSettle!(randomId(), MINUTE);
      await until(async () => (await subscribers()) === 1, 'the subscriber');
      await waiter.close();
      await woke;
      await until(async () => (await subscribers()) === 0, 'the subscriber to close');
      assert.equal(await waiter.delete(randomId()), false, 'the user\'s client still answers');
      assert.equal(await waiter.waitForSettle!(randomId(), 10), undefined, 'a closed store only times out');
    });

    it(`closing the user's client also closes the subscriber, so nothing keeps the process alive (${kind})`, async () => {
      const own = await connectClient(kind);
      const waiter = new RedisStore({ client: own.client, prefix });
      const woke = waiter.waitForSettle!(randomId(), 300);
      await until(async () => (await subscribers()) === 1, 'the subscriber');
      await own.close();
      await until(async () => (await subscribers()) === 0, 'the subscriber to close');
      await woke;
    });

    it(`an unreachable server: waitForSettle resolves at its timeout, never rejects (${kind})`, async () => {
      const unreachable = unreachableClient(kind);
      const dead = new RedisStore({ client: unreachable.client, prefix, timeoutMs: 500 });
      try {
        const started = performance.now();
        await dead.waitForSettle!(randomId(), 300);
        await dead.waitForSettle!(randomId(), 100);
        const elapsed = performance.now() - started;
        assert.ok(elapsed >= 390 && elapsed < 700, `resolved after ${elapsed.toFixed(0)} ms`);
      } finally {
        await dead.close();
        await unreachable.close();
      }
    });
  }
});

describe('RedisStore options', () => {
  it('refuses what is not a Redis client and a prefix that would move the hash tag', () => {
    assert.throws(() => new RedisStore({ client: {} as RedisClient }), InvalidOptionError);
    const client = { callBuffer: async () => null } as RedisClient;
    assert.throws(() => new RedisStore({ client, prefix: 'a{b}' }), InvalidOptionError);
    assert.throws(() => new RedisStore({ client, timeoutMs: 0 }), InvalidOptionError);
  });

  it('has no waitForSettle when the client cannot duplicate itself (waiters then poll)', () => {
    const client = { callBuffer: async () => null } as RedisClient;
    assert.equal(new RedisStore({ client }).waitForSettle, undefined);
    const duplicable = { callBuffer: async () => null, duplicate: () => client };
    assert.equal(typeof new RedisStore({ client: duplicable }).waitForSettle, 'function');
  });
});

/** A TCP proxy to Redis that can be cut, like a server that went away. */
async function startProxy(target: URL): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((inbound) => {
    const outbound = net.connect(Number(target.port), target.hostname);
    for (const socket of [inbound, outbound]) {
      sockets.add(socket);
      socket.on('error', () => undefined);
    }
    inbound.pipe(outbound).pipe(inbound);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    port,
    close: () => new Promise<void>((resolve) => {
      server.close(() => resolve());
      for (const socket of sockets) socket.destroy();
    }),
  };
}
