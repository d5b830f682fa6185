/**
 * An in-process store for tests and single-process services. Bounded: at most `maxRecords`
 * records and `maxBytes` bytes; when either is full, the least recently used COMPLETED record
 * is evicted (an in-progress one never is; a claim or completion that would need to is
 * refused). Every operation is O(1); lapsed records are removed lazily on access and by a
 * sweep of the oldest entries.
 */
import { InvalidOptionError, StoreUnavailableError } from '../../core/errors.js';
import {
  StatsTally,
  answerFromExisting,
  assertDuration,
  assertId,
  assertPositiveInteger,
  assertTimerDuration,
  describeValue,
  matchesQuery,
  newToken,
  newestFirst,
  purgeLimit,
  recordQuery,
  storeOptions,
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
  RecordQuery,
  StoreStats,
} from '../../core/types.js';
import { RecencyList, type RecencyNode } from './recency-list.js';

export interface MemoryStoreOptions {
  /** Most records kept (in progress + completed). Default 100 000. */
  maxRecords?: number;
  /**
   * Most bytes kept, as the store counts them (`bytes`): every stored outcome's length, plus
   * 2 bytes per character of each record's id, fingerprint, namespace, scope and key. When a
   * claim or a completion would pass it, the least recently used completed records are evicted,
   * as for `maxRecords`; an outcome that does not fit beside the in-progress records is
   * refused with `StoreUnavailableError`. The fixed cost of a record (about 500 bytes of
   * objects) is not counted: `maxRecords` bounds it. Default 64 MiB.
   */
  maxBytes?: number;
  /**
   * How often lapsed records are swept, in ms; 0 turns the timer off (lapsed records are then
   * removed on access, by eviction, or by `purgeExpired`). Default 10 000. The timer is unref'd.
   */
  sweepIntervalMs?: number;
  /** Clock in epoch ms. Default: a monotonic wall clock unaffected by changes to `Date.now`. */
  now?: () => number;
}

interface HeldRecord {
  record: InProgressRecord;
  token: string;
  /** What the record counts for against `maxBytes`. */
  bytes: number;
}

interface CompletedEntry extends RecencyNode {
  record: CompletedRecord;
  bytes: number;
}

const monotonicNow = (): number => performance.timeOrigin + performance.now();

const DEFAULT_MAX_BYTES = 64 * 1024 * 1024;

/** A record's strings as `maxBytes` counts them: 2 bytes a character (UTF-16), the most a JS string takes. */
function textBytes(record: IdempotencyRecord): number {
  const { id, fingerprint, meta } = record;
  return 2 * (id.length + fingerprint.length + (meta?.namespace?.length ?? 0) + (meta?.scope?.length ?? 0) + (meta?.key?.length ?? 0));
}

/** `sweepIntervalMs`: 0 (no timer) or a timer's delay. */
function sweepInterval(value: unknown): number {
  if (value === 0) return 0;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new InvalidOptionError(`sweepIntervalMs must be 0 (no timer) or a positive whole number of milliseconds, got ${describeValue(value)}`);
  }
  assertTimerDuration('sweepIntervalMs', value);
  return value;
}

export class MemoryStore implements OperableStore {
  // Map iteration order is insertion order. In progress: re-inserted on extend, so the head
  // lapses first (this map only holds running work, so the churn stays small). Completed: never
  // re-inserted, so the head completed first and, with a uniform retention, lapses first;
  // recency for eviction lives in a separate linked list.
  private readonly inProgress = new Map<string, HeldRecord>();
  private readonly completed = new Map<string, CompletedEntry>();
  private readonly recency = new RecencyList<CompletedEntry>();
  private readonly maxRecords: number;
  private readonly maxBytes: number;
  /** Bytes counted by in-progress records (never evicted) and by completed ones. */
  private heldBytes = 0;
  private completedBytes = 0;
  private readonly now: () => number;
  private readonly sweepTimer: NodeJS.Timeout | undefined;

  constructor(options: MemoryStoreOptions = {}) {
    const { maxRecords = 100_000, maxBytes = DEFAULT_MAX_BYTES, now = monotonicNow } = storeOptions(options, 'MemoryStore', 'new MemoryStore({ maxRecords: 100_000 })');
    assertPositiveInteger('maxRecords', maxRecords);
    assertPositiveInteger('maxBytes', maxBytes);
    if (typeof now !== 'function') throw new InvalidOptionError(`now must be a function returning epoch milliseconds, got ${describeValue(now)}`);
    const sweepIntervalMs = sweepInterval(options.sweepIntervalMs ?? 10_000);
    this.maxRecords = maxRecords;
    this.maxBytes = maxBytes;
    this.now = now;
    if (sweepIntervalMs > 0) {
      this.sweepTimer = setInterval(() => void this.purgeExpired({ limit: 1000 }), sweepIntervalMs);
      this.sweepTimer.unref();
    }
  }

  /** Records currently held (live or not yet swept). */
  get size(): number {
    return this.inProgress.size + this.completed.size;
  }

  /** Bytes currently held, as `maxBytes` counts them. */
  get bytes(): number {
    return this.heldBytes + this.completedBytes;
  }

  private live(id: string, now: number): IdempotencyRecord | undefined {
    const held = this.inProgress.get(id);
    if (held) {
      if (held.record.expiresAt > now) return held.record;
      this.removeHeld(id, held);
      return undefined;
    }
    const done = this.completed.get(id);
    if (!done) return undefined;
    if (done.record.expiresAt <= now) {
      this.removeCompleted(id, done);
      return undefined;
    }
    this.recency.touch(done);
    return done.record;
  }

  private removeCompleted(id: string, entry: CompletedEntry): void {
    this.completed.delete(id);
    this.recency.remove(entry);
    this.completedBytes -= entry.bytes;
  }

  private removeHeld(id: string, held: HeldRecord): void {
    this.inProgress.delete(id);
    this.heldBytes -= held.bytes;
  }

  async claim(request: ClaimRequest): Promise<Claim> {
    assertId(request.id);
    assertDuration('leaseMs', request.leaseMs);
    const now = this.now();
    const existing = this.live(request.id, now);
    if (existing) {
      const answer = answerFromExisting(existing, request.fingerprint, now);
      if (answer) return answer;
    }
    const token = newToken();
    const record: InProgressRecord = {
      id: request.id,
      state: 'in_progress',
      fingerprint: request.fingerprint,
      createdAt: now,
      expiresAt: now + request.leaseMs,
      ...(request.meta ? { meta: { ...request.meta } } : {}),
    };
    const bytes = textBytes(record);
    if (this.inProgress.size + 1 > this.maxRecords) {
      throw new StoreUnavailableError(`MemoryStore is full: ${this.inProgress.size} records are in progress (maxRecords ${this.maxRecords})`);
    }
    if (this.heldBytes + bytes > this.maxBytes) {
      throw new StoreUnavailableError(`MemoryStore is full: in-progress records hold ${this.heldBytes} bytes (maxBytes ${this.maxBytes})`);
    }
    this.makeRoom(1, bytes);
    this.inProgress.set(request.id, { record, token, bytes });
    this.heldBytes += bytes;
    return { status: 'acquired', token, expiresAt: record.expiresAt };
  }

  /**
   * Evicts the least recently used completed records until `records` more records and `bytes`
   * more bytes fit. The caller has checked that they fit beside the in-progress records, which
   * are never evicted.
   */
  private makeRoom(records: number, bytes: number): void {
    while (this.size + records > this.maxRecords || this.bytes + bytes > this.maxBytes) {
      const leastRecent = this.recency.leastRecent!;
      this.removeCompleted(leastRecent.record.id, leastRecent);
    }
  }

  private holder(id: string, token: string): HeldRecord | undefined {
    const held = this.inProgress.get(id);
    return held && held.token === token ? held : undefined;
  }

  async complete(id: string, token: string, outcome: Uint8Array, retentionMs: number): Promise<FencedResult> {
    assertId(id);
    assertDuration('retentionMs', retentionMs);
    const held = this.holder(id, token);
    if (!held) return 'lost';
    // Checked before anything is evicted: an outcome that cannot fit must not empty the store.
    if (this.heldBytes + outcome.byteLength > this.maxBytes) {
      throw new StoreUnavailableError(`MemoryStore cannot keep an outcome of ${outcome.byteLength} bytes: maxBytes is ${this.maxBytes}, and in-progress records hold ${this.heldBytes}`);
    }
    this.makeRoom(0, outcome.byteLength);
    this.removeHeld(id, held);
    const now = this.now();
    const { state: _state, expiresAt: _leaseEnd, ...rest } = held.record;
    // A private copy (the caller may reuse its buffer) of its own: not Buffer.from, which copies
    // small outcomes into Node's shared 8 KiB slabs, so that a kept 200-byte outcome pins a whole
    // slab of other garbage (measured: 1e6 such records held 918 MiB of slabs for 191 MiB of
    // outcomes; own copies 191 MiB, and evicting at capacity ran 3x faster).
    const entry: CompletedEntry = { record: { ...rest, state: 'completed', expiresAt: now + retentionMs, outcome: new Uint8Array(outcome) }, bytes: held.bytes + outcome.byteLength, older: undefined, newer: undefined };
    this.completed.set(id, entry);
    this.recency.push(entry);
    this.completedBytes += entry.bytes;
    return 'ok';
  }

  async release(id: string, token: string): Promise<FencedResult> {
    assertId(id);
    const held = this.holder(id, token);
    if (!held) return 'lost';
    this.removeHeld(id, held);
    return 'ok';
  }

  async extend(id: string, token: string, leaseMs: number): Promise<FencedResult> {
    assertId(id);
    assertDuration('leaseMs', leaseMs);
    const held = this.holder(id, token);
    if (!held) return 'lost';
    held.record = { ...held.record, expiresAt: this.now() + leaseMs };
    this.inProgress.delete(id);
    this.inProgress.set(id, held);
    return 'ok';
  }

  async get(id: string): Promise<IdempotencyRecord | undefined> {
    assertId(id);
    return this.live(id, this.now());
  }

  async delete(id: string): Promise<boolean> {
    assertId(id);
    const entry = this.completed.get(id);
    if (entry) this.removeCompleted(id, entry);
    const held = this.inProgress.get(id);
    if (held) this.removeHeld(id, held);
    return held !== undefined || entry !== undefined;
  }

  async purgeExpired(options?: PurgeOptions): Promise<number> {
    const limit = purgeLimit(options?.limit);
    const now = this.now();
    let removed = 0;
    // Both maps are roughly ordered by lapse time from the head; stop at the first live entry.
    for (const [id, held] of this.inProgress) {
      if (removed >= limit || held.record.expiresAt > now) break;
      this.removeHeld(id, held);
      removed++;
    }
    for (const [id, entry] of this.completed) {
      if (removed >= limit || entry.record.expiresAt > now) break;
      this.removeCompleted(id, entry);
      removed++;
    }
    return removed;
  }

  async stats(): Promise<StoreStats> {
    const tally = new StatsTally(this.now());
    for (const { record } of this.inProgress.values()) tally.add(record);
    for (const { record } of this.completed.values()) tally.add(record);
    return tally.stats;
  }

  async findByKey(query: RecordQuery): Promise<IdempotencyRecord[]> {
    const { limit, ...match } = recordQuery(query);
    const now = this.now();
    const found: IdempotencyRecord[] = [];
    for (const { record } of [...this.inProgress.values(), ...this.completed.values()]) {
      if (record.expiresAt > now && matchesQuery(record, match)) found.push(record);
    }
    return newestFirst(found, limit);
  }

  async forceRelease(id: string): Promise<boolean> {
    assertId(id);
    const held = this.inProgress.get(id);
    if (held === undefined || held.record.expiresAt <= this.now()) return false;
    this.removeHeld(id, held);
    return true;
  }

  async close(): Promise<void> {
    clearInterval(this.sweepTimer);
  }
}
