/**
 * The `Idempotency-Key` protocol, independent of any framework (DESIGN §3). It decides
 * everything: which requests are protected, the key, the scope, the fingerprint, the claim,
 * how each claim outcome maps to a response, what is stored and what is replayed. Adapters
 * only translate their framework's request and response.
 *
 * Follows the IETF httpapi draft "The Idempotency-Key HTTP Header Field", and Stripe's
 * documented behaviour where the draft is silent.
 */
import { canonicalJson } from '../core/codec.js';
import { claimOrWait, type Execution } from '../core/engine.js';
import { LeaseLostError } from '../core/errors.js';
import { unprotectedContext, type ExecutionContext } from '../core/execution-context.js';
import { identityId, sha256Hex } from '../core/identity.js';
import { OptionReader } from '../core/options.js';
import type { IdempotencyStore } from '../core/types.js';
import { bodyDigest } from './fingerprint.js';
import { parseIdempotencyKey } from './key.js';
import { problemResponse } from './problem.js';
import { decodeStoredResponse, encodeStoredResponse } from './stored-response.js';
import type { RequestFacts, ResponseParts } from './types.js';

/** What the observer hears: enough to count, time and alert on (OpenTelemetry, Prometheus). */
export type IdempotencyEvent =
  | { type: 'executed'; key: string; status: number; stored: boolean; durationMs: number }
  | { type: 'replayed'; key: string; status: number; durationMs: number }
  | { type: 'conflict'; key: string; durationMs: number }
  | { type: 'mismatch'; key: string; durationMs: number }
  | { type: 'store_error'; key: string | undefined; error: unknown; failOpen: boolean; durationMs: number }
  | { type: 'lease_lost'; key: string; durationMs: number }
  /** A callback option (`scope`, `fingerprint`, `storeIf`) threw or returned a bad value; the request got a defined answer. */
  | { type: 'callback_error'; key: string; callback: 'scope' | 'fingerprint' | 'storeIf'; error: unknown };

export interface IdempotencyOptions<Req> {
  /** Where records are kept. */
  store: IdempotencyStore;
  /** A request without a key is refused with 400 (`true`) or passes through unprotected (`false`, default). */
  required?: boolean;
  /** Methods protected; others pass through untouched. Default `['POST', 'PATCH']`. */
  methods?: string[];
  /** Separates uses of one store (e.g. one per API). Default `'http'`. */
  namespace?: string;
  /**
   * Whose key it is: a tenant or user id from your auth. Default: a SHA-256 of the
   * `Authorization` header, so two credentials never share a key. A keyed request with no
   * `Authorization` header but with a `Cookie` header is refused (500 `scope-required`) unless
   * this is set: cookies are how most apps know their users, and the default cannot see whose
   * cookie it is. Return `''` to share one scope on purpose.
   */
  scope?: (request: Req) => string | Promise<string>;
  /** Replaces the default fingerprint (method, route, canonical body, `fingerprintHeaders`). */
  fingerprint?: (request: Req) => string | Promise<string>;
  /** Request headers that are part of the fingerprint. Default none. */
  fingerprintHeaders?: string[];
  /** Longest key accepted. Default 255. */
  maxKeyLength?: number;
  /** Largest body read for the fingerprint; a larger one is refused with 413. Default 1 MiB. */
  maxBodyBytes?: number;
  /** Largest response body stored; a larger one is sent but replayed as `response-not-replayable`. Default 1 MiB. */
  maxStoredBytes?: number;
  /** Lease of a claim, extended every third of it while the handler runs. Default 30 000 ms. */
  leaseMs?: number;
  /** How long a response is replayed. Default 86 400 000 ms (24 h). */
  retentionMs?: number;
  /** Wait up to this many ms for an in-flight duplicate's response and replay it; 0 answers 409 at once. Default 0. */
  wait?: number;
  /**
   * Which response statuses are stored. Default: all but 408, 429, 502, 503 and 504 (transient).
   * If it throws, the default decides for that response (the handler ran: keeping its response
   * is what stops a second run) and the observer hears `callback_error`.
   */
  storeIf?: (status: number) => boolean;
  /** A handler that throws: `'release'` the key so a retry runs again (default), or `'store500'` a 500 problem. */
  onThrow?: 'release' | 'store500';
  /** When the store fails: answer 503 (default, fail closed), or run the handler unprotected (`true`). */
  failOpen?: boolean;
  /** Called for every protected request's outcome. What it throws is ignored. */
  observer?: (event: IdempotencyEvent) => void;
}

/** An execution the adapter runs the handler for. */
export interface HttpExecution {
  /** What `executionContext()` returns inside the handler: the abort signal and `downstreamKey`. */
  readonly context: ExecutionContext;
  /** Headers to add to the first response. */
  readonly firstResponseHeaders: [string, string][];
  /**
   * The handler's response: stored if the policy says so, else the key is released. `body` is
   * `'too-large'` when it was over `maxStoredBytes` (the caller still sends it whole).
   * Resolves to whether it was stored. Never throws; store failures reach the observer (the
   * response must be sent regardless).
   */
  finish(response: { status: number; headers: [string, string][]; body: Uint8Array | 'too-large' }): Promise<boolean>;
  /**
   * The handler threw. Returns the 500 to send when `onThrow` is `'store500'`, else releases
   * the key and returns undefined. Never throws.
   */
  fail(error: unknown): Promise<ResponseParts | undefined>;
  /** The response never completed (a stream broke off, a hijacked reply): release the key so a retry runs again. Never throws. */
  release(): Promise<void>;
}

export type Decision =
  /** Run the handler without a claim; in `context` when there is one (keyless or fail-open requests). */
  | { action: 'pass'; context?: ExecutionContext }
  | { action: 'respond'; response: ResponseParts }
  | { action: 'execute'; execution: HttpExecution };

const DEFAULT_METHODS = ['POST', 'PATCH'];
const TRANSIENT_STATUSES = new Set([408, 429, 502, 503, 504]);
const MIB = 1024 * 1024;
const storedByDefault = (status: number): boolean => !TRANSIENT_STATUSES.has(status);

/** The options with their defaults applied. */
export interface ProtocolSettings<Req> extends Required<Omit<IdempotencyOptions<Req>, 'scope' | 'fingerprint' | 'observer'>> {
  scope: IdempotencyOptions<Req>['scope'];
  fingerprint: IdempotencyOptions<Req>['fingerprint'];
  observer: IdempotencyOptions<Req>['observer'];
}

const OPTION_NAMES = [
  'store', 'required', 'methods', 'namespace', 'scope', 'fingerprint', 'fingerprintHeaders', 'maxKeyLength', 'maxBodyBytes',
  'maxStoredBytes', 'leaseMs', 'retentionMs', 'wait', 'storeIf', 'onThrow', 'failOpen', 'observer',
] as const;

/** Defaults applied and every option checked once, when the middleware is created. */
function resolveOptions<Req>(options: IdempotencyOptions<Req>, adapterOptions: readonly string[]): ProtocolSettings<Req> {
  const read = new OptionReader('idempotency()', options, [...OPTION_NAMES, ...adapterOptions]);
  return {
    store: read.store(),
    required: read.boolean('required', false),
    methods: read.strings('methods', DEFAULT_METHODS).map((method) => method.toUpperCase()),
    namespace: read.string('namespace', 'http'),
    scope: read.function('scope'),
    fingerprint: read.function('fingerprint'),
    fingerprintHeaders: read.strings('fingerprintHeaders', []).map((name) => name.toLowerCase()),
    maxKeyLength: read.count('maxKeyLength', 255),
    maxBodyBytes: read.count('maxBodyBytes', MIB),
    maxStoredBytes: read.count('maxStoredBytes', MIB),
    leaseMs: read.duration('leaseMs', 30_000),
    retentionMs: read.count('retentionMs', 86_400_000),
    wait: read.duration('wait', 0, { zero: true }),
    storeIf: read.function<(status: number) => boolean>('storeIf') ?? storedByDefault,
    onThrow: read.oneOf('onThrow', ['release', 'store500'], 'release'),
    failOpen: read.boolean('failOpen', false),
    observer: read.function('observer'),
  };
}

function replay(stored: ReturnType<typeof decodeStoredResponse>): ResponseParts {
  const replayed: [string, string] = ['idempotent-replayed', 'true'];
  if (stored.body === undefined) {
    return problemResponse(
      'response-not-replayable',
      `The request was executed and answered ${stored.status}, but its response was too large to keep for replay`,
      [replayed],
      { originalStatus: stored.status },
    );
  }
  return { status: stored.status, headers: [...stored.headers, replayed], body: stored.body };
}

export interface Protocol<Req> {
  /** Decides what happens to one request. */
  decide(request: Req, facts: RequestFacts): Promise<Decision>;
  /** The options with their defaults, for what the adapter itself needs (e.g. `maxStoredBytes`). */
  settings: ProtocolSettings<Req>;
}

/** A callback option that threw or returned a bad value; it becomes a 500 for that one request. */
class CallbackError {
  constructor(
    readonly callback: 'scope' | 'fingerprint',
    readonly error: unknown,
  ) {}
}

async function call<T>(callback: 'scope' | 'fingerprint', work: () => T | Promise<T>): Promise<string> {
  let value: unknown;
  try {
    value = await work();
  } catch (error) {
    throw new CallbackError(callback, error);
  }
  if (typeof value !== 'string') throw new CallbackError(callback, new TypeError(`\`${callback}\` must return a string, got ${typeof value}`));
  return value;
}

/**
 * Creates the protocol for one middleware instance; the options are checked here, once.
 * `adapterOptions`: option names the adapter itself reads (they are not refused as unknown).
 */
export function createProtocol<Req>(options: IdempotencyOptions<Req>, adapterOptions: readonly string[] = []): Protocol<Req> {
  const o = resolveOptions(options, adapterOptions);
  const { namespace } = o;
  const observe = (event: IdempotencyEvent) => {
    try {
      o.observer?.(event);
    } catch {
      // An observer's failure must not change the response.
    }
  };
  const shouldStore = (key: string, status: number): boolean => {
    try {
      return Boolean(o.storeIf(status));
    } catch (error) {
      observe({ type: 'callback_error', key, callback: 'storeIf', error });
      return storedByDefault(status);
    }
  };

  return { decide, settings: o };

  /**
   * A callback's failure is a 500 problem for this request, before anything is claimed; the
   * store's is a 503 (or a pass under `failOpen`). Rejects only when the request itself cannot
   * be read (its body stream failed), which the adapter hands to its framework.
   */
  async function decide(request: Req, facts: RequestFacts): Promise<Decision> {
    const started = performance.now();
    if (!o.methods.includes(facts.method.toUpperCase())) return { action: 'pass' };

    const parsed = parseIdempotencyKey(facts.header('idempotency-key'), o.maxKeyLength);
    if (parsed.status === 'absent') {
      if (o.required) return { action: 'respond', response: problemResponse('key-missing', 'This endpoint requires an Idempotency-Key header') };
      return { action: 'pass', context: unprotectedContext({ namespace, scope: '', key: '', id: undefined }) };
    }
    if (parsed.status === 'invalid') return { action: 'respond', response: problemResponse('key-invalid', parsed.detail) };
    const { key } = parsed;
    try {
      return await protect(request, facts, key, started);
    } catch (error) {
      if (!(error instanceof CallbackError)) throw error;
      observe({ type: 'callback_error', key, callback: error.callback, error: error.error });
      return { action: 'respond', response: problemResponse('callback-failed', `The server's \`${error.callback}\` option failed for this request; nothing was executed`) };
    }
  }

  async function protect(request: Req, facts: RequestFacts, key: string, started: number): Promise<Decision> {
    const elapsed = () => performance.now() - started;
    let scope: string;
    if (o.scope) scope = await call('scope', () => o.scope!(request));
    else {
      const authorization = facts.header('authorization');
      // Guarantee 6: cookie users would all share the empty scope. Hashing cookies is no
      // answer either: a rotated cookie would turn a retry into a second execution.
      if (authorization.length === 0 && facts.header('cookie').length > 0) {
        return { action: 'respond', response: problemResponse('scope-required', 'This request carries cookies but no Authorization header, so oncely cannot tell whose Idempotency-Key it is. Set the `scope` option (e.g. the session\'s user id); nothing was executed') };
      }
      scope = sha256Hex(authorization.join('\n'));
    }
    let fingerprint: string;
    if (o.fingerprint) fingerprint = await call('fingerprint', () => o.fingerprint!(request));
    else {
      const body = await facts.body(o.maxBodyBytes);
      if (body.kind === 'too-large') return { action: 'respond', response: problemResponse('body-too-large', `Request bodies over ${o.maxBodyBytes} bytes are not accepted with an Idempotency-Key`) };
      const headers = Object.fromEntries(o.fingerprintHeaders.map((name) => [name, facts.header(name)]));
      fingerprint = sha256Hex(canonicalJson([facts.method.toUpperCase(), facts.route, bodyDigest(body), headers]));
    }

    let id: string;
    try {
      id = identityId(namespace, scope, key);
    } catch (error) {
      // An empty or oversized scope: the app's bug, not a store outage.
      throw new CallbackError('scope', error);
    }
    let claim: Awaited<ReturnType<typeof claimOrWait>>;
    try {
      claim = await claimOrWait({
        store: o.store,
        id,
        fingerprint,
        meta: { namespace, scope, key },
        leaseMs: o.leaseMs,
        retentionMs: o.retentionMs,
        heartbeat: true,
        waitMs: o.wait,
      });
    } catch (error) {
      observe({ type: 'store_error', key, error, failOpen: o.failOpen, durationMs: elapsed() });
      if (o.failOpen) return { action: 'pass', context: unprotectedContext({ namespace, scope, key, id }) };
      return { action: 'respond', response: problemResponse('store-unavailable', 'The idempotency store cannot be reached; the request was not executed. Retry with the same key.', [['retry-after', '1']]) };
    }

    switch (claim.status) {
      case 'mismatch':
        observe({ type: 'mismatch', key, durationMs: elapsed() });
        return { action: 'respond', response: problemResponse('key-reused', 'This Idempotency-Key was already used with a different request (method, path or body)') };
      case 'in_progress':
        observe({ type: 'conflict', key, durationMs: elapsed() });
        return { action: 'respond', response: problemResponse('request-in-progress', 'A request with this Idempotency-Key is still being processed; retry later', [['retry-after', '1']]) };
      case 'completed': {
        const response = replay(decodeStoredResponse(claim.record.outcome));
        observe({ type: 'replayed', key, status: response.status, durationMs: elapsed() });
        return { action: 'respond', response };
      }
      case 'acquired':
        return { action: 'execute', execution: httpExecution(claim.execution, { namespace, scope, key }, started) };
    }
  }

  function httpExecution(execution: Execution, identity: { namespace: string; scope: string; key: string }, started: number): HttpExecution {
    const { key } = identity;
    const elapsed = () => performance.now() - started;
    const store = async (response: { status: number; headers: [string, string][]; body: Uint8Array | undefined }) => {
      try {
        await execution.complete(encodeStoredResponse(response));
        return true;
      } catch (error) {
        if (error instanceof LeaseLostError) observe({ type: 'lease_lost', key, durationMs: elapsed() });
        else observe({ type: 'store_error', key, error, failOpen: o.failOpen, durationMs: elapsed() });
        return false;
      }
    };
    return {
      // A getter, so the AbortController is only made for handlers that read the signal.
      context: {
        get signal() {
          return execution.signal;
        },
        downstreamKey: execution.downstreamKey,
        ...identity,
        protected: true,
      },
      firstResponseHeaders: [['idempotent-replayed', 'false']],
      async finish(response) {
        if (!shouldStore(key, response.status)) {
          await execution.release();
          observe({ type: 'executed', key, status: response.status, stored: false, durationMs: elapsed() });
          return false;
        }
        const stored = await store({ status: response.status, headers: response.headers, body: response.body === 'too-large' ? undefined : response.body });
        observe({ type: 'executed', key, status: response.status, stored, durationMs: elapsed() });
        return stored;
      },
      async release() {
        await execution.release();
        observe({ type: 'executed', key, status: 0, stored: false, durationMs: elapsed() });
      },
      async fail() {
        if (o.onThrow === 'release') {
          await execution.release();
          observe({ type: 'executed', key, status: 500, stored: false, durationMs: elapsed() });
          return undefined;
        }
        const response = problemResponse('request-failed', 'The request failed; this outcome is final for this Idempotency-Key');
        const stored = await store(response);
        observe({ type: 'executed', key, status: 500, stored, durationMs: elapsed() });
        return { ...response, headers: [...response.headers, ['idempotent-replayed', 'false']] };
      },
    };
  }
}
