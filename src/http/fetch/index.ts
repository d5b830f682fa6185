/**
 * `oncely/fetch`: idempotency for any `(Request) => Response` handler — Next.js route
 * handlers, Bun.serve, Deno.serve, Cloudflare Workers.
 */
import { runInExecutionContext } from '../../core/execution-context.js';
import { createProtocol, type IdempotencyOptions } from '../protocol.js';
import { finishWithResponse, requestFacts, toResponse } from '../web.js';

export type { IdempotencyOptions, IdempotencyEvent } from '../protocol.js';

export interface FetchIdempotencyOptions extends IdempotencyOptions<Request> {
  /** The route for the fingerprint. Default: the URL path and query. */
  route?: (request: Request) => string;
}

/**
 * Wraps a fetch handler: a retry with the same `Idempotency-Key` gets the first response.
 * Inside the handler, `executionContext()` gives the abort signal and `downstreamKey`.
 *
 * @example
 * ```ts
 * export const POST = withIdempotency(createOrder, { store, required: true });
 * ```
 */
export function withIdempotency(handler: (request: Request) => Response | Promise<Response>, options: FetchIdempotencyOptions): (request: Request) => Promise<Response> {
  const { decide, settings } = createProtocol(options);
  const { maxStoredBytes } = settings;
  const routeOf = options.route ?? ((request: Request) => {
    const url = new URL(request.url);
    return url.pathname + url.search;
  });

  return async function idempotentHandler(request: Request): Promise<Response> {
    const decision = await decide(request, requestFacts(request, routeOf(request)));
    if (decision.action === 'pass') return handler(request);
    if (decision.action === 'respond') return toResponse(decision.response);
    const { execution } = decision;
    let response: Response;
    try {
      response = await runInExecutionContext(execution.context, () => handler(request));
    } catch (error) {
      const stored = await execution.fail(error);
      if (stored) return toResponse(stored);
      throw error;
    }
    return finishWithResponse(execution, response, maxStoredBytes);
  };
}
