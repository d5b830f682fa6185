/**
 * `oncely/redis`: the idempotency store on Redis, for node-redis v5 and ioredis v5 clients.
 *
 * Each record is one hash, `${prefix}:{${id}}`. The braces make the id a Redis Cluster hash
 * tag, so every record sits in its own slot and each transition (one Lua script on one key)
 * runs on one node. Only the SHA-256 id ever becomes a key name; the raw key the client sent
 * is kept inside the hash for operators.
 */
import { OncelyError, InvalidOptionError, StoreUnavailableError } from '../../core/errors.js';
import {
  DEFAULT_STORE_TIMEOUT_MS,
  StatsTally,
  assertDuration,
  assertId,
  assertTimerDuration,
  describeValue,
  matchesQuery,
  newToken,
  newestFirst,
  purgeLimit,
  recordQuery,
  storeOptions,
  withTimeout,
} from '../../core/store-kit.js';
import type {
  Claim,
  ClaimRequest,
  CompletedRecord,
  FencedResult,
  IdempotencyRecord,
  InProgressRecord,
  OperableStore,
  PurgeOptions,
  RecordMeta,
  RecordQuery,
  StoreStats,
} from '../../core/types.js';
import { scriptRunner, type KeylessRun, type RedisClient, type ScriptArg, type ScriptRunner } from './client.js';
import { CLAIM, COMPLETE, DELETE, EXTEND, FORCE_RELEASE, GET, RELEASE, SCAN_RECORDS, type Script } from './scripts.js';
import { SettleSubscription } from './settle.js';

export type { IoredisLike, NodeRedisLike, RedisClient } from './client.js';

export interface RedisStoreOptions {
  /**
   * Your Redis client: node-redis v5 (`createClient()`, connected) or ioredis v5 (`new Redis()`),
   * a single node or a cluster. The store borrows it and never closes it.
   */
  client: RedisClient;
  /**
   * Start of every key name; keys are `${prefix}:{${id}}`. Must not contain `{` or `}`,
   * which would move the Redis Cluster hash tag. Settled records are announced on the
   * pub/sub channel `${prefix}:settled`. Default `'oncely'`.
   */
  prefix?: string;
  /**
   * Longest one store call may take, reconnects and retries of the client included, before
   * it fails with `StoreUnavailableError`. Default `DEFAULT_STORE_TIMEOUT_MS` (5000).
   */
  timeoutMs?: number;
}

/** One element of a script reply: both adapters return bulk strings as Buffers, integers as numbers. */
type Reply = Buffer | number | null;

function text(value: Reply | undefined): string {
  if (value === null || value === undefined) throw new Error('Redis script reply is missing a field');
  return value.toString();
}

/** The meta fields of a reply; absent ones (Lua false, received as null) stay absent. */
function metaFromReply(namespace: Reply | undefined, scope: Reply | undefined, key: Reply | undefined): RecordMeta {
  const meta: RecordMeta = {};
  if (namespace !== null && namespace !== undefined) meta.namespace = text(namespace);
  if (scope !== null && scope !== undefined) meta.scope = text(scope);
  if (key !== null && key !== undefined) meta.key = text(key);
  return meta;
}

/** Reads the script's record reply: state, fp, created, exp, outcome, ns, scope, key. */
function toRecord(id: string, fields: Reply[]): IdempotencyRecord {
  const [state, fp, created, expires, outcome, namespace, scope, key] = fields;
  const meta = metaFromReply(namespace, scope, key);
  const base = {
    id,
    fingerprint: text(fp),
    createdAt: Number(created),
    expiresAt: Number(expires),
    ...(Object.keys(meta).length > 0 ? { meta } : {}),
  };
  if (text(state) === 'in_progress') return { ...base, state: 'in_progress' } satisfies InProgressRecord;
  if (!Buffer.isBuffer(outcome)) throw new Error('Redis script reply has no outcome bytes');
  // A plain Uint8Array copy, as the type promises, not a view into the client's reply buffer.
  return { ...base, state: 'completed', outcome: new Uint8Array(outcome) } satisfies CompletedRecord;
}

/** Meta as field/value pairs for HSET; absent parts are not written, so they read back absent. */
function metaArgs(meta: RecordMeta | undefined): string[] {
  const args: string[] = [];
  if (meta?.namespace !== undefined) args.push('ns', meta.namespace);
  if (meta?.scope !== undefined) args.push('scope', meta.scope);
  if (meta?.key !== undefined) args.push('key', meta.key);
  return args;
}

/** A record as SCAN_RECORDS lists it: no fingerprint, no outcome. */
interface ScannedRecord {
  id: string;
  state: IdempotencyRecord['state'];
  createdAt: number;
  expiresAt: number;
  meta: RecordMeta;
}

/** Keys per SCAN step: large enough to be quick, small enough not to stall the server. */
const SCAN_COUNT = 1000;

/** `prefix` as a literal inside a SCAN MATCH pattern. */
function globLiteral(text: string): string {
  return text.replace(/[*?[\]\\]/g, (char) => `\\${char}`);
}

function assertToken(token: unknown): asserts token is string {
  if (typeof token !== 'string' || token.length === 0) throw new InvalidOptionError('token must be the string a claim returned');
}

/**
 * Idempotency records in Redis. Atomic transitions are Lua scripts that read the server's
 * clock (`TIME`), never this process's. Records carry their own Redis expiry (lease end
 * while in progress, retention end once completed), so Redis removes lapsed records itself.
 *
 * Requires Redis 5 or later (scripts that read `TIME` before writing).
 *
 * @example
 * ```ts
 * import { createClient } from 'redis';
 * import { RedisStore } from 'oncely/redis';
 *
 * const client = await createClient({ url: process.env.REDIS_URL }).connect();
 * const store = new RedisStore({ client, prefix: 'billing' });
 * ```
 */
export class RedisStore implements OperableStore {
  readonly #runner: ScriptRunner;
  readonly #prefix: string;
  readonly #timeoutMs: number;
  /** `${prefix}:settled`: where complete, release and delete publish the id they settled. */
  readonly #channel: string;
  readonly #settle: SettleSubscription | undefined;

  /**
   * Resolves when `complete`, `release` or `delete` of `id` happens through any client
   * (Redis pub/sub on `${prefix}:settled`), or after `timeoutMs`; never rejects.
   *
   * The first waiter opens one more connection, `duplicate()` of your client, subscribed
   * until `close()` (or until your client is closed). Pub/sub is fire-and-forget: a settle
   * while that connection is down, or just before it subscribed, is seen at the waiter's next
   * claim. Absent when the client cannot `duplicate()` (a node-redis pool): waiters then poll.
   */
  readonly waitForSettle?: (id: string, timeoutMs: number) => Promise<void>;

  constructor(options: RedisStoreOptions) {
    const { client, prefix = 'oncely', timeoutMs = DEFAULT_STORE_TIMEOUT_MS } = storeOptions(options, 'RedisStore', 'new RedisStore({ client: new Redis(url) }) or new RedisStore({ client: await createClient({ url }).connect() })');
    if (typeof prefix !== 'string' || /[{}]/.test(prefix)) {
      throw new InvalidOptionError(`prefix must be a string without { or }, got ${typeof prefix === 'string' ? JSON.stringify(prefix) : describeValue(prefix)}`);
    }
    assertTimerDuration('timeoutMs', timeoutMs);
    this.#runner = scriptRunner(client);
    this.#prefix = prefix;
    this.#timeoutMs = timeoutMs;
    this.#channel = `${prefix}:settled`;
    const { subscribe } = this.#runner;
    if (subscribe !== undefined) {
      const settle = new SettleSubscription({ ...this.#runner, subscribe }, this.#channel);
      this.#settle = settle;
      this.waitForSettle = async (id, waitMs) => {
        const woken = settle.wait(id, waitMs);
        // Subscribed first, then looked: a settle after the look is published to us, one before
        // it shows in the record, and then the waiter is woken at once. In the background, so a
        // subscription that never comes (server unreachable) only leaves the timeout.
        void settle
          .listening()
          .then(async (listening) => {
            if (listening && (await this.get(id))?.state !== 'in_progress') settle.wake(id);
          })
          .catch(() => undefined);
        return woken;
      };
    }
  }

  async claim(request: ClaimRequest): Promise<Claim> {
    const { id, fingerprint, leaseMs, meta } = request;
    assertId(id);
    assertDuration('leaseMs', leaseMs);
    if (typeof fingerprint !== 'string' || fingerprint.length === 0) throw new InvalidOptionError('fingerprint must be a non-empty string');
    const token = newToken();
    const [status, ...fields] = (await this.#run(CLAIM, id, [fingerprint, token, String(leaseMs), ...metaArgs(meta)])) as Reply[];
    switch (text(status)) {
      case 'acquired':
        return { status: 'acquired', token, expiresAt: Number(fields[0]) };
      case 'mismatch':
        return { status: 'mismatch', record: toRecord(id, fields) };
      case 'completed':
        return { status: 'completed', record: toRecord(id, fields) as CompletedRecord };
      case 'in_progress':
        return { status: 'in_progress', record: toRecord(id, fields) as InProgressRecord };
      default:
        throw new Error(`unexpected Redis claim reply ${JSON.stringify(text(status))}`);
    }
  }

  async complete(id: string, token: string, outcome: Uint8Array, retentionMs: number): Promise<FencedResult> {
    assertId(id);
    assertToken(token);
    assertDuration('retentionMs', retentionMs);
    if (!(outcome instanceof Uint8Array)) throw new InvalidOptionError('outcome must be a Uint8Array');
    // Both clients send a Buffer as raw bytes (a bare Uint8Array would be stringified); this is a view, not a copy.
    const bytes = Buffer.from(outcome.buffer, outcome.byteOffset, outcome.byteLength);
    return this.#fenced(COMPLETE, id, [token, bytes, String(retentionMs), this.#channel, id]);
  }

  async release(id: string, token: string): Promise<FencedResult> {
    assertId(id);
    assertToken(token);
    return this.#fenced(RELEASE, id, [token, this.#channel, id]);
  }

  async extend(id: string, token: string, leaseMs: number): Promise<FencedResult> {
    assertId(id);
    assertToken(token);
    assertDuration('leaseMs', leaseMs);
    return this.#fenced(EXTEND, id, [token, String(leaseMs)]);
  }

  async get(id: string): Promise<IdempotencyRecord | undefined> {
    assertId(id);
    const reply = (await this.#run(GET, id, [])) as Reply[] | null;
    return reply === null ? undefined : toRecord(id, reply);
  }

  async delete(id: string): Promise<boolean> {
    assertId(id);
    return Number(await this.#run(DELETE, id, [this.#channel, id])) > 0;
  }

  /**
   * Always 0: every record carries its own Redis expiry (PEXPIREAT at lease or retention
   * end), so Redis removes lapsed records by itself and there is nothing left to purge.
   */
  async purgeExpired(options?: PurgeOptions): Promise<number> {
    purgeLimit(options?.limit);
    return 0;
  }

  /** Scans the keys under the prefix in steps of 1000, on every master of a Redis Cluster. */
  async stats(): Promise<StoreStats> {
    let tally: StatsTally | undefined;
    await this.#scan((now, records) => {
      tally ??= new StatsTally(now);
      for (const record of records) tally.add(record);
    });
    return tally!.stats;
  }

  /** Scans like `stats()`, then reads the newest `limit` matches in full. */
  async findByKey(query: RecordQuery): Promise<IdempotencyRecord[]> {
    const { limit, ...match } = recordQuery(query);
    const matches: ScannedRecord[] = [];
    await this.#scan((now, records) => {
      for (const record of records) if (record.expiresAt > now && matchesQuery(record, match)) matches.push(record);
    });
    const found = await Promise.all(newestFirst(matches, limit).map(({ id }) => this.get(id)));
    // A record may lapse or be deleted between the scan and the read.
    return found.filter((record) => record !== undefined);
  }

  async forceRelease(id: string): Promise<boolean> {
    assertId(id);
    return Number(await this.#run(FORCE_RELEASE, id, [this.#channel, id])) === 1;
  }

  /** Visits the records of each master of a cluster (or of the one server), with that node's time. */
  async #scan(visit: (now: number, records: ScannedRecord[]) => void): Promise<void> {
    const masters = await this.#guard('scan', () => this.#runner.keylessPerMaster());
    await Promise.all(masters.map((runKeyless) => this.#scanNode(runKeyless, visit)));
  }

  async #scanNode(runKeyless: KeylessRun, visit: (now: number, records: ScannedRecord[]) => void): Promise<void> {
    const pattern = `${globLiteral(this.#prefix)}:{*}`;
    const start = `${this.#prefix}:{`.length;
    let cursor = '0';
    do {
      const [next, now, rows] = (await this.#guard('scan', () => runKeyless(SCAN_RECORDS, [cursor, pattern, String(SCAN_COUNT)]))) as [Reply, Reply, Reply[][]];
      visit(Number(text(now)), rows.map(([name, state, created, expires, namespace, scope, key]) => ({
        id: text(name).slice(start, -1),
        state: text(state) as IdempotencyRecord['state'],
        createdAt: Number(text(created)),
        expiresAt: Number(text(expires)),
        meta: metaFromReply(namespace, scope, key),
      })));
      cursor = text(next);
    } while (cursor !== '0');
  }

  /**
   * Closes the subscriber connection `waitForSettle` opened, if any, and wakes its waiters.
   * Your client stays open: it belongs to you, who close it (`quit()` / `close()`).
   */
  async close(): Promise<void> {
    this.#settle?.close();
  }

  #key(id: string): string {
    return `${this.#prefix}:{${id}}`;
  }

  async #fenced(script: Script, id: string, args: ScriptArg[]): Promise<FencedResult> {
    return Number(await this.#run(script, id, args)) === 1 ? 'ok' : 'lost';
  }

  #run(script: Script, id: string, args: ScriptArg[]): Promise<unknown> {
    const key = this.#key(id);
    return this.#guard(script.name, () => this.#runner.run(script, key, args));
  }

  /** Bounds the call by `timeoutMs` and turns every client or server error into StoreUnavailableError. */
  #guard<T>(operation: string, work: () => Promise<T>): Promise<T> {
    const attempt = (async () => {
      try {
        return await work();
      } catch (error) {
        if (error instanceof OncelyError) throw error;
        const reason = error instanceof Error ? error.message : String(error);
        throw new StoreUnavailableError(`Redis ${operation} failed: ${reason}`, { cause: error });
      }
    })();
    return withTimeout(attempt, this.#timeoutMs, 'Redis');
  }
}
