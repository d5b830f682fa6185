/**
 * The responses oncely itself makes: RFC 9457 problem details (`application/problem+json`)
 * with a stable `type` URI per problem, so clients can branch on `type`, not on prose.
 */
import type { ResponseParts } from './types.js';

export const PROBLEM_TYPE_BASE = 'https://oncely.dev/problems/';

export type ProblemKind =
  | 'key-missing'
  | 'key-invalid'
  | 'key-reused'
  | 'request-in-progress'
  | 'store-unavailable'
  | 'response-not-replayable'
  | 'body-too-large'
  | 'request-failed'
  | 'scope-required'
  | 'callback-failed';

const PROBLEMS: Record<ProblemKind, { status: number; title: string }> = {
  'key-missing': { status: 400, title: 'Idempotency-Key header missing' },
  'key-invalid': { status: 400, title: 'Idempotency-Key header invalid' },
  // IETF draft §2.7: a key reused with a different payload is 422 Unprocessable Content.
  'key-reused': { status: 422, title: 'Idempotency-Key reused with a different request' },
  // IETF draft §2.7: a retry while the first request is in flight is 409 Conflict.
  'request-in-progress': { status: 409, title: 'A request with this Idempotency-Key is in progress' },
  'store-unavailable': { status: 503, title: 'Idempotency store unavailable' },
  'response-not-replayable': { status: 410, title: 'The original response cannot be replayed' },
  'body-too-large': { status: 413, title: 'Request body too large to check for idempotency' },
  // Stored for a handler that threw, with `onThrow: 'store500'` (Stripe keeps 500s too).
  'request-failed': { status: 500, title: 'The request failed' },
  // The server's configuration, not the client, is at fault: nothing was claimed or run.
  'scope-required': { status: 500, title: 'Idempotency scope not configured for cookie-authenticated requests' },
  'callback-failed': { status: 500, title: 'An idempotency option failed' },
};

export function problemResponse(kind: ProblemKind, detail: string, headers: [string, string][] = [], extensions: Record<string, unknown> = {}): ResponseParts {
  const { status, title } = PROBLEMS[kind];
  const body = JSON.stringify({ type: `${PROBLEM_TYPE_BASE}${kind}`, title, status, detail, ...extensions });
  return { status, headers: [['content-type', 'application/problem+json'], ...headers], body: Buffer.from(body, 'utf8') };
}
