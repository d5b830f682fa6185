/**
 * `oncely/express`: idempotency middleware for Express 5 and 4.
 */
import type { ErrorRequestHandler, Request, RequestHandler, Response } from 'express';
import { runInExecutionContext } from '../../core/execution-context.js';
import { createProtocol, type HttpExecution, type IdempotencyOptions } from '../protocol.js';
import type { RequestBody, RequestFacts, ResponseParts } from '../types.js';

export type { IdempotencyOptions, IdempotencyEvent } from '../protocol.js';

/** Errors a protected request threw, seen by `idempotencyErrors()`. */
const thrown = new WeakMap<Request, { error: unknown }>();
/** Whether the app mounted `idempotencyErrors()`; without it, a stored 5xx may be a thrown error's. */
let errorsMounted = false;
let warnedUnmarked5xx = false;

/**
 * Protects the routes it is mounted on: a retry with the same `Idempotency-Key` gets the first
 * response (status, body bytes, allowlisted headers). `scope` and `fingerprint` receive the
 * Express `req`. Inside the handler, `executionContext()` gives the abort signal and `downstreamKey`.
 *
 * - Mount it after your body parser: the fingerprint uses `req.body`. Without one, it reads the
 *   raw body (up to `maxBodyBytes`) into `req.body` as a Buffer.
 * - Mount `compression()` before it, so the uncompressed body is what is stored.
 * - The response streams to the client as the handler writes it (`res.write`, `res.send`, piped
 *   streams); its end is held until the record is stored, so a client that saw the whole
 *   response and retries always gets the replay.
 * - A thrown error reaches `onThrow` (default `'release'`: a retry runs again). With no error
 *   handler of your own, oncely recognises Express's default error page. With your own error
 *   handlers, mount `app.use(idempotencyErrors())` after your routes, before them: without it
 *   their response cannot be told from a returned one and is stored (`'store500'` keeps it in
 *   either case); oncely then warns once, the first time it stores a 5xx.
 * - A client that disconnects does not release the key while the handler runs: its response is
 *   stored when it ends; a handler that has not ended it `leaseMs` after the disconnect has
 *   its key released (so it is not held for as long as the process lives).
 *
 * @example
 * ```ts
 * app.post('/orders', express.json(), idempotency({ store, required: true, scope: (req) => req.user.id }), createOrder);
 * app.use(idempotencyErrors());
 * ```
 */
export const idempotency = (options: IdempotencyOptions<Request>): RequestHandler => {
  const { decide, settings } = createProtocol(options);
  const { maxStoredBytes, onThrow, leaseMs } = settings;

  return function idempotencyMiddleware(req, res, next) {
    decide(req, requestFacts(req)).then((decision) => {
      if (decision.action === 'pass') return decision.context ? runInExecutionContext(decision.context, () => next()) : next();
      if (decision.action === 'respond') return void send(res, decision.response);
      const { execution } = decision;
      for (const [name, value] of execution.firstResponseHeaders) res.setHeader(name, value);
      capture(req, res, execution, { maxStoredBytes, onThrow, leaseMs });
      runInExecutionContext(execution.context, () => next());
    }).catch(next);
  };
};

/** Error middleware that tells `idempotency()` a protected handler threw. Mount it before your own error handlers. */
export const idempotencyErrors = (): ErrorRequestHandler => {
  errorsMounted = true;
  return function idempotencyErrorMarker(error: unknown, req, _res, next) {
    thrown.set(req, { error });
    next(error);
  };
};

/**
 * Express's own answer to an error no handler took (finalhandler's error page): its status, its
 * fixed security headers and HTML document. It only ever answers a thrown error, or a request
 * no route ended; neither is the handler's outcome.
 */
function isDefaultErrorPage(res: Response, chunk: Chunk): boolean {
  return (
    res.statusCode >= 400 &&
    res.getHeader('content-security-policy') === "default-src 'none'" &&
    res.getHeader('x-content-type-options') === 'nosniff' &&
    typeof chunk === 'string' &&
    chunk.startsWith('<!DOCTYPE html>') &&
    chunk.includes('<title>Error</title>')
  );
}

function warnUnmarked5xx(status: number): void {
  if (errorsMounted || warnedUnmarked5xx || status < 500) return;
  warnedUnmarked5xx = true;
  process.emitWarning(
    `oncely stored a ${status} response for an Idempotency-Key. If it came from a thrown error, retries will replay it until retention ends: mount app.use(idempotencyErrors()) before your error handlers so a throw releases the key (onThrow).`,
    { code: 'ONCELY_UNMARKED_5XX' },
  );
}

function requestFacts(req: Request): RequestFacts {
  return {
    method: req.method,
    // Path and query as the client sent them: `?dry_run=1` must not replay a real run.
    route: req.originalUrl,
    // rawHeaders keeps each header line; req.headers joins repeated ones with ", ".
    header(name) {
      const wanted = name.toLowerCase();
      const values: string[] = [];
      for (let i = 0; i < req.rawHeaders.length; i += 2) if (req.rawHeaders[i]!.toLowerCase() === wanted) values.push(req.rawHeaders[i + 1]!);
      return values;
    },
    async body(maxBytes): Promise<RequestBody> {
      // The declared size bounds the work whoever parses: a parser may allow more than we hash.
      const length = Number(req.headers['content-length'] ?? 0);
      if (length > maxBytes) return { kind: 'too-large' };
      // A parser consumed the stream (body-parser 2) or said so (body-parser 1 sets `_body`).
      if ((req as { _body?: boolean })._body === true || req.readableEnded) return req.body === undefined ? { kind: 'none' } : { kind: 'parsed', value: req.body, contentType: req.headers['content-type'] };
      if (req.headers['transfer-encoding'] === undefined && !(length > 0)) return { kind: 'none' };
      const bytes = await readUpTo(req, maxBytes);
      if (!bytes) return { kind: 'too-large' };
      Object.assign(req, { body: bytes, _body: true });
      return { kind: 'bytes', bytes, contentType: req.headers['content-type'] };
    },
  };
}

/** The whole body, or undefined (stream left paused) when it has more than `limit` bytes. */
function readUpTo(req: Request, limit: number): Promise<Buffer | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const done = () => void req.off('data', onData).off('end', onEnd).off('error', reject);
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size <= limit) return void chunks.push(chunk);
      done();
      req.pause();
      resolve(undefined);
    };
    const onEnd = () => (done(), resolve(Buffer.concat(chunks)));
    req.on('data', onData).on('end', onEnd).on('error', reject);
  });
}

function send(res: Response, parts: ResponseParts): void {
  const headers = new Map<string, string[]>();
  for (const [name, value] of parts.headers) headers.set(name, [...(headers.get(name) ?? []), value]);
  res.status(parts.status);
  // setHeader, not res.set: Express would add a charset to content-type; replays are byte-exact.
  for (const [name, values] of headers) res.setHeader(name, values.length === 1 ? values[0]! : values);
  res.end(Buffer.from(parts.body.buffer, parts.body.byteOffset, parts.body.byteLength));
}

type Chunk = string | Uint8Array | undefined | null | ((error?: Error | null) => void);

/**
 * Copies what the handler writes (up to `maxStoredBytes`) by wrapping this response's `write`
 * and `end`; everything is still sent as written. The end is held until the outcome is recorded.
 */
function capture(req: Request, res: Response, execution: HttpExecution, o: { maxStoredBytes: number; onThrow: 'release' | 'store500'; leaseMs: number }): void {
  const chunks: Buffer[] = [];
  let size = 0;
  let ended = false;
  let wrote = false;
  let abandoned: NodeJS.Timeout | undefined;
  const collect = (chunk: Chunk, encoding: unknown) => {
    if (size > o.maxStoredBytes || byteLength(chunk, encoding) === 0) return;
    const bytes = typeof chunk === 'string' ? Buffer.from(chunk, asEncoding(encoding)) : Buffer.from(chunk as Uint8Array);
    size += bytes.length;
    if (size <= o.maxStoredBytes) chunks.push(bytes);
    else chunks.length = 0;
  };
  const write = res.write;
  const end = res.end;
  res.write = function (this: Response, chunk: Chunk, ...rest: unknown[]) {
    wrote = true;
    collect(chunk, rest[0]);
    return (write as (...args: unknown[]) => boolean).call(this, chunk, ...rest);
  } as Response['write'];
  res.end = function (this: Response, chunk?: Chunk, ...rest: unknown[]) {
    if (ended) return this;
    ended = true;
    clearTimeout(abandoned);
    collect(chunk, rest[0]);
    // Lock the head now, as express-session does while it holds the end: a later next() or
    // res.status() must not change what is sent. The length is known when the end is all there is.
    if (!res.headersSent) {
      const bodyless = res.statusCode < 200 || res.statusCode === 204 || res.statusCode === 304 || req.method === 'HEAD';
      if (!wrote && !bodyless && !res.hasHeader('content-length')) res.setHeader('content-length', byteLength(chunk, rest[0]));
      res.writeHead(res.statusCode);
    }
    const failure = thrown.get(req) ?? (isDefaultErrorPage(res, chunk) ? { error: undefined } : undefined);
    let recorded: Promise<unknown>;
    if (failure && o.onThrow === 'release') recorded = execution.fail(failure.error);
    else {
      const status = res.statusCode;
      recorded = execution.finish({ status, headers: headerList(res), body: size > o.maxStoredBytes ? 'too-large' : Buffer.concat(chunks) });
      if (!failure) recorded = recorded.then((stored) => stored && warnUnmarked5xx(status));
    }
    void recorded.then(() => (end as (...args: unknown[]) => Response).call(this, chunk, ...rest));
    return this;
  } as Response['end'];
  res.once('close', () => {
    if (ended) return;
    // The client left; the handler may still run. Its response, when it ends, is the outcome.
    abandoned = setTimeout(() => {
      ended = true;
      const failure = thrown.get(req);
      void (failure ? execution.fail(failure.error) : execution.release());
    }, o.leaseMs).unref();
  });
}

const asEncoding = (encoding: unknown): BufferEncoding => (typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8');

function byteLength(chunk: Chunk, encoding: unknown): number {
  if (typeof chunk === 'string') return Buffer.byteLength(chunk, asEncoding(encoding));
  return chunk instanceof Uint8Array ? chunk.byteLength : 0;
}

/** `res.getHeaders()` as `[name, value]` pairs, a repeated header as repeated pairs. */
function headerList(res: Response): [string, string][] {
  return Object.entries(res.getHeaders()).flatMap(([name, value]) => (Array.isArray(value) ? value : value === undefined ? [] : [value]).map((v): [string, string] => [name, String(v)]));
}
