/**
 * Pieces every store shares, so the decisions live in one place: how an existing record
 * answers a claim, how long a store call may take, what counts as valid input.
 */
import { randomUUID } from 'node:crypto';
import { InvalidOptionError, StoreUnavailableError } from './errors.js';
import { sameDigest } from './identity.js';
import type { Claim, IdempotencyRecord } from './types.js';

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
    throw new InvalidOptionError(`${name} must be a positive whole number of milliseconds, got ${String(value)}`);
  }
}

export function assertId(id: unknown): asserts id is string {
  if (typeof id !== 'string' || !/^[0-9a-f]{64}$/.test(id)) {
    throw new InvalidOptionError(`record id must be a SHA-256 hex digest (see identityId()), got ${JSON.stringify(id)}`);
  }
}

/** Validates a purge limit; default 1000. */
export function purgeLimit(limit: number | undefined): number {
  const value = limit ?? 1000;
  assertDuration('purge limit', value);
  return value;
}
