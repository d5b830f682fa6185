/**
 * Push wake-ups for `waitForSettle` through PostgreSQL LISTEN/NOTIFY: `complete`, `release`
 * and `delete` call `pg_notify(channel, id)` in the statement that makes the change, so the
 * server delivers the id when (and only when) that change commits; this listener hands it to
 * the waiters of that id.
 *
 * One connection per store listens, checked out of the user's pool on the first waiter and
 * held until `close()`. When it fails or the server ends it, it is dropped (waiters then wait
 * out their timeout) and the next waiter checks out a new one.
 */
import type { Notification, Pool, PoolClient } from 'pg';
import { Waiters } from '../../core/waiters.js';

/** After a failed checkout or LISTEN, waiters in the next second wait out their timeout instead of retrying at once. */
const RETRY_AFTER_MS = 1_000;
/** How often a held listener looks whether the pool is ending (then it lets go, so `pool.end()` can finish). */
const POOL_ENDING_CHECK_MS = 1_000;

export class SettleListener {
  readonly #pool: Pool;
  readonly #channel: string;
  readonly #waiters = new Waiters();
  /** The listening connection and how to let go of it. */
  #held: { client: PoolClient; drop: () => void } | undefined;
  /** The connect-and-LISTEN under way, if any. */
  #connecting: Promise<void> | undefined;
  #retryAt = 0;
  #closed = false;
  #poolWatch: ReturnType<typeof setInterval> | undefined;

  constructor(pool: Pool, channel: string) {
    this.#pool = pool;
    this.#channel = channel;
  }

  /** Resolves on a settle of `id` or after `timeoutMs`; never rejects. */
  wait(id: string, timeoutMs: number): Promise<void> {
    const woken = this.#waiters.wait(id, timeoutMs);
    this.#listen();
    return woken;
  }

  /** Lets go of the listening connection (destroyed, not returned to the pool) and wakes every waiter. */
  close(): void {
    this.#closed = true;
    this.#held?.drop();
    this.#waiters.wakeAll();
  }

  /** Whether this listener LISTENs now, after any connection attempt under way has ended. */
  async listening(): Promise<boolean> {
    await this.#connecting;
    return this.#held !== undefined;
  }

  /** Wakes the waiters of `id` (it settled before they could be notified). */
  wake(id: string): void {
    this.#waiters.wake(id);
  }

  #listen(): void {
    if (this.#closed || this.#held !== undefined || this.#connecting || Date.now() < this.#retryAt) return;
    this.#connecting = this.#connect().finally(() => (this.#connecting = undefined));
  }

  async #connect(): Promise<void> {
    let client: PoolClient;
    try {
      client = await this.#pool.connect();
    } catch {
      this.#retryAt = Date.now() + RETRY_AFTER_MS;
      return;
    }
    let released = false;
    const onNotification = (message: Notification) => {
      if (message.channel === this.#channel && message.payload !== undefined) this.wake(message.payload);
    };
    const drop = () => {
      if (released) return;
      released = true;
      client.off('notification', onNotification);
      client.off('end', drop);
      // Keeps swallowing the errors of a connection already given up (an 'error' without a listener would crash the process).
      client.off('error', drop);
      client.on('error', () => undefined);
      if (this.#held?.client === client) {
        this.#held = undefined;
        clearInterval(this.#poolWatch);
      }
      // `true` destroys the connection: it still LISTENs, so it must never serve the pool's queries.
      client.release(true);
    };
    client.on('notification', onNotification);
    client.on('error', drop);
    client.on('end', drop);
    try {
      // Validated identifier characters only (see migrations.ts), so quoting is enough.
      await client.query(`LISTEN "${this.#channel}"`);
    } catch {
      this.#retryAt = Date.now() + RETRY_AFTER_MS;
      drop();
      return;
    }
    if (released) return;
    if (this.#closed) return drop();
    this.#held = { client, drop };
    // Like the pool's idle connections: with `allowExitOnIdle` it does not keep the process alive.
    if ((this.#pool.options as { allowExitOnIdle?: boolean } | undefined)?.allowExitOnIdle === true) (client as { unref?: () => void }).unref?.();
    // `pool.end()` waits for every checked-out client and nothing tells a client that the pool
    // is ending: without this, ending the pool before `store.close()` would wait forever.
    this.#poolWatch = setInterval(() => {
      if (this.#pool.ending) drop();
    }, POOL_ENDING_CHECK_MS);
    this.#poolWatch.unref();
  }
}
