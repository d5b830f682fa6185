/**
 * The request every attempt of one operation sends: the caller's input, its headers with the
 * key, and a body that reads the same bytes every time.
 */
import { InvalidOptionError } from '../core/errors.js';

/** What one attempt passes to `fetch`, apart from its signal. */
export interface PreparedRequest {
  input: string | URL | Request;
  init: RequestInit;
  /** `false` for a one-shot stream body: it can be sent once, never again. */
  replayable: boolean;
}

/** Whatever `fetch` takes as a body. */
type RequestBody = NonNullable<RequestInit['body']>;

/** A body that can be read only once: a `ReadableStream`, or an async iterable (Node's fetch takes those). */
function isStream(body: RequestBody): boolean {
  if (typeof body !== 'object') return false;
  return body instanceof ReadableStream || Symbol.asyncIterator in body;
}

/**
 * Reads any body `fetch` accepts (string, ArrayBuffer, typed array, DataView, Blob,
 * URLSearchParams, FormData) into bytes, once, with the content type `fetch` would have sent
 * for it. `Response` does the encoding, so a FormData's multipart boundary in the content type
 * is the one in the bytes, and every attempt sends both unchanged.
 */
async function buffer(body: RequestBody): Promise<{ bytes: Uint8Array; contentType: string | null }> {
  const carrier = new Response(body);
  return { bytes: new Uint8Array(await carrier.arrayBuffer()), contentType: carrier.headers.get('content-type') };
}

/**
 * Headers as `fetch(input, init)` would combine them (`init.headers` replaces a Request's),
 * plus the key header, and the body buffered. A Request's own body is always buffered, read
 * from a clone so the caller's Request stays unused.
 */
export async function prepareRequest(input: string | URL | Request, init: RequestInit, [name, value]: [string, string]): Promise<PreparedRequest> {
  const headers = new Headers(init.headers ?? (input instanceof Request ? input.headers : undefined));
  if (headers.has(name)) {
    throw new InvalidOptionError(`The request already has an ${name} header: pass the key to send() as its third argument, { key }, and it is sent on every attempt`);
  }
  headers.set(name, value);

  let body: RequestInit['body'] = init.body;
  if (body === undefined && input instanceof Request && input.body !== null) body = await input.clone().arrayBuffer();
  if (body === undefined || body === null) return { input, init: { ...init, headers }, replayable: true };
  // Streaming uploads need half duplex in Node, Chrome and Deno.
  if (isStream(body)) return { input, init: { duplex: 'half', ...init, headers, body }, replayable: false };

  const { bytes, contentType } = await buffer(body);
  if (contentType !== null && !headers.has('content-type')) headers.set('content-type', contentType);
  return { input, init: { ...init, headers, body: bytes }, replayable: true };
}
