import type { IdempotencyRecord, InProgressRecord } from './types.js';

export type OncelyErrorCode =
  | 'IN_PROGRESS'
  | 'KEY_REUSED'
  | 'KEY_INVALID'
  | 'STORE_UNAVAILABLE'
  | 'UNSERIALIZABLE_RESULT'
  | 'LEASE_LOST'
  | 'STORED_FAILURE'
  | 'NO_EXECUTION_CONTEXT'
  | 'INVALID_OPTION'
  // oncely/client: why a retrying fetch got no response (see IdempotentFetchError).
  | 'NETWORK_ERROR'
  | 'TIMEOUT'
  | 'DEADLINE_EXCEEDED'
  | 'BODY_NOT_REPLAYABLE';

/** Base of every error oncely throws; branch on `code`, which is stable across versions. */
export class OncelyError extends Error {
  readonly code: OncelyErrorCode;

  constructor(code: OncelyErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** Another execution of the same identity (same fingerprint) holds the claim. */
export class InProgressError extends OncelyError {
  readonly record: InProgressRecord;
  /** How long until the holder's lease lapses, from the store's clock at claim time. */
  readonly retryAfterMs: number;

  constructor(record: InProgressRecord, retryAfterMs: number) {
    super('IN_PROGRESS', `Another execution of this key is in progress; retry in ${Math.ceil(retryAfterMs / 1000)} s`);
    this.record = record;
    this.retryAfterMs = retryAfterMs;
  }
}

/** The key was first used with a different fingerprint (other arguments or payload). */
export class KeyReuseError extends OncelyError {
  readonly record: IdempotencyRecord;

  constructor(record: IdempotencyRecord) {
    super('KEY_REUSED', 'This idempotency key was already used with different arguments');
    this.record = record;
  }
}

/** A key or identity part is empty, too long, or not a string. */
export class InvalidKeyError extends OncelyError {
  constructor(message: string) {
    super('KEY_INVALID', message);
  }
}

/** The store could not be reached or did not answer in time. Nothing ran (fail closed). */
export class StoreUnavailableError extends OncelyError {
  constructor(message: string, options?: ErrorOptions) {
    super('STORE_UNAVAILABLE', message, options);
  }
}

/** The wrapped function returned a value the codec cannot store faithfully. */
export class UnserializableResultError extends OncelyError {
  /** Where in the value the problem is, e.g. `$.items[2].owner`. */
  readonly path: string;

  constructor(path: string, what: string) {
    super('UNSERIALIZABLE_RESULT', `Cannot store ${what} at ${path}: only JSON values, Date, BigInt, Uint8Array/Buffer, Map, Set and undefined can be stored`);
    this.path = path;
  }
}

/** The claim was taken over (lease lapsed) while the work ran; its result was not stored. */
export class LeaseLostError extends OncelyError {
  constructor(message = 'The lease on this key was lost while the work ran; its result was not stored') {
    super('LEASE_LOST', message);
  }
}

/** Replays an error stored with `onError: 'store'`. */
export class StoredFailureError extends OncelyError {
  /** The `name` of the error the first execution threw. */
  readonly originalName: string;

  constructor(originalName: string, message: string) {
    super('STORED_FAILURE', message);
    this.originalName = originalName;
  }
}

/** An option or argument is missing, of the wrong type or out of range; `option` names it when it is an option. */
export class InvalidOptionError extends OncelyError {
  readonly option: string | undefined;

  constructor(message: string, option?: string) {
    super('INVALID_OPTION', message);
    this.option = option;
  }
}
