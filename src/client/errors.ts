import { OncelyError, type OncelyErrorCode } from '../core/errors.js';

/**
 * Why `send()` gave up, stable across versions:
 * - `NETWORK_ERROR`: the last attempt failed before a response arrived (connection refused or
 *   reset, DNS, CORS) and no retry was left;
 * - `TIMEOUT`: the last attempt got no response within `attemptTimeoutMs` and no retry was left;
 * - `DEADLINE_EXCEEDED`: `deadlineMs` ran out (or the next wait would cross it) with no response in hand;
 * - `BODY_NOT_REPLAYABLE`: the body is a one-shot stream that could not be sent again; nothing was sent.
 */
export type IdempotentFetchErrorCode = Extract<OncelyErrorCode, 'NETWORK_ERROR' | 'TIMEOUT' | 'DEADLINE_EXCEEDED' | 'BODY_NOT_REPLAYABLE'>;

/**
 * `send()` got no response it could return. The operation may or may not have run on the
 * server: retry it later with the same `key` to find out (you get the replay if it ran).
 */
export class IdempotentFetchError extends OncelyError {
  declare readonly code: IdempotentFetchErrorCode;
  /** Attempts made (0 when nothing was sent). */
  readonly attempts: number;
  /** The Idempotency-Key every attempt carried. */
  readonly key: string;

  constructor(code: IdempotentFetchErrorCode, message: string, details: { attempts: number; key: string; cause?: unknown }) {
    super(code, message, details.cause === undefined ? undefined : { cause: details.cause });
    this.attempts = details.attempts;
    this.key = details.key;
  }
}
