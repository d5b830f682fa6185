export { idempotent } from './core/idempotent.js';
export type { IdempotentOptions, TransactionalOptions } from './core/idempotent.js';
export { executionContext, findExecutionContext } from './core/execution-context.js';
export type { ExecutionContext } from './core/execution-context.js';
export { MemoryStore } from './stores/memory/index.js';
export type { MemoryStoreOptions } from './stores/memory/index.js';
export { identityId, sha256Hex } from './core/identity.js';
export { canonicalJson, encodeValue, decodeValue } from './core/codec.js';
export { sweepExpired } from './core/sweep.js';
export {
  OncelyError,
  InProgressError,
  KeyReuseError,
  InvalidKeyError,
  StoreUnavailableError,
  UnserializableResultError,
  LeaseLostError,
  StoredFailureError,
  InvalidOptionError,
} from './core/errors.js';
export type { OncelyErrorCode } from './core/errors.js';
export { answerFromExisting, newToken, withTimeout, DEFAULT_STORE_TIMEOUT_MS } from './core/store-kit.js';
export type {
  IdempotencyStore,
  IdempotencyRecord,
  InProgressRecord,
  CompletedRecord,
  RecordMeta,
  ClaimRequest,
  Claim,
  FencedResult,
  PurgeOptions,
  OperableStore,
  StoreStats,
  RecordQuery,
  TransactionalStore,
} from './core/types.js';
