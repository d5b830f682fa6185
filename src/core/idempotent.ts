/**
 * `idempotent(fn, options)`: the core state machine around one async function. A duplicate
 * call (same key) gets the first call's stored result instead of running `fn` again.
 */
import { canonicalJson, fromJsonSafe, toJsonSafe, type Json } from './codec.js';
import { InProgressError, InvalidOptionError, KeyReuseError, LeaseLostError, StoredFailureError } from './errors.js';
import { runInExecutionContext } from './execution-context.js';
import { identityId, sha256Hex } from './identity.js';
import { signalSettled, waitForSettle } from './local-signals.js';
import { assertDuration } from './store-kit.js';
import type { IdempotencyStore } from './types.js';

export interface IdempotentOptions<A extends unknown[]> {
  /** Where records are kept. */
  store: IdempotencyStore;
  /** The idempotency key of a call: the same for every retry of one logical operation. */
  key: (...args: A) => string;
  /** Separates uses of one store. Default: `fn.name` (an anonymous `fn` must set it). */
  namespace?: string;
  /** The caller the key belongs to (tenant, user). Default: `''` (one scope). */
  scope?: (...args: A) => string;
  /**
   * What makes two calls "the same". Default: SHA-256 of the canonical JSON of the arguments.
   * The same key with another fingerprint is a `KeyReuseError`, never a replay.
   */
  fingerprint?: (...args: A) => string;
  /** How long a claim holds without a heartbeat. Default 30 000 ms. */
  leaseMs?: number;
  /** How long a stored result is replayed. Default 86 400 000 ms (24 h). */
  retentionMs?: number;
  /**
   * A call whose key is being run elsewhere: `'throw'` an `InProgressError` (default), or wait
   * up to `waitMs` for its result (and run it if the other execution gives up).
   */
  onInProgress?: 'throw' | { waitMs: number };
  /** Extend the lease every `leaseMs / 3` while `fn` runs. Default true. */
  heartbeat?: boolean;
  /**
   * When `fn` throws: `'release'` the key so a retry runs again (default), or `'store'` the
   * error so duplicates get a `StoredFailureError` with its name and message.
   */
  onError?: 'release' | 'store';
}

type Outcome = { ok: true; value: Json } | { ok: false; error: { name: string; message: string } };

const POLL_START_MS = 25;
const POLL_MAX_MS = 500;

function encodeOutcome(outcome: Outcome): Uint8Array {
  return Buffer.from(JSON.stringify(outcome), 'utf8');
}

function decodeOutcome(bytes: Uint8Array): unknown {
  const outcome = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8')) as Outcome;
  if (outcome.ok) return fromJsonSafe(outcome.value);
  throw new StoredFailureError(outcome.error.name, outcome.error.message);
}

function describeError(error: unknown): { name: string; message: string } {
  return error instanceof Error ? { name: error.name, message: error.message } : { name: 'Error', message: String(error) };
}

/**
 * Extends the lease every `leaseMs / 3` until stopped. Aborts `controller` with a
 * `LeaseLostError` when the store says the claim is gone, or when no extension succeeded for a
 * whole lease (an unreachable store is retried on the next beat until then).
 */
function startHeartbeat(store: IdempotencyStore, id: string, token: string, leaseMs: number, controller: AbortController): () => void {
  let stopped = false;
  let extending = false;
  let lastExtended = Date.now();
  const loseClaim = () => {
    if (!stopped) controller.abort(new LeaseLostError());
  };
  const timer = setInterval(() => {
    if (extending) return;
    extending = true;
    store
      .extend(id, token, leaseMs)
      .then((result) => (result === 'ok' ? (lastExtended = Date.now()) : loseClaim()))
      .catch(() => (Date.now() - lastExtended >= leaseMs ? loseClaim() : undefined))
      .finally(() => (extending = false));
  }, Math.max(1, Math.floor(leaseMs / 3)));
  return () => {
    stopped = true;
    clearInterval(timer);
  };
}

/**
 * Wraps `fn` so that calls with the same key run it once; duplicates get the stored result
 * (same type as `fn` returns). Inside `fn`, `executionContext()` gives the abort signal and a
 * `downstreamKey` to pass on.
 *
 * @example
 * ```ts
 * const charge = idempotent(chargeCard, { store, key: (order) => order.id });
 * await charge(order); // a retry with the same order.id returns the first charge
 * ```
 */
export function idempotent<A extends unknown[], R>(fn: (...args: A) => R | Promise<R>, options: IdempotentOptions<A>): (...args: A) => Promise<Awaited<R>> {
  const namespace = options.namespace ?? fn.name;
  if (!namespace) throw new InvalidOptionError('idempotent(): an anonymous function needs a `namespace` option');
  const { store, key: keyOf, scope: scopeOf, fingerprint: fingerprintOf } = options;
  const leaseMs = options.leaseMs ?? 30_000;
  const retentionMs = options.retentionMs ?? 86_400_000;
  assertDuration('leaseMs', leaseMs);
  assertDuration('retentionMs', retentionMs);
  const onInProgress = options.onInProgress ?? 'throw';
  if (onInProgress !== 'throw') assertDuration('onInProgress.waitMs', onInProgress.waitMs);
  const heartbeat = options.heartbeat ?? true;
  const onError = options.onError ?? 'release';

  async function execute(id: string, token: string, context: { scope: string; key: string }, args: A): Promise<Awaited<R>> {
    const controller = new AbortController();
    const stopHeartbeat = heartbeat ? startHeartbeat(store, id, token, leaseMs, controller) : () => undefined;
    let value: Awaited<R>;
    try {
      value = await runInExecutionContext({ signal: controller.signal, downstreamKey: id, namespace, ...context }, () => fn(...args));
    } catch (error) {
      stopHeartbeat();
      if (controller.signal.aborted) throw error; // the claim is someone else's now: write nothing
      if (onError === 'store') await store.complete(id, token, encodeOutcome({ ok: false, error: describeError(error) }), retentionMs);
      else await store.release(id, token).catch(() => undefined);
      throw error;
    }
    stopHeartbeat();
    if (controller.signal.aborted) throw controller.signal.reason;
    let outcome: Uint8Array;
    try {
      outcome = encodeOutcome({ ok: true, value: toJsonSafe(value) });
    } catch (error) {
      await store.release(id, token).catch(() => undefined);
      throw error;
    }
    if ((await store.complete(id, token, outcome, retentionMs)) === 'lost') throw new LeaseLostError();
    return value;
  }

  return async function idempotentCall(...args: A): Promise<Awaited<R>> {
    const key = keyOf(...args);
    const scope = scopeOf ? scopeOf(...args) : '';
    const id = identityId(namespace, scope, key);
    const fingerprint = fingerprintOf ? fingerprintOf(...args) : sha256Hex(canonicalJson(args));
    const deadline = onInProgress === 'throw' ? 0 : Date.now() + onInProgress.waitMs;
    let pollMs = POLL_START_MS;
    for (;;) {
      const claim = await store.claim({ id, fingerprint, leaseMs, meta: { namespace, scope, key } });
      switch (claim.status) {
        case 'acquired':
          try {
            return await execute(id, claim.token, { scope, key }, args);
          } finally {
            signalSettled(store, id);
          }
        case 'completed':
          return decodeOutcome(claim.record.outcome) as Awaited<R>;
        case 'mismatch':
          throw new KeyReuseError(claim.record);
        case 'in_progress': {
          const remaining = deadline - Date.now();
          if (remaining <= 0) throw new InProgressError(claim.record, Math.min(1000, leaseMs));
          await waitForSettle(store, id, Math.min(pollMs, remaining));
          pollMs = Math.min(pollMs * 2, POLL_MAX_MS);
        }
      }
    }
  };
}
