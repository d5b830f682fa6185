/**
 * Push wake-ups for `waitForSettle` through PostgreSQL LISTEN/NOTIFY: `complete`, `release`
 * and `delete` call `pg_notify(channel, id)` in the statement that makes the change, so the
 * server delivers the id when (and only when) that change commits; this listener hands it to
 * the waiters of that id.
 *
 * One connection per store listens, opened on the first waiter and held until `close()`:
 * made by the user's `listenClient` when given, otherwise checked out of the user's pool, but
 * only while the pool keeps a connection for queries (see `reservePooled`). When it fails or
 * the server ends it, it is dropped (waiters then wait out their timeout) and the next waiter
 * opens a new one.
 */
import type { Client, ClientBase, Notification, Pool } from 'pg';
import { Waiters } from '../../core/waiters.js';

/** After a failed connection or LISTEN, waiters in the next second wait out their timeout instead of retrying at once. */
const RETRY_AFTER_MS = 1_000;
/** How often a held listener looks whether the pool is ending (then it lets go, so `pool.end()` can finish). */
const POOL_ENDING_CHECK_MS = 1_000;

/** The pool's `max` (pg's default is 10); unbounded when the pool does not say. */
export function poolMax(pool: Pool): number {
  const max = (pool.options as { max?: unknown } | undefined)?.max;
  return typeof max === 'number' ? max : Infinity;
}

/**
 * Connections held to LISTEN, per pool, across every store on it. A pooled listener holds its
 * connection until `close()`, so with no room left every query would wait for it forever:
 * a listener may take a connection only while at least one other stays for queries.
 */
const pooledListeners = new WeakMap<Pool, number>();

function reservePooled(pool: Pool): boolean {
  const held = pooledListeners.get(pool) ?? 0;
  if (held + 1 >= poolMax(pool)) return false;
  pooledListeners.set(pool, held + 1);
  return true;
}

function unreservePooled(pool: Pool): void {
  pooledListeners.set(pool, (pooledListeners.get(pool) ?? 1) - 1);
}

/** An open connection to LISTEN on, and how to let go of it for good. */
interface Connection {
  client: ClientBase;
  letGo(): void;
}

export class SettleListener {
  readonly #pool: Pool;
  readonly #channel: string;
  readonly #listenClient: (() => Client) | undefined;
  readonly #waiters = new Waiters();
  /** The listening connection and how to let go of it. */
  #held: { client: ClientBase; drop: () => void } | undefined;
  /** The connect-and-LISTEN under way, if any. */
  #connecting: Promise<void> | undefined;
  #retryAt = 0;
  #closed = false;
  #poolWatch: ReturnType<typeof setInterval> | undefined;

  /** With `listenClient`, LISTENs on a connection it makes; otherwise on one from `pool`. */
  constructor(pool: Pool, channel: string, listenClient: (() => Client) | undefined) {
    this.#pool = pool;
    this.#channel = channel;
    this.#listenClient = listenClient;
  }

  /** Resolves on a settle of `id` or after `timeoutMs`; never rejects. */
  wait(id: string, timeoutMs: number): Promise<void> {
    const woken = this.#waiters.wait(id, timeoutMs);
    this.#listen();
    return woken;
  }

  /** Lets go of the listening connection (ended, never reused) and wakes every waiter. */
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

  /** A connection to LISTEN on; undefined when it failed, or when the pool has none to spare (then the next waiter looks again). */
  async #open(): Promise<Connection | undefined> {
    const make = this.#listenClient;
    if (make !== undefined) {
      let client: Client | undefined;
      try {
        client = make();
        // An error while connecting rejects connect(); one after it is handled by #connect.
        client.on('error', () => undefined);
        await client.connect();
        const made = client;
        return { client: made, letGo: () => void made.end().catch(() => undefined) };
      } catch {
        void client?.end().catch(() => undefined);
        this.#retryAt = Date.now() + RETRY_AFTER_MS;
        return undefined;
      }
    }
    const pool = this.#pool;
    if (!reservePooled(pool)) return undefined;
    try {
      const client = await pool.connect();
      // `true` destroys the connection: it still LISTENs, so it must never serve the pool's queries.
      return { client, letGo: () => { client.release(true); unreservePooled(pool); } };
    } catch {
      unreservePooled(pool);
      this.#retryAt = Date.now() + RETRY_AFTER_MS;
      return undefined;
    }
  }

  async #connect(): Promise<void> {
    const connection = await this.#open();
    if (connection === undefined) return;
    const { client } = connection;
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
      connection.letGo();
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
    // is ending: without this, ending the pool before `store.close()` would wait forever. A
    // connection of `listenClient` lets go too, so it does not outlive the pool it serves.
    this.#poolWatch = setInterval(() => {
      if (this.#pool.ending) drop();
    }, POOL_ENDING_CHECK_MS);
    this.#poolWatch.unref();
  }
}
