/**
 * Translation between the protocol and the Web `Request` / `Response` types, shared by the
 * adapters that speak them (fetch handlers, Hono).
 */
import type { HttpExecution } from './protocol.js';
import type { RequestBody, RequestFacts, ResponseParts } from './types.js';

interface BoundedRead {
  chunks: Uint8Array[];
  size: number;
  /** Set when the stream had more than the limit: the rest is still to be read from it. */
  rest: ReadableStreamDefaultReader<Uint8Array> | undefined;
}

async function readUpTo(stream: ReadableStream<Uint8Array> | null, limit: number): Promise<BoundedRead> {
  const read: BoundedRead = { chunks: [], size: 0, rest: undefined };
  if (!stream) return read;
  const reader = stream.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return read;
    read.chunks.push(value);
    read.size += value.byteLength;
    if (read.size > limit) {
      read.rest = reader;
      return read;
    }
  }
}

export function requestFacts(request: Request, route: string): RequestFacts {
  return {
    method: request.method,
    route,
    // Web Headers join repeated lines with ", "; the key parser refuses a bare comma for that reason.
    header: (name) => {
      const value = request.headers.get(name);
      return value === null ? [] : [value];
    },
    async body(maxBytes): Promise<RequestBody> {
      if (request.body === null) return { kind: 'none' };
      const declared = Number(request.headers.get('content-length') ?? Number.NaN);
      if (declared > maxBytes) return { kind: 'too-large' };
      // Read from a clone, so the handler still gets this very Request (a Next.js NextRequest
      // stays one) with its body unread. The clone is one branch of a tee: the stream's source
      // is cancelled, and the chunks queued for the other branch let go, only when both
      // branches are cancelled. Not awaited: the 413 must not wait on the source.
      const read = await readUpTo(request.clone().body, maxBytes);
      if (read.rest) {
        Promise.all([read.rest.cancel(), request.body.cancel()]).catch(() => {});
        return { kind: 'too-large' };
      }
      return { kind: 'bytes', bytes: Buffer.concat(read.chunks), contentType: request.headers.get('content-type') ?? undefined };
    },
  };
}

export function toResponse(parts: ResponseParts): Response {
  return new Response(parts.body.byteLength === 0 ? null : parts.body, { status: parts.status, headers: parts.headers });
}

/**
 * Hands the handler's response to `execution.finish` and returns the response to send: the
 * same status, headers and body, plus `Idempotent-Replayed: false`. A body over
 * `maxStoredBytes` is not kept: it is streamed on to the client from where the read stopped.
 */
export async function finishWithResponse(execution: HttpExecution, response: Response, maxStoredBytes: number): Promise<Response> {
  const read = await readUpTo(response.body, maxStoredBytes);
  const headers = new Headers(response.headers);
  for (const [name, value] of execution.firstResponseHeaders) headers.set(name, value);
  await execution.finish({ status: response.status, headers: [...response.headers], body: read.rest ? 'too-large' : Buffer.concat(read.chunks) });
  const init = { status: response.status, statusText: response.statusText, headers };
  if (!read.rest) return new Response(response.body === null ? null : Buffer.concat(read.chunks), init);
  const { chunks, rest } = read;
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      for (const chunk of chunks) controller.enqueue(chunk);
    },
    async pull(controller) {
      const { done, value } = await rest.read();
      if (done) controller.close();
      else controller.enqueue(value);
    },
    cancel: (reason) => rest.cancel(reason),
  });
  return new Response(body, init);
}
