/**
 * `oncely/hono`: idempotency middleware for Hono (Node, Bun, Deno, Workers).
 */
import type { Context, MiddlewareHandler } from 'hono';
import { runInExecutionContext } from '../../core/execution-context.js';
import { createProtocol, type IdempotencyOptions } from '../protocol.js';
import { finishWithResponse, requestFacts, toResponse } from '../web.js';

export type { IdempotencyOptions, IdempotencyEvent } from '../protocol.js';

/**
 * Protects the routes it is mounted on: a retry with the same `Idempotency-Key` gets the
 * first response. `scope` and `fingerprint` receive the Hono `Context` (`c.get('user')`).
 * Inside the handler, `executionContext()` gives the abort signal and `downstreamKey`.
 *
 * @example
 * ```ts
 * app.post('/orders', idempotency({ store, required: true }), (c) => c.json(createOrder(), 201));
 * ```
 */
export const idempotency = (options: IdempotencyOptions<Context>): MiddlewareHandler => {
  const { decide, settings } = createProtocol(options);
  const { maxStoredBytes } = settings;

  return async function idempotencyMiddleware(c, next) {
    // The concrete path and query, not c.req.routePath: under app.use('/api/*') every route would share one pattern.
    const decision = await decide(c, requestFacts(c.req.raw, c.req.path + new URL(c.req.url).search));
    if (decision.action === 'pass') return decision.context ? runInExecutionContext(decision.context, next) : next();
    if (decision.action === 'respond') return toResponse(decision.response);
    const { execution } = decision;
    await runInExecutionContext(execution.context, next);
    // Hono catches what the handler throws and answers through app.onError; c.error tells.
    if (c.error) {
      const stored = await execution.fail(c.error);
      if (stored) c.res = toResponse(stored);
      return;
    }
    c.res = await finishWithResponse(execution, c.res, maxStoredBytes);
  };
};
