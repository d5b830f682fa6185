/**
 * Request bodies that arrive without Content-Length, for the tests that every adapter answers
 * an oversize one at once: a chunked upload over real HTTP, an endless Web stream.
 */
import { type Agent, type OutgoingHttpHeaders, request as httpRequest } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';

export interface Upload {
  status: number;
  body: string;
  /** Settles when the connection is closed (the client never closes it first). */
  closed: Promise<void>;
}

/**
 * POSTs a body without Content-Length (chunked transfer coding): `count` times `chunk`, one
 * every `everyMs`, then the end. With `count: Infinity` it never ends, and keeps sending after
 * the answer as a hostile client would, until the connection closes.
 */
export function upload(port: number, agent: Agent, path: string, headers: OutgoingHttpHeaders, chunk: Buffer, count: number, everyMs: number): Promise<Upload> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, method: 'POST', agent, headers }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (part: Buffer) => parts.push(part));
      res.on('end', () => resolve({ status: res.statusCode!, body: Buffer.concat(parts).toString(), closed }));
    });
    const closed = new Promise<void>((done) => req.on('close', done));
    req.on('error', reject);
    void (async () => {
      for (let sent = 0; sent < count && !req.destroyed; sent++) {
        req.write(chunk);
        await sleep(everyMs);
      }
      if (!req.destroyed) req.end();
    })();
  });
}

/** `promise`, or a failure naming `what` if it takes longer than `ms`. */
export async function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no ${what} within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * An endless request body: `source.pulled` counts the bytes read from it, and
 * `source.cancelled` settles when it is cancelled (a test fails by timeout if never).
 */
export function endlessBody(chunkBytes: number) {
  let cancelled!: () => void;
  const source = { pulled: 0, cancelled: new Promise<void>((resolve) => (cancelled = resolve)) };
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      source.pulled += chunkBytes;
      controller.enqueue(new Uint8Array(chunkBytes));
    },
    cancel: () => cancelled(),
  }, { highWaterMark: 0 });
  return { stream, source };
}
