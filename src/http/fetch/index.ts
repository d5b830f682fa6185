/**
 * `oncely/fetch`: idempotency for any `(Request, ...) => Response` handler — Next.js route
 * handlers, Bun.serve, Deno.serve, Cloudflare Workers.
 */
import { runInExecutionContext } from '../../core/execution-context.js';
import { createProtocol, type IdempotencyOptions } from '../protocol.js';
import { finishWithResponse, requestFacts, toResponse } from '../web.js';

export type { IdempotencyOptions, IdempotencyEvent } from '../protocol.js';

/**
 * The options of `withIdempotency`. `R` is the handler's request type (Next.js's `NextRequest`)
 * and `Args` the arguments it takes after it (Next.js `{ params }`, Bun's server, Deno's info,
 * Workers' `env` and `ctx`): `scope` and `fingerprint` receive them too.
 */
export interface FetchIdempotencyOptions<R extends Request = Request, Args extends unknown[] = []> extends Omit<IdempotencyOptions<R>, 'scope' | 'fingerprint'> {
  /** Whose key it is. Default: a SHA-256 of the `Authorization` header (empty when absent). */
  scope?: (request: R, ...args: Args) => string | Promise<string>;
  /** Replaces the default fingerprint (method, route, canonical body, `fingerprintHeaders`). */
  fingerprint?: (request: R, ...args: Args) => string | Promise<string>;
  /** The route for the fingerprint. Default: the URL path and query. */
  route?: (request: R) => string;
}

/**
 * Wraps a fetch handler: a retry with the same `Idempotency-Key` gets the first response.
 * Every argument after the request reaches the handler as given, and the wrapper has the
 * handler's own signature. Inside the handler, `executionContext()` gives the abort signal
 * and `downstreamKey`.
 *
 * @example
 * ```ts
 * export const POST = withIdempotency(async (request: NextRequest, { params }: { params: Promise<{ id: string }> }) => {
 *   return Response.json(await payInvoice((await params).id, await request.json()), { status: 201 });
 * }, { store, required: true });
 * ```
 */
export function withIdempotency<R extends Request, Args extends unknown[]>(
  handler: (request: R, ...args: Args) => Response | Promise<Response>,
  options: FetchIdempotencyOptions<R, Args>,
): (request: R, ...args: Args) => Promise<Response> {
  type Call = [request: R, ...args: Args];
  // The protocol hands its callbacks one value: the whole call. Anything but a function is passed on as given, for the protocol to refuse.
  const spread = (callback: ((...call: Call) => string | Promise<string>) | undefined) => (typeof callback === 'function' ? (call: Call) => callback(...call) : callback);
  const { decide, settings } = createProtocol<Call>({ ...options, scope: spread(options?.scope), fingerprint: spread(options?.fingerprint) }, ['route']);
  const { maxStoredBytes } = settings;
  const routeOf = options.route ?? ((request: Request) => {
    const url = new URL(request.url);
    return url.pathname + url.search;
  });

  return async function idempotentHandler(request: R, ...args: Args): Promise<Response> {
    const decision = await decide([request, ...args], requestFacts(request, routeOf(request)));
    const run = () => handler(request, ...args);
    if (decision.action === 'pass') return decision.context ? runInExecutionContext(decision.context, run) : run();
    if (decision.action === 'respond') return toResponse(decision.response);
    const { execution } = decision;
    let response: Response;
    try {
      response = await runInExecutionContext(execution.context, run);
    } catch (error) {
      const stored = await execution.fail(error);
      if (stored) return toResponse(stored);
      throw error;
    }
    return finishWithResponse(execution, response, maxStoredBytes);
  };
}
