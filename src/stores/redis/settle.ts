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
import type { ScriptRunner, Subscriber } from './client.js';

type Wake = () => void;

/** After a failed subscription, waiters in the next second wait out their timeout instead of retrying at once. */
const RETRY_AFTER_MS = 1_000;

export class SettleSubscription {
  readonly #subscribe: NonNullable<ScriptRunner['subscribe']>;
  readonly #onClientEnd: ScriptRunner['onClientEnd'];
  readonly #channel: string;
  readonly #waiters = new Map<string, Set<Wake>>();
  /** The current subscriber and how to let go of it. */
  #held: { subscriber: Subscriber; drop: () => void } | undefined;
  #retryAt = 0;
  #closed = false;

  constructor(runner: ScriptRunner & { subscribe: NonNullable<ScriptRunner['subscribe']> }, channel: string) {
    this.#subscribe = runner.subscribe;
    this.#onClientEnd = runner.onClientEnd;
    this.#channel = channel;
  }

  /** Resolves on a message for `id` or after `timeoutMs`; never rejects. */
  wait(id: string, timeoutMs: number): Promise<void> {
    return new Promise<void>((resolve) => {
      let wakers = this.#waiters.get(id);
      if (wakers === undefined) this.#waiters.set(id, (wakers = new Set()));
      const own = wakers;
      const wake = () => {
        clearTimeout(timer);
        own.delete(wake);
        if (own.size === 0 && this.#waiters.get(id) === own) this.#waiters.delete(id);
        resolve();
      };
      const timer = setTimeout(wake, timeoutMs);
      own.add(wake);
      this.#listen();
    });
  }

  /** Closes the subscriber connection (only that one) and wakes every waiter. */
  close(): void {
    this.#closed = true;
    this.#held?.drop();
    for (const wakers of [...this.#waiters.values()]) for (const wake of [...wakers]) wake();
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
        message: (id) => {
          const wakers = this.#waiters.get(id);
          if (wakers !== undefined) for (const wake of [...wakers]) wake();
        },
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
