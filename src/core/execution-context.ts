import { AsyncLocalStorage } from 'node:async_hooks';
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
  /** The key as the caller gave it. */
  key: string;
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

/** The context of the idempotent execution this code runs in; throws outside of one. */
export function executionContext(): ExecutionContext {
  const context = storage.getStore();
  if (!context) throw new OncelyError('NO_EXECUTION_CONTEXT', 'executionContext() was called outside an idempotent execution (a function wrapped by idempotent(), or a protected HTTP handler)');
  return context;
}
