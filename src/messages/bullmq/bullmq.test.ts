/**
 * `idempotentProcessor` on a real BullMQ queue (Redis 127.0.0.1:6379), one queue per test,
 * obliterated afterwards: each row of the outcome → action table as BullMQ shows it (the job's
 * state, `returnvalue`, `failedReason`, `attemptsMade`), and the handler's runs counted.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import net from 'node:net';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Job, Queue, Worker, type Processor, type WorkerOptions } from 'bullmq';
import { Redis } from 'ioredis';
import { InvalidOptionError } from '../../core/errors.js';
import { MemoryStore } from '../../stores/memory/index.js';
import { RedisStore } from '../../stores/redis/index.js';
import { REDIS_URL, skipUnlessReachable } from '../../../test/support/services.js';
import type { MessageEvent } from '../protocol.js';
import { idempotentProcessor, type IdempotentProcessorOptions } from './index.js';

const connection = { host: '127.0.0.1', port: 6379, maxRetriesPerRequest: null };
const skip = await skipUnlessReachable('Redis (BullMQ)', REDIS_URL);

/** Polls until `check` holds; fails with `what` after `timeoutMs`. */
async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 8000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** A queue of its own, workers on it, and what they reported; `close()` obliterates it all. */
function bench() {
  const queue = new Queue(`oncely-bullmq-${randomUUID()}`, { connection });
  const workers: Worker[] = [];
  const completed: { id: string; value: unknown }[] = [];
  const failed: { id: string; reason: string }[] = [];
  const stalled: string[] = [];
  const events: MessageEvent[] = [];
  const options = <D>(extra: Partial<IdempotentProcessorOptions<D>> = {}): IdempotentProcessorOptions<D> => ({ store: new MemoryStore(), observer: (event) => events.push(event), ...extra });
  const worker = (processor: Processor, extra: Partial<WorkerOptions> = {}) => {
    const w = new Worker(queue.name, processor, { connection, lockDuration: 1000, stalledInterval: 300, ...extra });
    w.on('completed', (job, value) => completed.push({ id: job.id!, value }));
    w.on('failed', (job, error) => failed.push({ id: job!.id!, reason: error.message }));
    w.on('stalled', (id) => stalled.push(id));
    w.on('error', () => undefined);
    workers.push(w);
    return w;
  };
  const close = async () => {
    await Promise.all(workers.map((w) => w.close(true)));
    await queue.obliterate({ force: true });
    await queue.close();
  };
  return { queue, worker, options, completed, failed, stalled, events, types: () => events.map((e) => e.type), close };
}

describe('oncely/bullmq: idempotentProcessor', { skip }, () => {
  it('refuses a handler that is no function, a missing or URL store, and unknown options, naming the option', () => {
    const option = (make: () => unknown) => {
      try {
        make();
      } catch (error) {
        assert.ok(error instanceof InvalidOptionError);
        return error.option;
      }
      return assert.fail('no InvalidOptionError');
    };
    const store = new MemoryStore();
    assert.equal(option(() => idempotentProcessor('send' as never, { store })), 'handler');
    assert.equal(option(() => idempotentProcessor(() => 1, {} as never)), 'store');
    assert.equal(option(() => idempotentProcessor(() => 1, { store: 'redis://127.0.0.1:6379' as never })), 'store');
    assert.equal(option(() => idempotentProcessor(() => 1, { store, connection } as never)), 'connection');
  });

  it('a job added again under its id after removal runs once; every repeat completes with the first return value', async () => {
    const b = bench();
    try {
      let runs = 0;
      b.worker(idempotentProcessor<{ amount: number }>((job) => ({ receipt: `r-${++runs}`, amount: job.data.amount, at: new Date(0) }), b.options()));
      for (let delivery = 1; delivery <= 3; delivery++) {
        await b.queue.add('charge', { amount: 5 }, { jobId: 'charge-1', removeOnComplete: true });
        await until(`delivery ${delivery}`, () => b.completed.length === delivery);
      }
      assert.equal(runs, 1);
      const first = { receipt: 'r-1', amount: 5, at: new Date(0).toISOString() };
      assert.deepEqual(JSON.parse(JSON.stringify(b.completed.map((c) => c.value))), [first, first, first]);
      assert.deepEqual(b.types(), ['processed', 'duplicate', 'duplicate']);
    } finally {
      await b.close();
    }
  });

  it('a job whose worker closed without waiting is re-run by another worker as a duplicate, not run again', async () => {
    const b = bench();
    try {
      let runs = 0;
      let finish!: () => void;
      const gate = new Promise<void>((resolve) => (finish = resolve));
      const store = new MemoryStore();
      const first = b.worker(idempotentProcessor(async () => (runs++, await gate, { sent: true }), b.options({ store })));
      await b.queue.add('email', { to: 42 }, { jobId: 'email-42' });
      await until('the first run', () => runs === 1);
      await first.close(true);
      finish();
      await until('the outcome stored', () => b.types().includes('processed'));
      b.worker(idempotentProcessor(async () => (runs++, { sent: 'again' }), b.options({ store })));
      await until('the re-run', () => b.completed.length === 1);
      assert.equal(runs, 1);
      assert.deepEqual(b.completed, [{ id: 'email-42', value: { sent: true } }]);
      assert.deepEqual(b.types(), ['processed', 'duplicate']);
      assert.ok(b.stalled.includes('email-42'), 'BullMQ re-ran it as a stalled job');
    } finally {
      await b.close();
    }
  });

  it('a duplicate of a running job is delayed by the lease without spending an attempt, then completes with the first value', async () => {
    const b = bench();
    try {
      let runs = 0;
      let finish!: () => void;
      const gate = new Promise<void>((resolve) => (finish = resolve));
      const processor = idempotentProcessor<{ order: string }>(async (job) => (runs++, await gate, `paid ${job.data.order}`), b.options({ key: (job) => job.data.order, leaseMs: 600 }));
      b.worker(processor, { concurrency: 2 });
      await b.queue.add('pay', { order: 'o-1' }, { jobId: 'pay-o-1-a' });
      await until('the first run', () => runs === 1);
      await b.queue.add('pay', { order: 'o-1' }, { jobId: 'pay-o-1-b' });
      await until('the duplicate delayed', async () => (await b.queue.getJobState('pay-o-1-b')) === 'delayed');
      assert.equal((await b.queue.getJob('pay-o-1-b'))!.attemptsMade, 0, 'no attempt spent (attempts is 1)');
      finish();
      await until('both completed', () => b.completed.length === 2);
      assert.equal(runs, 1);
      assert.deepEqual(b.completed.map((c) => c.value), ['paid o-1', 'paid o-1']);
      assert.deepEqual(b.types(), ['in_progress', 'processed', 'duplicate']);
    } finally {
      await b.close();
    }
  });

  it('a handler outliving the lock and the lease keeps both: no stall, no second run, no abort', async () => {
    const b = bench();
    try {
      let runs = 0;
      let aborted: boolean | undefined;
      const processor = idempotentProcessor(async (_job, context) => {
        runs++;
        await sleep(2500);
        aborted = context.signal.aborted;
        return 'done';
      }, b.options({ leaseMs: 900 }));
      b.worker(processor);
      b.worker(processor);
      await b.queue.add('slow', {}, { jobId: 'slow-1' });
      await until('completion', () => b.completed.length === 1);
      assert.equal(runs, 1);
      assert.equal(aborted, false);
      assert.deepEqual(b.stalled, []);
      assert.deepEqual(b.types(), ['processed']);
    } finally {
      await b.close();
    }
  });

  it('a poison job fails after maxAttempts with the reason; a permanent error at once; BullMQ attempts below maxAttempts end it first', async () => {
    const b = bench();
    try {
      const runs: Record<string, number> = {};
      class Declined extends Error {}
      const processor = idempotentProcessor<{ kind: string }>((job) => {
        runs[job.id!] = (runs[job.id!] ?? 0) + 1;
        throw job.data.kind === 'declined' ? new Declined('card declined') : new Error('bad payload');
      }, b.options({ maxAttempts: 3, isPermanent: (error) => error instanceof Declined }));
      b.worker(processor);
      const retried = { attempts: 10, backoff: { type: 'fixed', delay: 50 } };
      await b.queue.add('charge', { kind: 'poison' }, { jobId: 'poison', ...retried });
      await b.queue.add('charge', { kind: 'declined' }, { jobId: 'declined', ...retried });
      await b.queue.add('charge', { kind: 'poison' }, { jobId: 'two-attempts', attempts: 2, backoff: { type: 'fixed', delay: 50 } });
      const ids = ['poison', 'declined', 'two-attempts'];
      await until('three failed jobs', async () => (await Promise.all(ids.map((id) => b.queue.getJobState(id)))).every((state) => state === 'failed'));
      const poison = (await b.queue.getJob('poison'))!;
      assert.equal(await poison.getState(), 'failed');
      assert.equal(poison.failedReason, 'oncely max-attempts: Error: bad payload');
      assert.equal(poison.attemptsMade, 3);
      const declined = (await b.queue.getJob('declined'))!;
      assert.equal(declined.failedReason, 'oncely permanent-error: Error: card declined');
      assert.equal((await b.queue.getJob('two-attempts'))!.failedReason, 'bad payload');
      assert.deepEqual(runs, { poison: 3, declined: 1, 'two-attempts': 2 });
    } finally {
      await b.close();
    }
  });

  it('the same id with other data fails as a mismatch and does not run', async () => {
    const b = bench();
    try {
      let runs = 0;
      b.worker(idempotentProcessor(() => ++runs, b.options()));
      await b.queue.add('deposit', { amount: 100 }, { jobId: 'deposit-9', removeOnComplete: true });
      await until('the deposit', () => b.completed.length === 1);
      await b.queue.add('deposit', { amount: 999 }, { jobId: 'deposit-9' });
      await until('the failure', () => b.failed.length === 1);
      assert.equal(runs, 1);
      assert.match(b.failed[0]!.reason, /^oncely mismatch: a message with identity "deposit-9" was already processed with another payload/);
      assert.deepEqual(b.types(), ['processed', 'mismatch', 'dead_lettered']);
    } finally {
      await b.close();
    }
  });

  it('a job without identity fails with no-identity, and one whose key() gives none with callback-failed; neither runs', async () => {
    const b = bench();
    try {
      let runs = 0;
      const processor = idempotentProcessor(() => ++runs, b.options());
      const idless = new Job(b.queue, 'orphan', { to: 42 });
      await assert.rejects(processor(idless, 'token'), (error: Error) => error.name === 'UnrecoverableError' && /^oncely no-identity: no identity: the message from .* has no message id/.test(error.message));
      b.worker(idempotentProcessor<{ user?: string }>(() => ++runs, b.options({ key: (job) => job.data.user! })));
      await b.queue.add('welcome', {}, { jobId: 'welcome-?' });
      await until('the failure', () => b.failed.length === 1);
      assert.equal(b.failed[0]!.reason, 'oncely callback-failed: `key` must return a non-empty string');
      assert.equal(runs, 0);
    } finally {
      await b.close();
    }
  });

  it("BullMQ's own ids restart after obliterate: job 1 of the new queue is not taken for job 1 of the old one", async () => {
    const b = bench();
    try {
      let runs = 0;
      b.worker(idempotentProcessor(() => ++runs, b.options()));
      const before = await b.queue.add('report', { day: 1 });
      await until('the first job', () => b.completed.length === 1);
      await b.queue.obliterate({ force: true });
      const again = await b.queue.add('report', { day: 1 });
      await until('the second job', () => b.completed.length === 2);
      assert.equal(again.id, before.id);
      assert.equal(runs, 2);
      assert.deepEqual(b.completed.map((c) => c.value), [1, 2]);
    } finally {
      await b.close();
    }
  });

  it('worker.close() waits for the running handler, whose job completes with its value', async () => {
    const b = bench();
    try {
      const order: string[] = [];
      const worker = b.worker(idempotentProcessor(async () => (order.push('started'), await sleep(300), order.push('finished'), 'ok'), b.options()));
      await b.queue.add('close', {}, { jobId: 'close-1' });
      await until('the run', () => order.length === 1);
      await worker.close();
      order.push('closed');
      assert.deepEqual(order, ['started', 'finished', 'closed']);
      assert.equal(await b.queue.getJobState('close-1'), 'completed');
      assert.equal((await b.queue.getJob('close-1'))!.returnvalue, 'ok');
    } finally {
      await b.close();
    }
  });
});

describe('oncely/bullmq: store unreachable', { skip }, () => {
  const sockets = new Set<net.Socket>();
  let proxy: net.Server | undefined;
  after(() => {
    for (const socket of sockets) socket.destroy();
    proxy?.close();
  });

  it('runs nothing and delays the job without spending an attempt; once the store is back it runs once', async () => {
    const port = await new Promise<number>((resolve) => {
      const probe = net.createServer().listen(0, '127.0.0.1', () => {
        const { port: free } = probe.address() as net.AddressInfo;
        probe.close(() => resolve(free));
      });
    });
    // No offline queue: a command sent while the server is away fails instead of landing later.
    const client = new Redis({ host: '127.0.0.1', port, lazyConnect: true, enableOfflineQueue: false, retryStrategy: () => 50 });
    client.on('error', () => undefined);
    const b = bench();
    try {
      let runs = 0;
      const store = new RedisStore({ client, prefix: `oncely-bullmq-${randomUUID()}`, timeoutMs: 300 });
      b.worker(idempotentProcessor(() => ++runs, b.options({ store, leaseMs: 1000, backoff: { baseMs: 200, maxMs: 200 } })));
      await b.queue.add('invoice', { total: 10 }, { jobId: 'invoice-1' });
      await until('two store errors', () => b.types().filter((t) => t === 'store_error').length >= 2);
      assert.equal(runs, 0);
      const job = (await b.queue.getJob('invoice-1'))!;
      assert.equal(job.attemptsMade, 0);
      assert.notEqual(await job.getState(), 'failed');
      proxy = net.createServer((socket) => {
        const upstream = net.connect(6379, '127.0.0.1');
        for (const s of [socket, upstream]) {
          sockets.add(s);
          s.on('error', () => undefined);
        }
        socket.pipe(upstream).pipe(socket);
      }).listen(port, '127.0.0.1');
      await until('completion', () => b.completed.length === 1);
      assert.equal(runs, 1);
      assert.deepEqual(b.completed, [{ id: 'invoice-1', value: 1 }]);
      assert.equal(b.types().at(-1), 'processed');
    } finally {
      await b.close();
      client.disconnect();
    }
  });
});
