import { AsyncLocalStorage } from 'node:async_hooks';
import { randomUUID } from 'node:crypto';
import { OncelyError } from './errors.js';

/** What the work running under a claim can know about its execution. */
export interface ExecutionContext {
  /** Aborts when the claim is lost (lease taken over); stop work and do not write further. */
  signal: AbortSignal;
  /**
   * Stable per identity (the same on every retry of the same key): pass it as the idempotency
   * key of the next system (Stripe, an email API) so a crash-and-retry is deduplicated there too.
   */
  downstreamKey: string;
  namespace: string;
  scope: string;
  /** The key as the caller gave it; `''` for a request that came without one. */
  key: string;
  /**
   * `false` when the work runs unprotected: an HTTP request without a key on a route where
   * the key is optional, or any request under `failOpen` while the store is down. The signal
   * then never aborts, and `downstreamKey` is still stable per key (random without a key).
   */
  protected: boolean;
}

const storage = new AsyncLocalStorage<ExecutionContext>();

export function runInExecutionContext<T>(context: ExecutionContext, work: () => T): T {
  return storage.run(context, work);
}

/**
 * Makes `context` current for the rest of this asynchronous flow, for frameworks whose hooks
 * and handler do not nest in one call (Fastify's preHandler, then the handler).
 */
export function enterExecutionContext(context: ExecutionContext): void {
  storage.enterWith(context);
}

/**
 * The context of the execution this code runs in: a function wrapped by `idempotent()`, or a
 * handler behind an oncely HTTP adapter (protected or not, see `protected`). Throws
 * `NO_EXECUTION_CONTEXT` anywhere else; `findExecutionContext()` asks without throwing.
 */
export function executionContext(): ExecutionContext {
  const context = storage.getStore();
  if (!context) throw new OncelyError('NO_EXECUTION_CONTEXT', 'executionContext() was called outside an idempotent execution (a function wrapped by idempotent(), or a handler behind an oncely HTTP adapter); use findExecutionContext() to ask without throwing');
  return context;
}

/** The current execution's context, or `undefined` outside of one. */
export function findExecutionContext(): ExecutionContext | undefined {
  return storage.getStore();
}

/**
 * The context of work that runs without a claim. `id`: the identity the key would
 * have had (`identityId`), if any, so a `downstreamKey` passed on is the same as on a protected run of that key.
 */
export function unprotectedContext(identity: { namespace: string; scope: string; key: string; id: string | undefined }): ExecutionContext {
  let controller: AbortController | undefined;
  return {
    // One per request, made on demand: listeners added to it go away with the request.
    get signal() {
      controller ??= new AbortController();
      return controller.signal;
    },
    downstreamKey: identity.id ?? randomUUID(),
    namespace: identity.namespace,
    scope: identity.scope,
    key: identity.key,
    protected: false,
  };
}
