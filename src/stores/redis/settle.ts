/**
 * Push wake-ups for `waitForSettle` through Redis pub/sub: the complete, release and delete
 * scripts `PUBLISH` the record's id on `${prefix}:settled` when they change it; one
 * subscriber connection per store hands each id to the waiters of that id.
 *
 * The connection is a duplicate of the user's client, made on the first waiter and kept
 * until `close()` or until the user's client is closed. The client library reconnects it
 * after a network failure; should it end for good, or fail to subscribe, it is dropped
 * (waiters wait out their timeout) and the next waiter makes a new one.
 */
import { Waiters } from '../../core/waiters.js';
import type { ScriptRunner, Subscriber } from './client.js';

/** After a failed subscription, waiters in the next second wait out their timeout instead of retrying at once. */
const RETRY_AFTER_MS = 1_000;

export class SettleSubscription {
  readonly #subscribe: NonNullable<ScriptRunner['subscribe']>;
  readonly #onClientEnd: ScriptRunner['onClientEnd'];
  readonly #channel: string;
  readonly #waiters = new Waiters();
  /** The current subscriber and how to let go of it. */
  #held: { subscriber: Subscriber; drop: () => void } | undefined;
  #retryAt = 0;
  #closed = false;

  constructor(runner: ScriptRunner & { subscribe: NonNullable<ScriptRunner['subscribe']> }, channel: string) {
    this.#subscribe = runner.subscribe;
    this.#onClientEnd = runner.onClientEnd;
    this.#channel = channel;
  }

  /** Resolves on a settle of `id` or after `timeoutMs`; never rejects. */
  wait(id: string, timeoutMs: number): Promise<void> {
    const woken = this.#waiters.wait(id, timeoutMs);
    this.#listen();
    return woken;
  }

  /** Whether a subscription is confirmed now (waiting for one being made). */
  async listening(): Promise<boolean> {
    const held = this.#held;
    if (held === undefined) return false;
    return held.subscriber.ready.then(() => this.#held === held, () => false);
  }

  /** Wakes the waiters of `id` (it settled before they could be notified). */
  wake(id: string): void {
    this.#waiters.wake(id);
  }

  /** Closes the subscriber connection (only that one) and wakes every waiter. */
  close(): void {
    this.#closed = true;
    this.#held?.drop();
    this.#waiters.wakeAll();
  }

  #listen(): void {
    if (this.#closed || this.#held !== undefined || Date.now() < this.#retryAt) return;
    let dropped = false;
    const drop = () => {
      if (dropped) return;
      dropped = true;
      stopWatching();
      if (this.#held?.subscriber === subscriber) this.#held = undefined;
      subscriber.close();
    };
    let subscriber: Subscriber;
    try {
      subscriber = this.#subscribe(this.#channel, {
        message: (id) => this.#waiters.wake(id),
        end: () => drop(),
      });
    } catch {
      this.#retryAt = Date.now() + RETRY_AFTER_MS;
      return;
    }
    // Without this, a user who closes their client but not the store would be kept alive by the duplicate.
    const stopWatching = this.#onClientEnd(() => drop());
    this.#held = { subscriber, drop };
    subscriber.ready.catch(() => {
      this.#retryAt = Date.now() + RETRY_AFTER_MS;
      drop();
    });
  }
}
