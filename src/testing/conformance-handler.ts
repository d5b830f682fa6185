/**
 * The reference handler of the HTTP conformance suite's test contract (see `httpConformance`):
 * a fetch-style `(Request) => Promise<Response>` any framework's test server can delegate to,
 * so only the wiring of the idempotency middleware is left to write.
 *
 * @example
 * ```ts
 * const orders = conformanceHandler();
 * app.all('/orders', idempotency({ store, required: true }), (c) => orders.handle(c.req.raw));
 * app.get('/__executions', (c) => orders.handle(c.req.raw));
 * ```
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';

export interface ConformanceHandler {
  /**
   * `GET …/__executions` answers `{ "count": n }`; any other request is an order (see the
   * test contract in `httpConformance`).
   */
  handle(request: Request): Promise<Response>;
  /** How many times the order handler ran (a thrown `X-Fail: throw` is not counted). */
  executions(): number;
}

/** Chunks of a streamed (`X-Stream: 1`) body, sent with a pause between them. */
const STREAM_CHUNKS = 5;
/** Longest `X-Sleep-Ms` honoured, so a typo cannot hang a test run. */
const MAX_SLEEP_MS = 60_000;
/** Largest `X-Binary` body, to bound memory. */
const MAX_BINARY_BYTES = 16 * 1024 * 1024;

async function readJson(request: Request): Promise<Record<string, unknown>> {
  const text = await request.text();
  if (text.trim() === '') return {};
  const value: unknown = JSON.parse(text);
  return value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : { value };
}

function boundedInteger(value: string | null, max: number): number {
  const n = Number(value ?? 0);
  return Number.isFinite(n) && n > 0 ? Math.min(Math.floor(n), max) : 0;
}

/** A fresh reference handler with its own execution counter. */
export function conformanceHandler(): ConformanceHandler {
  let executions = 0;

  async function order(request: Request): Promise<Response> {
    let body: Record<string, unknown>;
    try {
      body = await readJson(request);
    } catch {
      return Response.json({ error: 'the body is not JSON' }, { status: 400 });
    }
    const fail = request.headers.get('x-fail');
    if (fail === 'throw') throw new Error('conformance handler: X-Fail: throw');
    const execution = ++executions;
    const sleepMs = boundedInteger(request.headers.get('x-sleep-ms'), MAX_SLEEP_MS);
    if (sleepMs > 0) await sleep(sleepMs);

    const orderId = randomUUID();
    const headers = new Headers({
      location: `/orders/${orderId}`,
      etag: `"${orderId}"`,
      'x-order-id': orderId,
      'set-cookie': 'session=secret',
    });
    if (fail !== null && /^[45]\d\d$/.test(fail)) {
      return Response.json({ error: `X-Fail: ${fail}`, orderId, execution }, { status: Number(fail), headers });
    }
    const binary = request.headers.get('x-binary');
    if (binary !== null) {
      headers.set('content-type', 'application/octet-stream');
      return new Response(randomBytes(boundedInteger(binary, MAX_BINARY_BYTES)), { status: 200, headers });
    }
    const json = JSON.stringify({ orderId, amount: body.amount, execution });
    if (request.headers.get('x-stream') === '1') {
      headers.set('content-type', 'application/json');
      const encoder = new TextEncoder();
      // The JSON cut into pieces, each enqueued after a pause: a body the server cannot know in advance.
      const size = Math.ceil(json.length / STREAM_CHUNKS);
      const pieces = Array.from({ length: STREAM_CHUNKS }, (_, i) => json.slice(i * size, (i + 1) * size));
      let next = 0;
      const stream = new ReadableStream<Uint8Array>({
        async pull(controller) {
          if (next >= pieces.length) return controller.close();
          if (next > 0) await sleep(5);
          controller.enqueue(encoder.encode(pieces[next++]));
        },
      });
      return new Response(stream, { status: 201, headers });
    }
    headers.set('content-type', 'application/json');
    return new Response(json, { status: 201, headers });
  }

  return {
    async handle(request) {
      const url = new URL(request.url);
      if (request.method === 'GET' && url.pathname.endsWith('/__executions')) return Response.json({ count: executions });
      return order(request);
    },
    executions: () => executions,
  };
}
