/**
 * The idempotent-consumer protocol, independent of any broker (DESIGN §4.2). For each delivery
 * it decides everything: the message's identity, the claim, running the handler, and the one
 * broker action that ends the delivery. Broker adapters only read their delivery into
 * `DeliveryFacts` and perform the returned action (ack / retry / dead-letter) exactly once.
 *
 * | claim outcome / result                         | action                                   |
 * |------------------------------------------------|------------------------------------------|
 * | acquired → handler succeeds → outcome stored   | ack                                      |
 * | completed (a duplicate delivery)               | ack, without running                     |
 * | in_progress (another consumer runs it)         | retry after the holder's lease           |
 * | mismatch (same identity, other payload)        | dead-letter, never run                   |
 * | handler throws a retryable error               | release, retry with backoff              |
 * | permanent error, or attempt ≥ maxAttempts      | release, dead-letter                     |
 * | lease lost while running                       | no completion; retry (redelivery finds the newer outcome) |
 * | store unreachable                              | nothing runs; retry with backoff         |
 */
import { fromJsonSafe, toJsonSafe, type Json } from '../core/codec.js';
import { claimOrWait, type ClaimOutcome, type Execution } from '../core/engine.js';
import { InvalidOptionError, LeaseLostError } from '../core/errors.js';
import { encodeFunctionOutcome, readFunctionOutcome } from '../core/function-outcome.js';
import { runInExecutionContext, type ExecutionContext } from '../core/execution-context.js';
import { identityId, sha256Hex } from '../core/identity.js';
import { OptionReader } from '../core/options.js';
import { describeValue } from '../core/store-kit.js';
import { isTransactionalStore, runTransactional } from '../core/transaction.js';
import type { IdempotencyStore, TransactionalStore } from '../core/types.js';

/** What an adapter knows about one delivery. */
export interface DeliveryFacts {
  /** The broker's identity of the message (RabbitMQ `messageId`, `Nats-Msg-Id`, SQS `MessageId`…); `undefined` when it has none. */
  id: string | undefined;
  /** The payload as delivered: the default fingerprint. */
  body: Uint8Array;
  /** Which delivery of this message this is, from 1, as the broker counts; `undefined` when it does not. */
  attempt: number | undefined;
  /** The queue, subject or topic: the default namespace, and named in events. */
  source: string;
  /** Extends the broker's hold on the message while the handler runs (JetStream `working()`, SQS visibility). */
  extendHold?: () => unknown;
}

export type DeadLetterReason = 'no-identity' | 'mismatch' | 'permanent-error' | 'max-attempts' | 'callback-failed';

/** The one thing the adapter does with the delivery. */
export type MessageAction =
  | { action: 'ack'; outcome: 'processed' | 'duplicate' }
  /** Do not ack: hand the message back for redelivery after `delayMs`. */
  | { action: 'retry'; delayMs: number; reason: 'in_progress' | 'failed' | 'store_error' | 'lease_lost'; error?: unknown }
  /** Never to be run: move it aside by the broker's own means (DLX, `term()`, DLQ) with `reason`. */
  | { action: 'dead-letter'; reason: DeadLetterReason; detail: string; error?: unknown };

export type MessageEvent =
  | { type: 'processed'; source: string; key: string; attempt: number | undefined; durationMs: number }
  | { type: 'duplicate'; source: string; key: string; attempt: number | undefined; durationMs: number }
  | { type: 'in_progress'; source: string; key: string; attempt: number | undefined; durationMs: number }
  | { type: 'mismatch'; source: string; key: string; attempt: number | undefined; durationMs: number }
  | { type: 'retry'; source: string; key: string; attempt: number | undefined; durationMs: number; delayMs: number; error: unknown }
  | { type: 'dead_lettered'; source: string; key: string | undefined; attempt: number | undefined; durationMs: number; reason: DeadLetterReason; error?: unknown }
  | { type: 'lease_lost'; source: string; key: string; attempt: number | undefined; durationMs: number }
  | { type: 'store_error'; source: string; key: string; attempt: number | undefined; durationMs: number; error: unknown };

export interface ConsumerOptions<M> {
  /** Where records are kept. */
  store: IdempotencyStore;
  /** The message's business key (`welcome-email:user-42`). Default: the broker's message identity. */
  key?: (message: M) => string;
  /** Whose key it is (a tenant). Default `''`. */
  scope?: (message: M) => string;
  /** Separates uses of one store. Default: the queue, subject or topic name. */
  namespace?: string;
  /** What makes two deliveries "the same message". Default: SHA-256 of the body bytes. */
  fingerprint?: (message: M) => string;
  /** Lease of a claim, extended every third of it (with the broker's hold) while the handler runs. Default 30 000 ms. */
  leaseMs?: number;
  /** How long a processed message's identity is remembered. Default 7 days: longer than brokers keep redelivering. */
  retentionMs?: number;
  /** Deliveries after which a failing message is dead-lettered. Default 5. */
  maxAttempts?: number;
  /** Errors that retrying cannot fix: dead-lettered at once. Default: none. */
  isPermanent?: (error: unknown) => boolean;
  /** Retry delay after a failure: `baseMs · 2^(attempt-1)`, capped at `maxMs`. Default `{ baseMs: 1000, maxMs: 60 000 }`. */
  backoff?: { baseMs: number; maxMs: number };
  /** Called for every delivery's outcome. What it throws is ignored. */
  observer?: (event: MessageEvent) => void;
  /**
   * Run the handler in one transaction of a PostgreSQL or SQLite store's database, with the
   * outcome completed inside it (`context.transaction` is the client): the handler's writes
   * there happen exactly once, even across a crash between the write and the ack. Default false.
   */
  transaction?: boolean;
}

/** What the handler gets besides the message. */
export interface MessageContext extends ExecutionContext {
  /**
   * With `transaction: true`: the client of the store's database transaction the outcome
   * commits in (`pg.PoolClient` for a PostgresStore, the better-sqlite3 `Database` for a
   * SqliteStore, whose handler must then be synchronous). Writes through it are exactly once.
   */
  transaction?: unknown;
}

export type MessageHandler<M> = (message: M, context: MessageContext) => unknown;

const OPTION_NAMES = ['store', 'key', 'scope', 'namespace', 'fingerprint', 'leaseMs', 'retentionMs', 'maxAttempts', 'isPermanent', 'backoff', 'observer', 'transaction'];
const WEEK_MS = 7 * 86_400_000;
/** A duplicate of work whose lease is about to lapse comes back no sooner than this: no spinning. */
const MIN_IN_PROGRESS_DELAY_MS = 250;

/** The options with defaults applied. */
export interface ConsumerSettings<M> {
  store: IdempotencyStore;
  key: ((message: M) => string) | undefined;
  scope: ((message: M) => string) | undefined;
  namespace: string | undefined;
  fingerprint: ((message: M) => string) | undefined;
  leaseMs: number;
  retentionMs: number;
  maxAttempts: number;
  isPermanent: (error: unknown) => boolean;
  backoff: { baseMs: number; maxMs: number };
  observer: ((event: MessageEvent) => void) | undefined;
  transaction: boolean;
}

/** The protocol's options with their defaults, each checked by `read`. */
function resolveConsumerOptions<M>(options: ConsumerOptions<M>, read: OptionReader): ConsumerSettings<M> {
  const backoff = read.raw('backoff') as { baseMs?: unknown; maxMs?: unknown } | undefined;
  if (backoff !== undefined) {
    const valid = (value: unknown) => typeof value === 'number' && Number.isSafeInteger(value) && value > 0;
    if (typeof backoff !== 'object' || backoff === null || !valid(backoff.baseMs) || !valid(backoff.maxMs) || (backoff.maxMs as number) < (backoff.baseMs as number)) {
      read.invalid('backoff', '{ baseMs, maxMs }: positive whole milliseconds, maxMs ≥ baseMs');
    }
  }
  const store = read.store();
  const transaction = read.boolean('transaction', false);
  if (transaction && !isTransactionalStore(store)) read.invalid('transaction', 'used with a store that runs transactions (PostgresStore, SqliteStore)');
  return {
    store,
    key: read.function('key'),
    scope: read.function('scope'),
    namespace: options.namespace === undefined ? undefined : read.string('namespace', ''),
    fingerprint: read.function('fingerprint'),
    leaseMs: read.duration('leaseMs', 30_000),
    retentionMs: read.count('retentionMs', WEEK_MS),
    maxAttempts: read.count('maxAttempts', 5),
    isPermanent: read.function<(error: unknown) => boolean>('isPermanent') ?? (() => false),
    backoff: (backoff as { baseMs: number; maxMs: number } | undefined) ?? { baseMs: 1_000, maxMs: 60_000 },
    observer: read.function('observer'),
    transaction,
  };
}

/** A user callback (`key`, `scope`, `fingerprint`) failed: the message can never be identified. */
class CallbackFailure {
  constructor(
    readonly detail: string,
    readonly error: unknown,
    readonly reason: 'no-identity' | 'callback-failed' = 'callback-failed',
  ) {}
}

/** `scope` may be `''` (one scope, as by default); a key or fingerprint may not. */
function callString<M>(name: 'key' | 'scope' | 'fingerprint', callback: (message: M) => string, message: M): string {
  let value: unknown;
  try {
    value = callback(message);
  } catch (error) {
    throw new CallbackFailure(`\`${name}\` threw`, error);
  }
  if (typeof value !== 'string' || (value.length === 0 && name !== 'scope')) throw new CallbackFailure(`\`${name}\` must return a ${name === 'scope' ? '' : 'non-empty '}string`, undefined);
  return value;
}

export interface MessageProtocol<M> {
  /**
   * Decides one delivery: runs `handler` at most once per identity and returns the action. Never throws.
   * `onValue`, before an ack: the handler's return value, or a duplicate's stored one (`undefined` if unreadable).
   */
  deliver(message: M, facts: DeliveryFacts, handler: MessageHandler<M>, onValue?: (value: unknown) => void): Promise<MessageAction>;
  settings: ConsumerSettings<M>;
  /** The reader that checked every option name: the adapter reads its own options (`adapterOptions`) with it. */
  read: OptionReader;
}

/** Refuses, when the consumer is made, a handler that is not a function. */
export function checkHandler(owner: string, handler: unknown): void {
  if (typeof handler !== 'function') throw new InvalidOptionError(`${owner}: \`handler\` must be a function, got ${describeValue(handler)}`, 'handler');
}

/** Checks the options once, when the consumer is made. `adapterOptions`: names the adapter itself reads. */
export function createMessageProtocol<M>(options: ConsumerOptions<M>, owner = 'consumer', adapterOptions: readonly string[] = []): MessageProtocol<M> {
  const read = new OptionReader(owner, options, [...OPTION_NAMES, ...adapterOptions]);
  const o = resolveConsumerOptions(options, read);
  const observe = (event: MessageEvent) => {
    try {
      o.observer?.(event);
    } catch {
      // An observer's failure must not change what happens to the message.
    }
  };
  // A classifier that throws cannot say "permanent": the message is retried, up to maxAttempts.
  const permanent = (error: unknown) => {
    try {
      return o.isPermanent(error) === true;
    } catch {
      return false;
    }
  };
  const backoffMs = (attempt: number | undefined) => Math.min(o.backoff.maxMs, o.backoff.baseMs * 2 ** Math.min(30, Math.max(0, (attempt ?? 1) - 1)));

  return { deliver, settings: o, read };

  async function deliver(message: M, facts: DeliveryFacts, handler: MessageHandler<M>, onValue?: (value: unknown) => void): Promise<MessageAction> {
    const started = performance.now();
    const base = { source: facts.source, attempt: facts.attempt };
    const elapsed = () => performance.now() - started;
    const deadLetter = (reason: DeadLetterReason, detail: string, key: string | undefined, error?: unknown): MessageAction => {
      observe({ type: 'dead_lettered', ...base, key, durationMs: elapsed(), reason, ...(error === undefined ? {} : { error }) });
      return { action: 'dead-letter', reason, detail, ...(error === undefined ? {} : { error }) };
    };

    let identity: { key: string; scope: string; namespace: string; id: string; fingerprint: string };
    try {
      identity = identify(message, facts);
    } catch (failure) {
      if (!(failure instanceof CallbackFailure)) throw failure;
      return deadLetter(failure.reason, failure.detail, undefined, failure.error);
    }
    const { key } = identity;

    let claim: ClaimOutcome;
    try {
      claim = await claimOrWait({
        store: o.store,
        id: identity.id,
        fingerprint: identity.fingerprint,
        meta: { namespace: identity.namespace, scope: identity.scope, key },
        leaseMs: o.leaseMs,
        retentionMs: o.retentionMs,
        heartbeat: true,
        waitMs: 0,
        ...(facts.extendHold ? { onHeartbeat: facts.extendHold } : {}),
      });
    } catch (error) {
      const delayMs = backoffMs(facts.attempt);
      observe({ type: 'store_error', ...base, key, durationMs: elapsed(), error });
      return { action: 'retry', delayMs, reason: 'store_error', error };
    }

    switch (claim.status) {
      case 'completed':
        observe({ type: 'duplicate', ...base, key, durationMs: elapsed() });
        onValue?.(storedValue(claim.record.outcome));
        return { action: 'ack', outcome: 'duplicate' };
      case 'mismatch':
        observe({ type: 'mismatch', ...base, key, durationMs: elapsed() });
        return deadLetter('mismatch', `a message with identity ${JSON.stringify(key)} was already processed with another payload`, key);
      case 'in_progress': {
        observe({ type: 'in_progress', ...base, key, durationMs: elapsed() });
        // Come back once the holder's lease would have lapsed: by then it finished or crashed.
        // The lease end is the store's clock; bounded by this consumer's lease, so clock skew
        // can shorten the wait for a crashed holder but never make it longer than a lease.
        const remaining = Math.ceil(claim.record.expiresAt - Date.now());
        return { action: 'retry', delayMs: Math.min(o.leaseMs, Math.max(MIN_IN_PROGRESS_DELAY_MS, remaining)), reason: 'in_progress' };
      }
      case 'acquired':
        return run(claim.execution, message, facts, handler, identity, started, onValue);
    }
  }

  function identify(message: M, facts: DeliveryFacts) {
    const key = o.key ? callString('key', o.key, message) : facts.id;
    if (key === undefined || key === '') {
      throw new CallbackFailure(
        `no identity: the message from ${facts.source} has no message id. Set one when publishing (e.g. RabbitMQ messageId, Nats-Msg-Id) or pass \`key(message)\`; oncely never identifies a message by its content, since two equal messages can be two operations`,
        undefined,
        'no-identity',
      );
    }
    const scope = o.scope ? callString('scope', o.scope, message) : '';
    const namespace = o.namespace ?? facts.source;
    const fingerprint = o.fingerprint ? callString('fingerprint', o.fingerprint, message) : sha256Hex(facts.body);
    let id: string;
    try {
      id = identityId(namespace, scope, key);
    } catch (error) {
      throw new CallbackFailure(`the identity is not usable: ${(error as Error).message}`, error);
    }
    return { key, scope, namespace, id, fingerprint };
  }

  async function run(execution: Execution, message: M, facts: DeliveryFacts, handler: MessageHandler<M>, identity: { key: string; scope: string; namespace: string }, started: number, onValue?: (value: unknown) => void): Promise<MessageAction> {
    const { key } = identity;
    const base = { source: facts.source, attempt: facts.attempt, key };
    const elapsed = () => performance.now() - started;
    const context: MessageContext = {
      get signal() {
        return execution.signal;
      },
      downstreamKey: execution.downstreamKey,
      ...identity,
      protected: true,
    };
    const result = await runInExecutionContext(context, () => (o.transaction ? inTransaction(execution, o.store as TransactionalStore<unknown>, context, message, handler) : outsideTransaction(execution, context, message, handler)));
    if (result.kind === 'failed') {
      const { error } = result;
      const exhausted = facts.attempt !== undefined && facts.attempt >= o.maxAttempts;
      if (exhausted || permanent(error)) {
        const reason = exhausted ? 'max-attempts' : 'permanent-error';
        observe({ type: 'dead_lettered', ...base, durationMs: elapsed(), reason, error });
        return { action: 'dead-letter', reason, detail: describe(error), error };
      }
      const delayMs = backoffMs(facts.attempt);
      observe({ type: 'retry', ...base, durationMs: elapsed(), delayMs, error });
      return { action: 'retry', delayMs, reason: 'failed', error };
    }
    if (result.kind === 'not-stored') {
      const { error } = result;
      if (error instanceof LeaseLostError) {
        observe({ type: 'lease_lost', ...base, durationMs: elapsed() });
        return { action: 'retry', delayMs: 0, reason: 'lease_lost', error };
      }
      // Outside a transaction the handler ran but its outcome is not stored: the claim lapses
      // after the lease and a redelivery runs it again (at-least-once, like a crash). In one,
      // the failed COMMIT rolled the handler's writes back and freed the claim.
      observe({ type: 'store_error', ...base, durationMs: elapsed(), error });
      return { action: 'retry', delayMs: o.transaction ? backoffMs(facts.attempt) : o.leaseMs, reason: 'store_error', error };
    }
    const { value } = result;
    observe({ type: 'processed', ...base, durationMs: elapsed() });
    onValue?.(value);
    return { action: 'ack', outcome: 'processed' };
  }
}

/** How running the handler under a claim ended: its value stored; it failed (claim released); or it ran but nothing was stored. */
type RunResult = { kind: 'stored'; value: unknown } | { kind: 'failed'; error: unknown } | { kind: 'not-stored'; error: unknown };

async function outsideTransaction<M>(execution: Execution, context: MessageContext, message: M, handler: MessageHandler<M>): Promise<RunResult> {
  let value: unknown;
  try {
    value = await handler(message, context);
  } catch (error) {
    await execution.release();
    return { kind: 'failed', error };
  }
  try {
    await execution.complete(outcomeBytes(value));
  } catch (error) {
    return { kind: 'not-stored', error };
  }
  return { kind: 'stored', value };
}

async function inTransaction<M>(execution: Execution, store: TransactionalStore<unknown>, context: MessageContext, message: M, handler: MessageHandler<M>): Promise<RunResult> {
  // Encoding is the step right before the completion: an error before it is the handler's (or
  // BEGIN's), and runTransactional has rolled back and released; after it, nothing was stored.
  let completing = false;
  const encode = (value: unknown) => {
    completing = true;
    return outcomeBytes(value);
  };
  const work = (tx: unknown) => {
    context.transaction = tx;
    return handler(message, context);
  };
  try {
    return { kind: 'stored', value: await runTransactional(execution, store, work, encode) };
  } catch (error) {
    return completing ? { kind: 'not-stored', error } : { kind: 'failed', error };
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}

/** The handler's return value, kept for operators (`oncely inspect`); one that cannot be encoded is kept as its description. */
function outcomeBytes(value: unknown): Uint8Array {
  let json: Json;
  try {
    json = toJsonSafe(value);
  } catch {
    json = { unserializable: Object.prototype.toString.call(value) };
  }
  return encodeFunctionOutcome({ ok: true, value: json });
}

/** A duplicate's stored return value, as `idempotent()` replays it; `undefined` for bytes another writer left. */
function storedValue(bytes: Uint8Array): unknown {
  try {
    const outcome = readFunctionOutcome(bytes);
    return outcome.ok ? fromJsonSafe(outcome.value) : undefined;
  } catch {
    return undefined;
  }
}
