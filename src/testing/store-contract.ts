/**
 * The store contract suite: what every `IdempotencyStore` must do, run on node's test runner
 * against the real server. Third-party store authors call it from one test file:
 *
 * @example
 * ```ts
 * import { storeContract } from 'oncely/testing';
 * storeContract('my store', { makeStore: () => new MyStore(client) });
 * ```
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { StoreUnavailableError } from '../core/errors.js';
import { sha256Hex } from '../core/identity.js';
import type { Claim, IdempotencyStore, OperableStore } from '../core/types.js';

export interface StoreContractOptions {
  /** A fresh store on the real server. Called once per test; the suite closes it. */
  makeStore: () => IdempotencyStore | Promise<IdempotencyStore>;
  /** A store whose server cannot be reached (bad port), with a short operation timeout. */
  makeUnreachableStore?: () => IdempotencyStore | Promise<IdempotencyStore>;
  /**
   * Absolute path of a module exporting `makeStore()` (same store, same server), loaded in
   * child processes to race claims across processes. Omit for single-process stores.
   * Children run with this process's `execArgv` (so `--import tsx` carries over) and env.
   */
  processModule?: string;
  /** Child processes in the cross-process race. Default 4. */
  processes?: number;
  /** Skip the whole suite with this reason (e.g. the server is not reachable). */
  skip?: string;
}

/** A fresh random identity id, so tests never see each other's records. */
export function randomId(): string {
  return sha256Hex(randomBytes(16));
}

const FP_A = sha256Hex('fingerprint A');
const FP_B = sha256Hex('fingerprint B');
const LONG_LEASE = 60_000;
const DAY = 86_400_000;

function bytes(text: string): Uint8Array {
  return new TextEncoder().encode(text);
}

function acquired(claim: Claim): string {
  assert.equal(claim.status, 'acquired', `expected acquired, got ${claim.status}`);
  return (claim as Extract<Claim, { status: 'acquired' }>).token;
}

function isOperable(store: IdempotencyStore): store is OperableStore {
  const candidate = store as Partial<OperableStore>;
  return typeof candidate.stats === 'function' && typeof candidate.findByKey === 'function' && typeof candidate.forceRelease === 'function';
}

/** Runs `body` with the store when it has the operator commands (`OperableStore`). */
function withOperableStore(make: StoreContractOptions['makeStore'], body: (store: OperableStore) => Promise<void>): (context: { skip(reason: string): void }) => Promise<void> {
  return (context) => withStore(make, async (store) => {
    if (isOperable(store)) await body(store);
    else context.skip('the store has no operator commands (OperableStore)');
  });
}

/** Runs `body` with a fresh store and always closes it. */
async function withStore(make: StoreContractOptions['makeStore'], body: (store: IdempotencyStore) => Promise<void>): Promise<void> {
  const store = await make();
  try {
    await body(store);
  } finally {
    await store.close();
  }
}

const WORKER_SOURCE = `
const { makeStore } = await import(process.env.ONCELY_CONTRACT_MODULE_URL);
const store = await makeStore();
const [id, fingerprint, count] = process.argv.slice(-3);
process.stdout.write('ready\\n');
await new Promise((resolve) => process.stdin.once('data', resolve));
const claims = await Promise.allSettled(Array.from({ length: Number(count) }, () =>
  store.claim({ id, fingerprint, leaseMs: 60000 })));
const tally = {};
for (const c of claims) {
  const k = c.status === 'fulfilled' ? c.value.status : 'error:' + String(c.reason && c.reason.message);
  tally[k] = (tally[k] ?? 0) + 1;
}
await store.close();
process.stdout.write(JSON.stringify(tally) + '\\n');
process.exit(0);
`;

interface Worker {
  ready: Promise<void>;
  result: Promise<Record<string, number>>;
  go(): void;
}

function startWorker(moduleUrl: string, id: string, count: number): Worker {
  // Test-runner flags must not reach the child; loader flags such as `--import tsx` must.
  const execArgv = process.execArgv.filter((arg) => !arg.startsWith('--test'));
  const child = spawn(process.execPath, [...execArgv, '--input-type=module', '-e', WORKER_SOURCE, id, FP_A, String(count)], {
    env: { ...process.env, ONCELY_CONTRACT_MODULE_URL: moduleUrl },
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  let output = '';
  let onReady: () => void;
  const ready = new Promise<void>((resolve) => (onReady = resolve));
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (chunk: string) => {
    output += chunk;
    if (output.startsWith('ready\n')) onReady();
  });
  const result = new Promise<Record<string, number>>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => {
      const last = output.trim().split('\n').at(-1) ?? '';
      if (code === 0 && last.startsWith('{')) resolve(JSON.parse(last) as Record<string, number>);
      else reject(new Error(`claim worker exited with ${code}: ${output}`));
    });
  });
  return { ready: Promise.race([ready, result.then(() => undefined)]), result, go: () => child.stdin.end('go\n') };
}

/** Registers the contract tests for one store under `describe(name)`. */
export function storeContract(name: string, options: StoreContractOptions): void {
  const make = options.makeStore;
  const skip = options.skip ?? false;

  describe(`store contract: ${name}`, { skip }, () => {
    it('claims an absent id, completes it, and replays the exact outcome bytes and meta', () =>
      withStore(make, async (store) => {
        const id = randomId();
        const meta = { namespace: 'orders', scope: 'tenant-1', key: 'key-1' };
        const token = acquired(await store.claim({ id, fingerprint: FP_A, leaseMs: LONG_LEASE, meta }));
        assert.equal(await store.complete(id, token, bytes('{"ok":true}'), DAY), 'ok');
        const again = await store.claim({ id, fingerprint: FP_A, leaseMs: LONG_LEASE, meta });
        assert.equal(again.status, 'completed');
        assert.ok(again.status === 'completed');
        assert.deepEqual(Buffer.from(again.record.outcome), Buffer.from('{"ok":true}'));
        assert.equal(again.record.fingerprint, FP_A);
        assert.equal(again.record.id, id);
        assert.deepEqual(again.record.meta, meta);
        assert.ok(again.record.expiresAt > again.record.createdAt, 'retention ends after creation');
      }));

    it('stores and returns a 1 MiB binary outcome byte for byte', () =>
      withStore(make, async (store) => {
        const id = randomId();
        const outcome = randomBytes(1024 * 1024);
        const token = acquired(await store.claim({ id, fingerprint: FP_A, leaseMs: LONG_LEASE }));
        assert.equal(await store.complete(id, token, outcome, DAY), 'ok');
        const record = await store.get(id);
        assert.equal(record?.state, 'completed');
        assert.ok(record?.state === 'completed');
        assert.equal(record.outcome.byteLength, outcome.byteLength);
        assert.ok(Buffer.from(record.outcome).equals(outcome), 'outcome bytes differ');
      }));

    it('gives exactly one of 200 concurrent claims on one id', () =>
      withStore(make, async (store) => {
        const id = randomId();
        const claims = await Promise.all(Array.from({ length: 200 }, () => store.claim({ id, fingerprint: FP_A, leaseMs: LONG_LEASE })));
        const statuses = claims.map((claim) => claim.status);
        assert.equal(statuses.filter((status) => status === 'acquired').length, 1);
        assert.equal(statuses.filter((status) => status === 'in_progress').length, 199);
      }));

    it(`gives exactly one claim across ${options.processes ?? 4} processes racing on one id`, { skip: options.processModule ? false : 'no processModule given' }, async () => {
      const moduleUrl = new URL(`file://${options.processModule}`).href;
      const id = randomId();
      const workers = Array.from({ length: options.processes ?? 4 }, () => startWorker(moduleUrl, id, 25));
      await Promise.all(workers.map((worker) => worker.ready));
      for (const worker of workers) worker.go();
      const tallies = await Promise.all(workers.map((worker) => worker.result));
      const total = (status: string) => tallies.reduce((sum, tally) => sum + (tally[status] ?? 0), 0);
      assert.equal(total('acquired'), 1, `tallies: ${JSON.stringify(tallies)}`);
      assert.equal(total('in_progress'), workers.length * 25 - 1, `tallies: ${JSON.stringify(tallies)}`);
    });

    it('reports a live claim with another fingerprint as mismatch, while in progress and after completion', () =>
      withStore(make, async (store) => {
        const id = randomId();
        const token = acquired(await store.claim({ id, fingerprint: FP_A, leaseMs: LONG_LEASE }));
        const whileRunning = await store.claim({ id, fingerprint: FP_B, leaseMs: LONG_LEASE });
        assert.equal(whileRunning.status, 'mismatch');
        assert.equal(whileRunning.status === 'mismatch' && whileRunning.record.state, 'in_progress');
        assert.equal(await store.complete(id, token, bytes('done'), DAY), 'ok');
        const afterwards = await store.claim({ id, fingerprint: FP_B, leaseMs: LONG_LEASE });
        assert.equal(afterwards.status, 'mismatch');
        assert.equal(afterwards.status === 'mismatch' && afterwards.record.state, 'completed');
        assert.equal((await store.claim({ id, fingerprint: FP_A, leaseMs: LONG_LEASE })).status, 'completed');
      }));

    it('lets a lapsed lease be taken over and fences the old holder out', () =>
      withStore(make, async (store) => {
        const id = randomId();
        const oldToken = acquired(await store.claim({ id, fingerprint: FP_A, leaseMs: 300 }));
        assert.equal((await store.claim({ id, fingerprint: FP_A, leaseMs: 300 })).status, 'in_progress');
        await sleep(450);
        const newToken = acquired(await store.claim({ id, fingerprint: FP_A, leaseMs: LONG_LEASE }));
        assert.notEqual(newToken, oldToken);
        assert.equal(await store.extend(id, oldToken, LONG_LEASE), 'lost');
        assert.equal(await store.complete(id, oldToken, bytes('stale'), DAY), 'lost');
        assert.equal(await store.release(id, oldToken), 'lost');
        assert.equal(await store.complete(id, newToken, bytes('fresh'), DAY), 'ok');
        const replay = await store.claim({ id, fingerprint: FP_A, leaseMs: LONG_LEASE });
        assert.ok(replay.status === 'completed');
        assert.equal(Buffer.from(replay.record.outcome).toString(), 'fresh');
      }));

    it('lets a lapsed lease with another fingerprint be taken over (nothing was stored)', () =>
      withStore(make, async (store) => {
        const id = randomId();
        acquired(await store.claim({ id, fingerprint: FP_A, leaseMs: 200 }));
        await sleep(350);
        acquired(await store.claim({ id, fingerprint: FP_B, leaseMs: LONG_LEASE }));
        assert.equal((await store.get(id))?.fingerprint, FP_B);
      }));

    it('keeps a claim alive while it is extended past its first lease', () =>
      withStore(make, async (store) => {
        const id = randomId();
        const token = acquired(await store.claim({ id, fingerprint: FP_A, leaseMs: 400 }));
        for (let beat = 0; beat < 3; beat++) {
          await sleep(200);
          assert.equal(await store.extend(id, token, 400), 'ok');
        }
        // 600 ms after a 400 ms lease: only the extensions keep it.
        assert.equal((await store.claim({ id, fingerprint: FP_A, leaseMs: 400 })).status, 'in_progress');
        assert.equal(await store.complete(id, token, bytes('x'), DAY), 'ok');
      }));

    it('frees an id on release, once', () =>
      withStore(make, async (store) => {
        const id = randomId();
        const token = acquired(await store.claim({ id, fingerprint: FP_A, leaseMs: LONG_LEASE }));
        assert.equal(await store.release(id, token), 'ok');
        assert.equal(await store.release(id, token), 'lost');
        assert.equal(await store.get(id), undefined);
        acquired(await store.claim({ id, fingerprint: FP_B, leaseMs: LONG_LEASE }));
      }));

    it('answers lost to fenced writes with a wrong token or on an absent id', () =>
      withStore(make, async (store) => {
        const id = randomId();
        assert.equal(await store.complete(id, 'no-such-token', bytes('x'), DAY), 'lost');
        assert.equal(await store.extend(id, 'no-such-token', LONG_LEASE), 'lost');
        assert.equal(await store.release(id, 'no-such-token'), 'lost');
        const token = acquired(await store.claim({ id, fingerprint: FP_A, leaseMs: LONG_LEASE }));
        assert.equal(await store.complete(id, `${token}x`, bytes('x'), DAY), 'lost');
        assert.equal(await store.complete(id, token, bytes('y'), DAY), 'ok');
        assert.equal(await store.complete(id, token, bytes('z'), DAY), 'lost', 'a completed record is final');
        assert.equal(await store.release(id, token), 'lost', 'a completed record cannot be released');
      }));

    it('forgets a completed record when its retention ends', () =>
      withStore(make, async (store) => {
        const id = randomId();
        const token = acquired(await store.claim({ id, fingerprint: FP_A, leaseMs: LONG_LEASE }));
        assert.equal(await store.complete(id, token, bytes('x'), 300), 'ok');
        assert.equal((await store.claim({ id, fingerprint: FP_A, leaseMs: LONG_LEASE })).status, 'completed');
        await sleep(450);
        assert.equal(await store.get(id), undefined);
        acquired(await store.claim({ id, fingerprint: FP_A, leaseMs: LONG_LEASE }));
      }));

    it("judges expiry by the store's clock, not the process clock", () =>
      withStore(make, async (store) => {
        const realNow = Date.now();
        const originalNow = Date.now;
        Date.now = () => originalNow() + 10 * 365 * DAY;
        try {
          const id = randomId();
          const token = acquired(await store.claim({ id, fingerprint: FP_A, leaseMs: LONG_LEASE }));
          const second = await store.claim({ id, fingerprint: FP_A, leaseMs: LONG_LEASE });
          assert.equal(second.status, 'in_progress', 'a 60 s lease must not look lapsed or ten years long');
          assert.ok(second.status === 'in_progress');
          assert.ok(Math.abs(second.record.expiresAt - (realNow + LONG_LEASE)) < DAY, 'lease end is on the store clock');
          assert.equal(await store.extend(id, token, LONG_LEASE), 'ok');
          assert.equal(await store.complete(id, token, bytes('x'), DAY), 'ok');
          assert.equal((await store.claim({ id, fingerprint: FP_A, leaseMs: LONG_LEASE })).status, 'completed');
        } finally {
          Date.now = originalNow;
        }
      }));

    it('gets and deletes a record for operators', () =>
      withStore(make, async (store) => {
        const id = randomId();
        assert.equal(await store.get(id), undefined);
        assert.equal(await store.delete(id), false);
        acquired(await store.claim({ id, fingerprint: FP_A, leaseMs: LONG_LEASE, meta: { key: 'k' } }));
        const record = await store.get(id);
        assert.equal(record?.state, 'in_progress');
        assert.equal(record?.meta?.key, 'k');
        assert.equal(await store.delete(id), true);
        assert.equal(await store.get(id), undefined);
        acquired(await store.claim({ id, fingerprint: FP_A, leaseMs: LONG_LEASE }));
      }));

    it('operators: force-releases only a live in-progress claim, never a stored outcome', withOperableStore(make, async (store) => {
      const stuck = randomId();
      const token = acquired(await store.claim({ id: stuck, fingerprint: FP_A, leaseMs: LONG_LEASE }));
      assert.equal(await store.forceRelease(stuck), true);
      assert.equal(await store.get(stuck), undefined);
      assert.equal(await store.complete(stuck, token, bytes('late'), DAY), 'lost', 'the stuck holder is fenced out');
      const done = randomId();
      await store.complete(done, acquired(await store.claim({ id: done, fingerprint: FP_A, leaseMs: LONG_LEASE })), bytes('x'), DAY);
      assert.equal(await store.forceRelease(done), false);
      assert.equal((await store.get(done))?.state, 'completed');
      assert.equal(await store.forceRelease(randomId()), false);
    }));

    it('operators: finds live records by their raw key, narrowed by namespace and scope, newest first', withOperableStore(make, async (store) => {
      const key = `order-${randomId().slice(0, 12)}`;
      const older = randomId();
      const newer = randomId();
      const other = randomId();
      await store.complete(older, acquired(await store.claim({ id: older, fingerprint: FP_A, leaseMs: LONG_LEASE, meta: { namespace: 'http', scope: 'alice', key } })), bytes('x'), DAY);
      await sleep(5);
      acquired(await store.claim({ id: newer, fingerprint: FP_B, leaseMs: LONG_LEASE, meta: { namespace: 'http', scope: 'bob', key } }));
      acquired(await store.claim({ id: other, fingerprint: FP_A, leaseMs: LONG_LEASE, meta: { namespace: 'jobs', scope: 'alice', key: `${key}-other` } }));
      assert.deepEqual((await store.findByKey({ key })).map((record) => record.id), [newer, older]);
      assert.deepEqual((await store.findByKey({ key, scope: 'alice' })).map((record) => record.id), [older]);
      assert.deepEqual((await store.findByKey({ key, namespace: 'jobs' })).map((record) => record.id), []);
      assert.deepEqual((await store.findByKey({ key, limit: 1 })).map((record) => record.id), [newer]);
      const [found] = await store.findByKey({ key, scope: 'alice' });
      assert.equal(found?.state, 'completed');
      assert.deepEqual(found?.meta, { namespace: 'http', scope: 'alice', key });
      await assert.rejects(store.findByKey({ key: '' }), /non-empty/);
    }));

    it('operators: counts live records by state and names the oldest claim', withOperableStore(make, async (store) => {
      // Other tests may share the server, so this checks what its own records add.
      const before = await store.stats();
      const ids = [randomId(), randomId(), randomId()];
      const tokens = [];
      for (const id of ids) tokens.push(acquired(await store.claim({ id, fingerprint: FP_A, leaseMs: LONG_LEASE })));
      await store.complete(ids[2]!, tokens[2]!, bytes('x'), DAY);
      const after = await store.stats();
      assert.ok(after.inProgress >= before.inProgress + 2, `in progress ${before.inProgress} → ${after.inProgress}`);
      assert.ok(after.completed >= before.completed + 1, `completed ${before.completed} → ${after.completed}`);
      const claimedAt = (await store.get(ids[0]!))!.createdAt;
      assert.ok(after.oldestInProgressAt !== undefined && after.oldestInProgressAt <= claimedAt);
      assert.ok(after.now >= claimedAt && Math.abs(after.now - Date.now()) < DAY, 'now is the store clock, close to ours');
      for (const id of ids) await store.delete(id);
    }));

    it('purges lapsed records in bounded batches and keeps live ones', () =>
      withStore(make, async (store) => {
        const lapsed = Array.from({ length: 5 }, randomId);
        for (const id of lapsed) {
          const token = acquired(await store.claim({ id, fingerprint: FP_A, leaseMs: LONG_LEASE }));
          await store.complete(id, token, bytes('x'), 100);
        }
        const live = randomId();
        acquired(await store.claim({ id: live, fingerprint: FP_A, leaseMs: LONG_LEASE }));
        await sleep(250);
        const first = await store.purgeExpired({ limit: 2 });
        assert.ok(first >= 0 && first <= 2, `one call removes at most its limit, removed ${first}`);
        while ((await store.purgeExpired({ limit: 2 })) > 0);
        for (const id of lapsed) assert.equal(await store.get(id), undefined);
        assert.equal((await store.get(live))?.state, 'in_progress');
      }));

    it('rejects malformed ids and durations instead of storing them', () =>
      withStore(make, async (store) => {
        await assert.rejects(store.claim({ id: 'raw client key', fingerprint: FP_A, leaseMs: LONG_LEASE }), /SHA-256/);
        await assert.rejects(store.claim({ id: randomId(), fingerprint: FP_A, leaseMs: 0 }), /positive/);
        await assert.rejects(store.complete(randomId(), 't', bytes('x'), -1), /positive/);
      }));

    it('fails with StoreUnavailableError, not a hang, when the server is unreachable', { skip: options.makeUnreachableStore ? false : 'no makeUnreachableStore given', timeout: 30_000 }, async () => {
      const store = await options.makeUnreachableStore!();
      try {
        await assert.rejects(store.claim({ id: randomId(), fingerprint: FP_A, leaseMs: LONG_LEASE }), StoreUnavailableError);
        await assert.rejects(store.get(randomId()), StoreUnavailableError);
      } finally {
        await store.close().catch(() => undefined);
      }
    });
  });
}
