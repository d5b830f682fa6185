/**
 * The one place that drives the record state machine for every surface (`idempotent()`
 * today; HTTP, queues and workflows on top of it): claim, or wait for a running execution to
 * settle; hold the claim with heartbeats while the work runs; then complete or release it,
 * fenced by the token.
 */
import { LeaseLostError } from './errors.js';
import { signalSettled, waitForSettle } from './local-signals.js';
import type { CompletedRecord, IdempotencyRecord, IdempotencyStore, InProgressRecord, RecordMeta } from './types.js';

export interface ClaimOptions {
  store: IdempotencyStore;
  /** `identityId(namespace, scope, key)`. */
  id: string;
  fingerprint: string;
  meta?: RecordMeta;
  leaseMs: number;
  retentionMs: number;
  /** Extend the lease every `leaseMs / 3` while the work runs. */
  heartbeat: boolean;
  /** How long to wait for an in-progress execution to settle before answering `in_progress`; 0 answers at once. */
  waitMs: number;
  /**
   * Called after each heartbeat that extended the lease, to extend what else holds the work
   * (a broker's hold on a message: JetStream `working()`, SQS visibility). What it throws or
   * rejects with is ignored: the lease is what fences the work.
   */
  onHeartbeat?: () => unknown;
}

export type ClaimOutcome =
  | { status: 'acquired'; execution: Execution }
  | { status: 'completed'; record: CompletedRecord }
  | { status: 'in_progress'; record: InProgressRecord }
  | { status: 'mismatch'; record: IdempotencyRecord };

// A waiter in this process is woken at once (local signal). Across processes the store pushes
// a wake-up where it can (`waitForSettle`), and then a slow poll only catches what no event
// announces: a crashed holder's lease lapsing. Without push, the poll backs off from 25 ms.
const POLL_START_MS = 25;
const POLL_MAX_MS = 500;
const PUSHED_POLL_MS = 1_000;

/**
 * Claims `options.id`. While another execution holds it and `waitMs` allows, waits for it to
 * complete (then answers `completed`) or give up (then claims it for this caller).
 */
export async function claimOrWait(options: ClaimOptions): Promise<ClaimOutcome> {
  const { store, id, fingerprint, meta, leaseMs } = options;
  const deadline = Date.now() + options.waitMs;
  let pollMs = POLL_START_MS;
  for (;;) {
    const claim = await store.claim({ id, fingerprint, leaseMs, ...(meta ? { meta } : {}) });
    if (claim.status === 'acquired') return { status: 'acquired', execution: new Execution(options, claim.token) };
    if (claim.status !== 'in_progress') return claim;
    const remaining = deadline - Date.now();
    if (remaining <= 0) return claim;
    if (store.waitForSettle) {
      const waitMs = Math.min(PUSHED_POLL_MS, remaining);
      const local = waitForSettle(store, id, waitMs);
      // A failing subscription must not turn waiting into a busy loop: then only the local wake-up or the timeout ends it.
      await Promise.race([local, store.waitForSettle(id, waitMs).catch(() => local)]);
    } else {
      await waitForSettle(store, id, Math.min(pollMs, remaining));
      pollMs = Math.min(pollMs * 2, POLL_MAX_MS);
    }
  }
}

/** A held claim: the work runs while this holds the lease; it ends in `complete` or `release`. */
export class Execution {
  readonly #options: ClaimOptions;
  readonly #token: string;
  /** Made when someone asks for the signal: most executions never do, and they run per request. */
  #controller: AbortController | undefined;
  #lost: LeaseLostError | undefined;
  #stopHeartbeat: () => void;
  /** When the lease lapses unless extended (this process's clock, a little before the store's). */
  readonly #leaseEndsAt: number;
  #ended = false;

  constructor(options: ClaimOptions, token: string) {
    this.#options = options;
    this.#token = token;
    this.#leaseEndsAt = Date.now() + options.leaseMs;
    this.#stopHeartbeat = options.heartbeat ? this.#startHeartbeat() : () => undefined;
  }

  /**
   * Aborts (with a `LeaseLostError`) when the claim is lost; the work should stop and write
   * nothing. With heartbeats, that is when the store says another caller took it over, or no
   * extension succeeded for a whole lease. Without heartbeats, it is when the lease lapses
   * (`leaseMs` after the claim): from then on another caller may take it over at any moment.
   */
  get signal(): AbortSignal {
    if (!this.#controller) {
      this.#controller = new AbortController();
      if (!this.#options.heartbeat) this.#abortAtLeaseEnd();
    }
    if (this.#lost && !this.#controller.signal.aborted) this.#controller.abort(this.#lost);
    return this.#controller.signal;
  }

  /** Stable per identity: what the work passes on as the next system's idempotency key. */
  get downstreamKey(): string {
    return this.#options.id;
  }

  /**
   * Stores `outcome` for every duplicate. Throws `LeaseLostError` when the claim was lost.
   * `via`: the same store bound to the caller's transaction, so the completion commits (or
   * rolls back) with the work's own writes.
   */
  async complete(outcome: Uint8Array, via: IdempotencyStore = this.#options.store): Promise<void> {
    this.#end();
    try {
      if (this.#lost) throw this.#lost;
      const { id, retentionMs } = this.#options;
      if ((await via.complete(id, this.#token, outcome, retentionMs)) === 'lost') throw new LeaseLostError();
    } finally {
      signalSettled(this.#options.store, this.#options.id);
    }
  }

  /** Gives the claim up so that a retry runs the work again. Best effort: a failure only delays that until the lease lapses. */
  async release(): Promise<void> {
    this.#end();
    const { store, id } = this.#options;
    await store.release(id, this.#token).catch(() => undefined);
    signalSettled(store, id);
  }

  /** Made only when the signal is asked for: most executions never do. */
  #abortAtLeaseEnd(): void {
    if (this.#ended) return;
    const timer = setTimeout(() => {
      if (!this.#ended) this.#controller?.abort(new LeaseLostError('The lease on this key lapsed (heartbeat: false); another caller may take it over, and this result may not be stored'));
    }, Math.max(0, this.#leaseEndsAt - Date.now()));
    timer.unref?.();
    this.#stopHeartbeat = () => clearTimeout(timer);
  }

  #end(): void {
    if (this.#ended) throw new Error('this execution already ended');
    this.#ended = true;
    this.#stopHeartbeat();
  }

  /**
   * Extends the lease every `leaseMs / 3`. Aborts the signal when the store says the claim is
   * gone, or when no extension succeeded for a whole lease (an unreachable store is retried
   * on the next beat until then, since its lease may still hold).
   */
  #startHeartbeat(): () => void {
    const { store, id, leaseMs, onHeartbeat } = this.#options;
    const extendHold = () => {
      try {
        void Promise.resolve(onHeartbeat?.()).catch(() => undefined);
      } catch {
        // See onHeartbeat: the lease fences the work, not the hold.
      }
    };
    let extending = false;
    let lastExtended = Date.now();
    const lose = () => {
      if (this.#ended || this.#lost) return;
      this.#lost = new LeaseLostError();
      this.#controller?.abort(this.#lost);
    };
    const timer = setInterval(() => {
      if (extending) return;
      extending = true;
      store
        .extend(id, this.#token, leaseMs)
        .then((result) => (result === 'ok' ? ((lastExtended = Date.now()), extendHold()) : lose()))
        .catch(() => (Date.now() - lastExtended >= leaseMs ? lose() : undefined))
        .finally(() => (extending = false));
    }, Math.max(1, Math.floor(leaseMs / 3)));
    return () => clearInterval(timer);
  }
}
