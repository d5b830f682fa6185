/**
 * An in-process store for tests and single-process services. Bounded: at most `maxRecords`
 * records; when full, the least recently used COMPLETED record is evicted (an in-progress one
 * never is; a claim that would need to is refused). Every operation is O(1); lapsed records are
 * removed lazily on access and by a sweep of the oldest entries.
 */
import { StoreUnavailableError } from '../../core/errors.js';
import { StatsTally, answerFromExisting, assertDuration, assertId, matchesQuery, newToken, newestFirst, purgeLimit, recordQuery } from '../../core/store-kit.js';
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
}

interface CompletedEntry extends RecencyNode {
  record: CompletedRecord;
}

const monotonicNow = (): number => performance.timeOrigin + performance.now();

export class MemoryStore implements OperableStore {
  // Map iteration order is insertion order. In progress: re-inserted on extend, so the head
  // lapses first (this map only holds running work, so the churn stays small). Completed: never
  // re-inserted, so the head completed first and, with a uniform retention, lapses first;
  // recency for eviction lives in a separate linked list.
  private readonly inProgress = new Map<string, HeldRecord>();
  private readonly completed = new Map<string, CompletedEntry>();
  private readonly recency = new RecencyList<CompletedEntry>();
  private readonly maxRecords: number;
  private readonly now: () => number;
  private readonly sweepTimer: NodeJS.Timeout | undefined;

  constructor(options: MemoryStoreOptions = {}) {
    this.maxRecords = options.maxRecords ?? 100_000;
    assertDuration('maxRecords', this.maxRecords);
    this.now = options.now ?? monotonicNow;
    const sweepIntervalMs = options.sweepIntervalMs ?? 10_000;
    if (sweepIntervalMs > 0) {
      this.sweepTimer = setInterval(() => void this.purgeExpired({ limit: 1000 }), sweepIntervalMs);
      this.sweepTimer.unref();
    }
  }

  /** Records currently held (live or not yet swept). */
  get size(): number {
    return this.inProgress.size + this.completed.size;
  }

  private live(id: string, now: number): IdempotencyRecord | undefined {
    const held = this.inProgress.get(id);
    if (held) {
      if (held.record.expiresAt > now) return held.record;
      this.inProgress.delete(id);
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
    this.makeRoom();
    const token = newToken();
    const record: InProgressRecord = {
      id: request.id,
      state: 'in_progress',
      fingerprint: request.fingerprint,
      createdAt: now,
      expiresAt: now + request.leaseMs,
      ...(request.meta ? { meta: { ...request.meta } } : {}),
    };
    this.inProgress.set(request.id, { record, token });
    return { status: 'acquired', token, expiresAt: record.expiresAt };
  }

  private makeRoom(): void {
    while (this.size >= this.maxRecords) {
      const leastRecent = this.recency.leastRecent;
      if (!leastRecent) {
        throw new StoreUnavailableError(`MemoryStore is full: ${this.inProgress.size} records are in progress (maxRecords ${this.maxRecords})`);
      }
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
    this.inProgress.delete(id);
    const now = this.now();
    const { state: _state, expiresAt: _leaseEnd, ...rest } = held.record;
    // A private copy (the caller may reuse its buffer); Buffer.from copies small outcomes into
    // Node's shared pool instead of giving each its own ArrayBuffer, which the GC feels.
    const entry: CompletedEntry = { record: { ...rest, state: 'completed', expiresAt: now + retentionMs, outcome: Buffer.from(outcome) }, older: undefined, newer: undefined };
    this.completed.set(id, entry);
    this.recency.push(entry);
    return 'ok';
  }

  async release(id: string, token: string): Promise<FencedResult> {
    assertId(id);
    if (!this.holder(id, token)) return 'lost';
    this.inProgress.delete(id);
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
    return this.inProgress.delete(id) || entry !== undefined;
  }

  async purgeExpired(options?: PurgeOptions): Promise<number> {
    const limit = purgeLimit(options?.limit);
    const now = this.now();
    let removed = 0;
    // Both maps are roughly ordered by lapse time from the head; stop at the first live entry.
    for (const [id, held] of this.inProgress) {
      if (removed >= limit || held.record.expiresAt > now) break;
      this.inProgress.delete(id);
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
    return held !== undefined && held.record.expiresAt > this.now() && this.inProgress.delete(id);
  }

  async close(): Promise<void> {
    clearInterval(this.sweepTimer);
  }
}
