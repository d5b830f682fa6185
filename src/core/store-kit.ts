/**
 * Pieces every store shares, so the decisions live in one place: how an existing record
 * answers a claim, how long a store call may take, what counts as valid input.
 */
import { randomUUID } from 'node:crypto';
import { InvalidOptionError, StoreUnavailableError } from './errors.js';
import { sameDigest } from './identity.js';
import type { Claim, IdempotencyRecord, RecordQuery, StoreStats } from './types.js';

/** Default bound on one store round trip. */
export const DEFAULT_STORE_TIMEOUT_MS = 5_000;

/**
 * How a live record answers a claim. A different fingerprint is a mismatch whatever the
 * state (DESIGN §3.4: checked before in-flight). Returns `undefined` when the record has
 * lapsed (lease or retention ended by the store's clock `now`) and may be taken over.
 */
export function answerFromExisting(record: IdempotencyRecord, fingerprint: string, now: number): Exclude<Claim, { status: 'acquired' }> | undefined {
  if (record.expiresAt <= now) return undefined;
  if (!sameDigest(record.fingerprint, fingerprint)) return { status: 'mismatch', record };
  return record.state === 'completed' ? { status: 'completed', record } : { status: 'in_progress', record };
}

/** A fresh fencing token: unguessable, unique per claim. */
export function newToken(): string {
  return randomUUID();
}

/**
 * Rejects with `StoreUnavailableError` when `work` takes longer than `timeoutMs`, so a dead
 * or black-holed server never hangs the caller. The late result, if any, is ignored.
 */
export function withTimeout<T>(work: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new StoreUnavailableError(`${what} did not answer within ${timeoutMs} ms`)), timeoutMs);
  });
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}

export function assertDuration(name: string, value: unknown): asserts value is number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0) {
    throw new InvalidOptionError(`${name} must be a positive whole number of milliseconds, got ${describeValue(value)}`);
  }
}

/** Longest delay a Node timer keeps: a longer one fires after 1 ms instead. */
export const MAX_TIMER_MS = 2_147_483_647;

/** A duration that becomes a timer's delay (a timeout, an interval). */
export function assertTimerDuration(name: string, value: unknown): asserts value is number {
  assertDuration(name, value);
  if (value > MAX_TIMER_MS) throw new InvalidOptionError(`${name} must be at most ${MAX_TIMER_MS} ms (about 24.8 days), got ${value}`);
}

/** A count or size: records, bytes, a limit. */
export function assertPositiveInteger(name: string, value: unknown): asserts value is number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0) {
    throw new InvalidOptionError(`${name} must be a positive whole number, got ${describeValue(value)}`);
  }
}

/**
 * What a wrong option value is, for an error message: its type or class, never its text,
 * since a string given where a client belongs is often a URL with a password in it.
 */
export function describeValue(value: unknown): string {
  if (value === null || value === undefined) return String(value);
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') return `the ${typeof value} ${String(value)}`;
  if (typeof value !== 'object') return `a ${typeof value}`;
  const name = (value as { constructor?: { name?: unknown } }).constructor?.name;
  return typeof name === 'string' && name !== '' && name !== 'Object' ? `a ${name}` : 'an object';
}

/**
 * The options a store constructor was given. Anything but an object (nothing at all, a URL
 * string) is an `InvalidOptionError` that shows `example`, the call to make instead.
 */
export function storeOptions<T>(options: T, store: string, example: string): T & object {
  if (typeof options !== 'object' || options === null) {
    throw new InvalidOptionError(`${store} needs an options object, got ${describeValue(options)}: ${example}`);
  }
  return options;
}

export function assertId(id: unknown): asserts id is string {
  if (typeof id !== 'string' || !/^[0-9a-f]{64}$/.test(id)) {
    throw new InvalidOptionError(`record id must be a SHA-256 hex digest (see identityId()), got ${JSON.stringify(id)}`);
  }
}

/** Validates a purge limit; default 1000. */
export function purgeLimit(limit: number | undefined): number {
  const value = limit ?? 1000;
  assertPositiveInteger('purge limit', value);
  return value;
}

/** Validates a `findByKey` query; the limit defaults to 20. */
export function recordQuery(query: RecordQuery): Required<Pick<RecordQuery, 'key' | 'limit'>> & Pick<RecordQuery, 'namespace' | 'scope'> {
  if (typeof query?.key !== 'string' || query.key.length === 0) throw new InvalidOptionError('findByKey needs a non-empty `key`');
  for (const part of ['namespace', 'scope'] as const) {
    if (query[part] !== undefined && typeof query[part] !== 'string') throw new InvalidOptionError(`findByKey: ${part} must be a string`);
  }
  const limit = query.limit ?? 20;
  assertPositiveInteger('findByKey limit', limit);
  return { ...query, limit };
}

/** Whether a record's meta matches a validated query. */
export function matchesQuery(record: Pick<IdempotencyRecord, 'meta'>, query: RecordQuery): boolean {
  const meta = record.meta;
  return meta?.key === query.key
    && (query.namespace === undefined || meta.namespace === query.namespace)
    && (query.scope === undefined || meta.scope === query.scope);
}

/** Newest first, at most `limit`: the order `findByKey` promises. */
export function newestFirst<T extends Pick<IdempotencyRecord, 'createdAt'>>(records: T[], limit: number): T[] {
  return records.sort((a, b) => b.createdAt - a.createdAt).slice(0, limit);
}

/** What the SQL stores' stats query returns, one row. */
export interface StatsRow {
  now_ms: number;
  in_progress: number;
  completed: number;
  lapsed: number;
  oldest_in_progress_ms: number | null;
}

export function statsFromRow(row: StatsRow): StoreStats {
  return {
    inProgress: row.in_progress,
    completed: row.completed,
    lapsed: row.lapsed,
    ...(row.oldest_in_progress_ms !== null ? { oldestInProgressAt: row.oldest_in_progress_ms } : {}),
    now: row.now_ms,
  };
}

/** Counts records (live or lapsed) into `StoreStats`, for stores that scan in process. */
export class StatsTally {
  readonly #stats: StoreStats;

  constructor(now: number) {
    this.#stats = { inProgress: 0, completed: 0, lapsed: 0, now };
  }

  add(record: Pick<IdempotencyRecord, 'state' | 'createdAt' | 'expiresAt'>): void {
    const stats = this.#stats;
    if (record.expiresAt <= stats.now) stats.lapsed++;
    else if (record.state === 'completed') stats.completed++;
    else {
      stats.inProgress++;
      if (stats.oldestInProgressAt === undefined || record.createdAt < stats.oldestInProgressAt) stats.oldestInProgressAt = record.createdAt;
    }
  }

  get stats(): StoreStats {
    return { ...this.#stats };
  }
}
