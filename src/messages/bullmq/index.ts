/**
 * `oncely/bullmq`: an idempotent BullMQ processor. BullMQ re-runs a job whose worker stalled
 * (crashed, or blocked past its lock) and accepts a job id again once the first job was
 * removed; oncely runs the handler once per identity across both, and answers each repeat
 * with the first run's return value.
 */
import type { Job, Processor } from 'bullmq';
import { checkHandler, createMessageProtocol, type ConsumerOptions, type DeliveryFacts, type MessageContext } from '../protocol.js';

export type { MessageContext, MessageEvent, DeadLetterReason } from '../protocol.js';

/**
 * The options of `idempotentProcessor()`: those of every oncely consumer, with BullMQ defaults.
 *
 * - `store` (required): where records are kept; a RedisStore, SqliteStore or PostgresStore when
 *   several worker processes share a queue.
 * - `key(job)`: the business key. Default: `job.id`. BullMQ's own numeric ids restart at 1 when
 *   a queue is obliterated, so oncely pairs them with the job's creation time; a custom `jobId`
 *   (never an integer in BullMQ 5 and 6) is used as it is, so a job added again under it after
 *   the first was removed is recognised.
 * - `namespace`: default the queue name. `scope(job)`: default `''`.
 * - `fingerprint(job)`: default SHA-256 of `JSON.stringify(job.data)`; the same id with other
 *   data fails the job (`mismatch`) without running it.
 * - `leaseMs` (default 30 000): oncely's claim, renewed every third of it while the handler
 *   runs. BullMQ's lock (`lockDuration`) is renewed by the worker itself. After a crash the
 *   job is re-run once its lock lapsed and the stalled check found it; if the lease is still
 *   held then, the re-run is delayed by `leaseMs` (no attempt spent) and runs the handler again
 *   (at-least-once in lease mode, with the same `downstreamKey`).
 * - `maxAttempts` (default 5): the attempt is `job.attemptsMade + 1`; a handler that throws is
 *   retried by BullMQ's own `attempts` and `backoff` job options (default 1: no retry), so the
 *   job fails after min(`attempts`, `maxAttempts`) runs.
 * - `isPermanent(error)` (default none): such errors fail the job at once.
 * - `backoff` (default `{ baseMs: 1000, maxMs: 60 000 }`): the delay before a job is tried
 *   again after the store could not be reached (no attempt spent).
 * - `retentionMs` (default 7 days), `observer` (default none): as for every consumer.
 *
 * Actions: processed or duplicate → the processor returns the (first) value, BullMQ completes
 * the job; dead-letter (mismatch, permanent error, max attempts, no identity) → it throws
 * `UnrecoverableError`, and the job is failed with `failedReason` "oncely <reason>: <detail>";
 * in progress elsewhere or store unreachable → `job.moveToDelayed()` + `DelayedError`.
 * Shut down with `worker.close()`: it takes no new job and waits for running handlers.
 */
export type IdempotentProcessorOptions<D = unknown, R = unknown, N extends string = string> = ConsumerOptions<Job<D, R, N>>;

/** Runs `handler` once per job identity, in `executionContext()`; pass the result to `new Worker(queue, …)`. */
export type IdempotentJobHandler<D = unknown, R = unknown, N extends string = string> = (job: Job<D, R, N>, context: MessageContext) => R | Promise<R>;

/**
 * Wraps a job handler into a BullMQ processor that runs it once per job identity. Every option
 * with its default is listed on `IdempotentProcessorOptions`.
 *
 * @example
 * ```ts
 * const store = new RedisStore({ client: new Redis() });
 * const worker = new Worker('emails', idempotentProcessor(async (job, { downstreamKey }) => {
 *   return mailer.send({ to: job.data.to, idempotencyKey: downstreamKey });
 * }, { store }), { connection });
 * await queue.add('welcome', { to: 'ada@example.com' }, { jobId: 'welcome:42', attempts: 5 });
 * ```
 */
export const idempotentProcessor = <D = unknown, R = unknown, N extends string = string>(
  handler: IdempotentJobHandler<D, R, N>,
  options: IdempotentProcessorOptions<D, R, N>,
): Processor<D, R, N> => {
  checkHandler('idempotentProcessor()', handler);
  const { deliver } = createMessageProtocol(options, 'idempotentProcessor()');

  return async function idempotentJob(job, token) {
    let value: unknown;
    const action = await deliver(job, jobFacts(job), handler, (result) => (value = result));
    switch (action.action) {
      case 'ack':
        return value as R;
      case 'dead-letter':
        throw bullmqError('UnrecoverableError', `oncely ${action.reason}: ${action.detail}`);
      case 'retry':
        // A failed run spends an attempt: BullMQ's `attempts` and `backoff` decide what follows.
        if (action.reason === 'failed') throw asError(action.error);
        await job.moveToDelayed(Date.now() + action.delayMs, token);
        throw bullmqError('DelayedError', 'DelayedError');
    }
  };
};

function jobFacts(job: Job): DeliveryFacts {
  return {
    id: job.id === undefined || `${parseInt(job.id, 10)}` !== job.id ? job.id : `${job.id}@${job.timestamp}`,
    body: Buffer.from(JSON.stringify(job.data) ?? ''),
    attempt: job.attemptsMade + 1,
    source: job.queueName,
  };
}

/** BullMQ 5 and 6 know their errors by name (BullMQ 5.0–5.9 a DelayedError by its message): no runtime import of bullmq. */
function bullmqError(name: 'UnrecoverableError' | 'DelayedError', message: string): Error {
  return Object.assign(new Error(message), { name });
}

function asError(error: unknown): Error {
  return error instanceof Error ? error : new Error(`the handler threw ${String(error)}`, { cause: error });
}
