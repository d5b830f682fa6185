/**
 * `oncely/client`: a retrying `fetch` that sends one `Idempotency-Key` per logical operation,
 * so a retry after a lost response gets the first outcome instead of doing the work twice.
 * Web platform APIs only: runs in browsers, Node, Bun, Deno and workers.
 */
import { InvalidOptionError } from '../core/errors.js';
import { backoffDelay, retryAfterMs } from './backoff.js';
import { IdempotentFetchError } from './errors.js';
import { checkKey, headerValue } from './key.js';
import { forgetOperationKey, operationKey, type KeyStore } from './key-store.js';
import { prepareRequest, type PreparedRequest } from './request.js';

export { IdempotentFetchError } from './errors.js';
export type { IdempotentFetchErrorCode } from './errors.js';
export { sessionStorageKeyStore, memoryKeyStore } from './key-store.js';
export type { KeyStore } from './key-store.js';
export { OncelyError, InvalidKeyError, InvalidOptionError } from '../core/errors.js';

/** The shape of `fetch` the client calls; `globalThis.fetch`, undici's, or a test double. */
export type FetchFunction = (input: string | URL | Request, init?: RequestInit) => Promise<Response>;

/**
 * Why an attempt is retried:
 * - `network-error`: `fetch` rejected (connection refused or reset, DNS);
 * - `timeout`: no response within `attemptTimeoutMs`;
 * - `in-progress`: 409 from the idempotency layer, the first attempt is still running;
 * - `rate-limited`: 429;
 * - `server-error`: 500, 502, 503, 504 (or another 5xx in `retryStatuses`);
 * - `retryable-status`: another status you listed in `retryStatuses`.
 */
export type RetryReason = 'network-error' | 'timeout' | 'in-progress' | 'rate-limited' | 'server-error' | 'retryable-status';

export interface RetryEvent {
  /** The attempt that just failed, from 1; the next one is `attempt + 1`. */
  attempt: number;
  /** How long the client waits before the next attempt. */
  delayMs: number;
  reason: RetryReason;
  /** The key every attempt of this operation carries. */
  key: string;
  /** The status of the failed attempt, when it got a response. */
  status?: number;
  /** What `fetch` rejected with, for `network-error` and `timeout`. */
  error?: unknown;
}

export interface IdempotentFetchOptions {
  /** The `fetch` to call. Default: `globalThis.fetch`, looked up on every attempt (so a fetch patched later by a mock library is used). */
  fetch?: FetchFunction;
  /** Retries after the first attempt; `0` sends once. Default `3` (4 attempts at most). */
  retries?: number;
  /** Backoff base: the wait before retry n (from 0) is `random(0, min(maxDelayMs, baseDelayMs · 2^n))`. Default `500`. */
  baseDelayMs?: number;
  /** Cap of the backoff (a `Retry-After` may ask for longer). Default `5000`. */
  maxDelayMs?: number;
  /** Longest wait for one attempt's response headers before it is abandoned and retried. Default: none. */
  attemptTimeoutMs?: number;
  /** Longest the whole call may take, attempts and waits included; see `createIdempotentFetch` for what happens then. Default: none. */
  deadlineMs?: number;
  /**
   * Response statuses retried. Never retried whatever its status: a replay (`Idempotent-Replayed:
   * true`), and a 409 that carries `Idempotent-Replayed` at all (the handler's own conflict, not
   * "in progress"). Default `[409, 429, 500, 502, 503, 504]`.
   */
  retryStatuses?: readonly number[];
  /** The header that carries the key. Default `'Idempotency-Key'`. */
  headerName?: string;
  /** Send the key as an RFC 8941 string, `"key"`, as the IETF draft specifies (`true`), or bare (`false`) for servers that want it so. Default `true`. */
  quoteKey?: boolean;
  /** Makes the key of a new operation. Default `crypto.randomUUID()` (a UUID v4; browsers offer it on HTTPS and localhost only). */
  generateKey?: () => string;
  /** Keeps the key of a named operation (`send(…, { operation })`) across reloads or restarts. Default: none. */
  keyStore?: KeyStore;
  /** Send a `ReadableStream` body (once: it cannot be read again, so it is never retried) instead of refusing it. Default `false`. */
  allowStreamBody?: boolean;
  /** Called before each wait for a retry. An error it throws stops the call and is rethrown. Default: none. */
  onRetry?: (event: RetryEvent) => void;
  /** Source of the jitter, a number in [0, 1). Default `Math.random`. */
  random?: () => number;
}

export interface IdempotentCallOptions {
  /** The key of this operation, e.g. one your app made and persisted at page load. Default: from `keyStore` for `operation`, else a new one. */
  key?: string;
  /** A name for this operation in `keyStore` (`'checkout'`, `` `order:${cartId}` ``); needs `keyStore`. */
  operation?: string;
  /** Aborts the call, attempts and waits alike (as does `init.signal`, or a Request's own signal). */
  signal?: AbortSignal;
}

/** Sends one logical operation, retrying it with the same key. Same arguments as `fetch`, plus per-call options. */
export type IdempotentFetch = (input: string | URL | Request, init?: RequestInit, options?: IdempotentCallOptions) => Promise<Response>;

type AttemptResult =
  | { response: Response; discard: () => void }
  | { failure: 'network-error' | 'timeout' | 'deadline'; error: unknown };

interface AttemptLimit {
  ms: number;
  kind: 'timeout' | 'deadline';
}

/** Timers fire at once past this (a signed 32-bit count of ms, about 24.8 days). */
const MAX_TIMER_MS = 2 ** 31 - 1;
const DEFAULT_RETRY_STATUSES = [409, 429, 500, 502, 503, 504];
/** RFC 9110 §5.1: a header name is a token. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

function resolveOptions(options: IdempotentFetchOptions) {
  /** A number option: `undefined` (use the default) or finite and at least `min`. */
  const number = (name: string, value: number | undefined, min: number) => {
    if (value !== undefined && !(Number.isFinite(value) && value >= min)) throw new InvalidOptionError(`createIdempotentFetch(): ${name} must be a finite number ≥ ${min}, got ${value}`);
    return value;
  };
  if (options.retries !== undefined && !Number.isInteger(options.retries)) throw new InvalidOptionError(`createIdempotentFetch(): retries must be a whole number, got ${options.retries}`);
  const headerName = options.headerName ?? 'Idempotency-Key';
  if (!TOKEN.test(headerName)) throw new InvalidOptionError(`createIdempotentFetch(): headerName must be an HTTP header name, got ${JSON.stringify(headerName)}`);
  const retryStatuses = options.retryStatuses ?? DEFAULT_RETRY_STATUSES;
  for (const status of retryStatuses) {
    if (!Number.isInteger(status) || status < 100 || status > 599) throw new InvalidOptionError(`createIdempotentFetch(): retryStatuses must hold HTTP statuses, got ${status}`);
  }
  if (!options.fetch && typeof globalThis.fetch !== 'function') throw new InvalidOptionError('createIdempotentFetch(): there is no global fetch here; pass one as the `fetch` option');
  if (!options.generateKey && typeof globalThis.crypto?.randomUUID !== 'function') {
    throw new InvalidOptionError('createIdempotentFetch(): crypto.randomUUID is not available (browsers offer it on HTTPS and localhost only); pass generateKey');
  }
  const globalFetch: FetchFunction = (input, init) => globalThis.fetch(input, init);
  return {
    fetch: options.fetch ?? globalFetch,
    retries: number('retries', options.retries, 0) ?? 3,
    baseDelayMs: number('baseDelayMs', options.baseDelayMs, 0) ?? 500,
    maxDelayMs: number('maxDelayMs', options.maxDelayMs, 0) ?? 5_000,
    attemptTimeoutMs: number('attemptTimeoutMs', options.attemptTimeoutMs, 1),
    deadlineMs: number('deadlineMs', options.deadlineMs, 1),
    retryStatuses: new Set(retryStatuses),
    headerName,
    quoteKey: options.quoteKey ?? true,
    generateKey: options.generateKey ?? (() => globalThis.crypto.randomUUID()),
    keyStore: options.keyStore,
    allowStreamBody: options.allowStreamBody ?? false,
    onRetry: options.onRetry,
    random: options.random ?? Math.random,
  };
}

/**
 * Why a response should be asked for again, or `undefined` when it is the operation's outcome.
 * A replay (`Idempotent-Replayed: true`) is the stored outcome whatever its status: asking
 * again only gets it again. A 409 that carries `Idempotent-Replayed` at all is the handler's own
 * conflict, not the idempotency layer's "still in progress" (which never carries it).
 */
function retryReason(response: Response, retryStatuses: ReadonlySet<number>): RetryReason | undefined {
  const replayed = response.headers.get('idempotent-replayed')?.trim().toLowerCase();
  if (replayed === 'true' || replayed === '?1' || !retryStatuses.has(response.status)) return undefined;
  if (response.status === 409) return replayed === undefined ? 'in-progress' : undefined;
  if (response.status === 429) return 'rate-limited';
  return response.status >= 500 ? 'server-error' : 'retryable-status';
}

/** One signal that aborts when any of `signals` does (AbortSignal.any is too new for some browsers). */
function anySignal(signals: (AbortSignal | null | undefined)[]): AbortSignal | undefined {
  const present = [...new Set(signals.filter((signal): signal is AbortSignal => signal != null))];
  if (present.length <= 1) return present[0];
  const aborted = present.find((signal) => signal.aborted);
  if (aborted) return aborted;
  const controller = new AbortController();
  for (const signal of present) {
    signal.addEventListener('abort', () => controller.abort(signal.reason), { once: true, signal: controller.signal });
  }
  return controller.signal;
}

/** Resolves after `ms`, or rejects with the signal's reason as soon as it aborts. */
function wait(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, Math.min(ms, MAX_TIMER_MS));
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

const attempts = (count: number) => `${count} attempt${count === 1 ? '' : 's'}`;
const messageOf = (error: unknown) => (error instanceof Error ? error.message : String(error));

/** Frees the connection behind a response nobody will read. */
function cancelBody(response: Response): void {
  response.body?.cancel().catch(() => {});
}

/**
 * Creates `send`, a `fetch` that makes every call one logical operation with one
 * `Idempotency-Key`, sent on each attempt, and retries what is safe to retry with that key.
 *
 * - **Key**: `options.key`, else the one `keyStore` holds for `options.operation`, else
 *   `generateKey()`. Printable ASCII without `"` and `\`, 1 to 255 characters; sent as
 *   `Idempotency-Key: "<key>"`. A request that already has the header is refused.
 * - **Retried**: network errors, attempts past `attemptTimeoutMs`, and `retryStatuses` (409 in
 *   progress, 429, 500, 502, 503, 504), never a replay (`Idempotent-Replayed: true`) and no other
 *   status. The wait is full-jitter backoff, at least the response's `Retry-After` (seconds or
 *   HTTP-date).
 * - **Body**: read once into bytes (string, ArrayBuffer, typed arrays, Blob, URLSearchParams,
 *   FormData, a Request's body) and sent identically on every attempt, with the content type
 *   (FormData boundary included) `fetch` would have set. A `ReadableStream` body is refused with
 *   `IdempotentFetchError` `BODY_NOT_REPLAYABLE` unless `allowStreamBody` (then one attempt).
 * - **Returns** the response that ended the operation: a final one, or the last retryable one
 *   when retries are exhausted or the next wait would cross `deadlineMs` (read its problem
 *   details). `attemptTimeoutMs` and `deadlineMs` only cover the wait for response headers; the
 *   body is yours to read, and your signal still aborts it.
 * - **Throws** `IdempotentFetchError` when no response came: `NETWORK_ERROR` or `TIMEOUT` (the last
 *   attempt's failure, as `cause`) once retries are exhausted, `DEADLINE_EXCEEDED` when the
 *   deadline ends it first. An abort rejects at once with the signal's reason, during an attempt
 *   or a wait. Retry later with the same key (`error.key`) to learn the outcome.
 * - **keyStore**: with `operation`, a new key is saved before the first attempt, and deleted
 *   once a final response arrives, so the next operation of that name gets a new key. It stays
 *   when the call throws, is aborted, or ends on a retryable response, so a later retry (or a
 *   reloaded page) reuses it. Calls of one operation started together (a double click) share
 *   its key: the server runs it once and answers both.
 *
 * @example
 * ```ts
 * import { createIdempotentFetch } from 'oncely/client';
 *
 * const send = createIdempotentFetch({ retries: 5, attemptTimeoutMs: 10_000, deadlineMs: 30_000 });
 * const res = await send('https://api.example.com/orders', {
 *   method: 'POST',
 *   headers: { 'content-type': 'application/json' },
 *   body: JSON.stringify(order),
 * });
 * // A key your app persisted: await send(url, init, { key: checkoutKey })
 * ```
 */
export const createIdempotentFetch = (options: IdempotentFetchOptions = {}): IdempotentFetch => {
  const o = resolveOptions(options);
  let keyQueue: Promise<unknown> = Promise.resolve();

  /** One attempt: its response, or why none came. Rejects only when the caller aborts. */
  async function attempt(request: PreparedRequest, callerSignal: AbortSignal | undefined, limit: AttemptLimit | undefined): Promise<AttemptResult> {
    const controller = new AbortController();
    const follow = () => controller.abort(callerSignal!.reason);
    callerSignal?.addEventListener('abort', follow, { once: true });
    let expired: 'timeout' | 'deadline' | undefined;
    const timer = limit && setTimeout(() => {
      expired = limit.kind;
      controller.abort(new Error(`No response within ${limit.ms} ms`));
    }, Math.min(limit.ms, MAX_TIMER_MS));
    const init = { ...request.init, signal: controller.signal };
    // A fetch that ignores its signal must not hold the call past the timeout: race the abort.
    const pending = new Promise<Response>((resolve) => resolve(request.input instanceof Request ? o.fetch(new Request(request.input, init)) : o.fetch(request.input, init)));
    try {
      const response = await new Promise<Response>((resolve, reject) => {
        const onAbort = () => reject(controller.signal.reason);
        controller.signal.addEventListener('abort', onAbort, { once: true });
        pending.then(resolve, reject).finally(() => controller.signal.removeEventListener('abort', onAbort));
      });
      return {
        response,
        discard: () => {
          callerSignal?.removeEventListener('abort', follow);
          cancelBody(response);
        },
      };
    } catch (error) {
      callerSignal?.removeEventListener('abort', follow);
      // A response that arrives after its attempt was given up is not read by anyone.
      pending.then(cancelBody, () => {});
      if (callerSignal?.aborted) throw callerSignal.reason;
      return { failure: expired ?? 'network-error', error };
    } finally {
      clearTimeout(timer);
    }
  }

  /** What ends the next attempt: its own timeout, or the deadline if that comes first. */
  function attemptLimit(deadlineAt: number): AttemptLimit | undefined {
    const remaining = deadlineAt - performance.now();
    if (remaining <= (o.attemptTimeoutMs ?? Infinity) && remaining !== Infinity) return { ms: Math.max(0, remaining), kind: 'deadline' };
    return o.attemptTimeoutMs === undefined ? undefined : { ms: o.attemptTimeoutMs, kind: 'timeout' };
  }

  return async function send(input, init = {}, call = {}) {
    const startedAt = performance.now();
    const deadlineAt = o.deadlineMs === undefined ? Infinity : startedAt + o.deadlineMs;
    const signal = anySignal([call.signal, init.signal, input instanceof Request ? input.signal : undefined]);
    signal?.throwIfAborted();

    const { operation } = call;
    if (operation !== undefined && !o.keyStore) throw new InvalidOptionError('send(): `operation` names a key in the keyStore; pass keyStore to createIdempotentFetch()');
    const explicitKey = call.key === undefined ? undefined : checkKey(call.key, 'The key passed to send()');
    const makeKey = () => checkKey(o.generateKey(), 'The key from generateKey()');
    let key: string;
    if (operation === undefined) key = explicitKey ?? makeKey();
    else {
      // One at a time per client, so calls of one operation share its key with an asynchronous store too.
      const claimed = keyQueue.then(() => operationKey(o.keyStore!, operation, explicitKey, makeKey));
      keyQueue = claimed.catch(() => {});
      key = await claimed;
    }
    const request = await prepareRequest(input, init, [o.headerName, headerValue(key, o.quoteKey)]);
    if (!request.replayable && !o.allowStreamBody) {
      throw new IdempotentFetchError(
        'BODY_NOT_REPLAYABLE',
        'The request body is a stream, which can be read only once, so a retry could not send the same bytes. Send a string, bytes, Blob, FormData or URLSearchParams, or set allowStreamBody: true to send it with a single attempt',
        { attempts: 0, key },
      );
    }

    const maxAttempts = request.replayable ? o.retries + 1 : 1;
    for (let attemptNumber = 1; ; attemptNumber++) {
      const result = await attempt(request, signal, attemptLimit(deadlineAt));
      const failed = { attempts: attemptNumber, key };

      let reason: RetryReason;
      let floorMs = 0;
      if ('response' in result) {
        const { response } = result;
        const retryable = retryReason(response, o.retryStatuses);
        if (retryable === undefined) {
          // A final outcome: the next operation of this name needs a new key.
          if (operation !== undefined) await forgetOperationKey(o.keyStore!, operation, key);
          return response;
        }
        if (attemptNumber >= maxAttempts) return response;
        reason = retryable;
        floorMs = retryAfterMs(response.headers.get('retry-after'), Date.now()) ?? 0;
      } else {
        const cause = result.error;
        if (result.failure === 'deadline') throw new IdempotentFetchError('DEADLINE_EXCEEDED', `No response within the ${o.deadlineMs} ms deadline (${attempts(attemptNumber)})`, { ...failed, cause });
        if (attemptNumber >= maxAttempts) {
          const message = result.failure === 'timeout' ? `No response within ${o.attemptTimeoutMs} ms` : `The request failed before a response arrived: ${messageOf(cause)}`;
          throw new IdempotentFetchError(result.failure === 'timeout' ? 'TIMEOUT' : 'NETWORK_ERROR', `${message} (${attempts(attemptNumber)})`, { ...failed, cause });
        }
        reason = result.failure;
      }

      const delayMs = Math.max(backoffDelay(attemptNumber - 1, o.baseDelayMs, o.maxDelayMs, o.random), floorMs);
      if (performance.now() + delayMs >= deadlineAt) {
        // The deadline would pass during the wait: give back what we have now.
        if ('response' in result) return result.response;
        throw new IdempotentFetchError('DEADLINE_EXCEEDED', `The next attempt would start after the ${o.deadlineMs} ms deadline (${attempts(attemptNumber)}; the last: ${messageOf(result.error)})`, { ...failed, cause: result.error });
      }
      if ('response' in result) result.discard();
      o.onRetry?.({
        attempt: attemptNumber,
        delayMs,
        reason,
        key,
        ...('response' in result ? { status: result.response.status } : { error: result.error }),
      });
      await wait(delayMs, signal);
    }
  };
};
