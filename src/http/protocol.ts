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
import { InvalidOptionError, LeaseLostError } from '../core/errors.js';
import type { ExecutionContext } from '../core/execution-context.js';
import { identityId, sha256Hex } from '../core/identity.js';
import { assertDuration } from '../core/store-kit.js';
import type { IdempotencyStore } from '../core/types.js';
import { parseIdempotencyKey } from './key.js';
import { problemResponse } from './problem.js';
import { decodeStoredResponse, encodeStoredResponse } from './stored-response.js';
import type { RequestBody, RequestFacts, ResponseParts } from './types.js';

/** What the observer hears: enough to count, time and alert on (OpenTelemetry, Prometheus). */
export type IdempotencyEvent =
  | { type: 'executed'; key: string; status: number; stored: boolean; durationMs: number }
  | { type: 'replayed'; key: string; status: number; durationMs: number }
  | { type: 'conflict'; key: string; durationMs: number }
  | { type: 'mismatch'; key: string; durationMs: number }
  | { type: 'store_error'; key: string | undefined; error: unknown; failOpen: boolean; durationMs: number }
  | { type: 'lease_lost'; key: string; durationMs: number };

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
   * `Authorization` header (empty when absent), so two credentials never share a key.
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
  /** Which response statuses are stored. Default: all but 408, 429, 502, 503 and 504 (transient). */
  storeIf?: (status: number) => boolean;
  /** A handler that throws: `'release'` the key so a retry runs again (default), or `'store500'` a 500 problem. */
  onThrow?: 'release' | 'store500';
  /** When the store fails: answer 503 (default, fail closed), or run the handler unprotected (`true`). */
  failOpen?: boolean;
  /** Called for every protected request's outcome. Must not throw. */
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
   * Never throws; store failures reach the observer (the response must be sent regardless).
   */
  finish(response: { status: number; headers: [string, string][]; body: Uint8Array | 'too-large' }): Promise<void>;
  /**
   * The handler threw. Returns the 500 to send when `onThrow` is `'store500'`, else releases
   * the key and returns undefined. Never throws.
   */
  fail(error: unknown): Promise<ResponseParts | undefined>;
  /** The response never completed (a stream broke off, a hijacked reply): release the key so a retry runs again. Never throws. */
  release(): Promise<void>;
}

export type Decision =
  | { action: 'pass' }
  | { action: 'respond'; response: ResponseParts }
  | { action: 'execute'; execution: HttpExecution };

const DEFAULT_METHODS = ['POST', 'PATCH'];
const TRANSIENT_STATUSES = new Set([408, 429, 502, 503, 504]);
const MIB = 1024 * 1024;
const JSON_TYPE = /^application\/(?:[\w.+-]+\+)?json\b/i;

/** The options with their defaults applied. */
export interface ProtocolSettings<Req> extends Required<Omit<IdempotencyOptions<Req>, 'scope' | 'fingerprint' | 'observer'>> {
  scope: IdempotencyOptions<Req>['scope'];
  fingerprint: IdempotencyOptions<Req>['fingerprint'];
  observer: IdempotencyOptions<Req>['observer'];
}

/** Defaults applied and every number checked once, when the middleware is created. */
function resolveOptions<Req>(options: IdempotencyOptions<Req>): ProtocolSettings<Req> {
  if (!options || typeof options.store?.claim !== 'function') throw new InvalidOptionError('idempotency(): `store` is required (an IdempotencyStore)');
  const resolved: ProtocolSettings<Req> = {
    store: options.store,
    required: options.required ?? false,
    methods: (options.methods ?? DEFAULT_METHODS).map((method) => method.toUpperCase()),
    namespace: options.namespace ?? 'http',
    scope: options.scope,
    fingerprint: options.fingerprint,
    fingerprintHeaders: (options.fingerprintHeaders ?? []).map((name) => name.toLowerCase()),
    maxKeyLength: options.maxKeyLength ?? 255,
    maxBodyBytes: options.maxBodyBytes ?? MIB,
    maxStoredBytes: options.maxStoredBytes ?? MIB,
    leaseMs: options.leaseMs ?? 30_000,
    retentionMs: options.retentionMs ?? 86_400_000,
    wait: options.wait ?? 0,
    storeIf: options.storeIf ?? ((status) => !TRANSIENT_STATUSES.has(status)),
    onThrow: options.onThrow ?? 'release',
    failOpen: options.failOpen ?? false,
    observer: options.observer,
  };
  for (const name of ['maxKeyLength', 'maxBodyBytes', 'maxStoredBytes', 'leaseMs', 'retentionMs'] as const) assertDuration(name, resolved[name]);
  if (resolved.wait !== 0) assertDuration('wait', resolved.wait);
  return resolved;
}

/** The default fingerprint: method, route, canonical body (JSON key order ignored) and chosen headers. */
function bodyDigest(body: RequestBody): string {
  switch (body.kind) {
    case 'none':
    case 'too-large':
      return '';
    case 'parsed':
      return Buffer.isBuffer(body.value) ? sha256Hex(body.value) : sha256Hex(canonicalJson(body.value));
    case 'bytes':
      if (body.contentType && JSON_TYPE.test(body.contentType)) {
        try {
          return sha256Hex(canonicalJson(JSON.parse(Buffer.from(body.bytes).toString('utf8'))));
        } catch {
          // Not valid JSON after all: the raw bytes identify it.
        }
      }
      return sha256Hex(body.bytes);
  }
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

/** Creates the protocol for one middleware instance; the options are checked here, once. */
export function createProtocol<Req>(options: IdempotencyOptions<Req>): Protocol<Req> {
  const o = resolveOptions(options);
  const observe = (event: IdempotencyEvent) => {
    try {
      o.observer?.(event);
    } catch {
      // An observer's failure must not change the response.
    }
  };

  return { decide, settings: o };

  async function decide(request: Req, facts: RequestFacts): Promise<Decision> {
    const started = performance.now();
    const elapsed = () => performance.now() - started;
    if (!o.methods.includes(facts.method.toUpperCase())) return { action: 'pass' };

    const parsed = parseIdempotencyKey(facts.header('idempotency-key'), o.maxKeyLength);
    if (parsed.status === 'absent') {
      return o.required ? { action: 'respond', response: problemResponse('key-missing', 'This endpoint requires an Idempotency-Key header') } : { action: 'pass' };
    }
    if (parsed.status === 'invalid') return { action: 'respond', response: problemResponse('key-invalid', parsed.detail) };
    const { key } = parsed;

    const scope = o.scope ? await o.scope(request) : sha256Hex(facts.header('authorization').join('\n'));
    let fingerprint: string;
    if (o.fingerprint) fingerprint = await o.fingerprint(request);
    else {
      const body = await facts.body(o.maxBodyBytes);
      if (body.kind === 'too-large') return { action: 'respond', response: problemResponse('body-too-large', `Request bodies over ${o.maxBodyBytes} bytes are not accepted with an Idempotency-Key`) };
      const headers = Object.fromEntries(o.fingerprintHeaders.map((name) => [name, facts.header(name)]));
      fingerprint = sha256Hex(canonicalJson([facts.method.toUpperCase(), facts.route, bodyDigest(body), headers]));
    }

    // Outside the try: a scope callback returning a bad value is the app's bug, not a store outage.
    const id = identityId(o.namespace, scope, key);
    let claim: Awaited<ReturnType<typeof claimOrWait>>;
    try {
      claim = await claimOrWait({
        store: o.store,
        id,
        fingerprint,
        meta: { namespace: o.namespace, scope, key },
        leaseMs: o.leaseMs,
        retentionMs: o.retentionMs,
        heartbeat: true,
        waitMs: o.wait,
      });
    } catch (error) {
      observe({ type: 'store_error', key, error, failOpen: o.failOpen, durationMs: elapsed() });
      if (o.failOpen) return { action: 'pass' };
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
        return { action: 'execute', execution: httpExecution(claim.execution, { namespace: o.namespace, scope, key }, started) };
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
      },
      firstResponseHeaders: [['idempotent-replayed', 'false']],
      async finish(response) {
        if (!o.storeIf(response.status)) {
          await execution.release();
          observe({ type: 'executed', key, status: response.status, stored: false, durationMs: elapsed() });
          return;
        }
        const stored = await store({ status: response.status, headers: response.headers, body: response.body === 'too-large' ? undefined : response.body });
        observe({ type: 'executed', key, status: response.status, stored, durationMs: elapsed() });
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
