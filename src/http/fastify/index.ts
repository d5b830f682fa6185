/**
 * `oncely/fastify`: an idempotency plugin for Fastify 5 (and 4).
 */
import { Readable, Transform, pipeline } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import type { FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest, RequestPayload, RouteOptions } from 'fastify';
import { runInExecutionContext, type ExecutionContext } from '../../core/execution-context.js';
import { createProtocol, type Decision, type HttpExecution, type IdempotencyOptions } from '../protocol.js';
import type { RequestBody, RequestFacts, ResponseParts } from '../types.js';

export type { IdempotencyOptions, IdempotencyEvent } from '../protocol.js';

export type FastifyIdempotencyOptions = IdempotencyOptions<FastifyRequest>;

declare module 'fastify' {
  interface FastifyContextConfig {
    /** oncely for this route: `false` leaves it unprotected; an object overrides the plugin's options. */
    idempotency?: boolean | Partial<FastifyIdempotencyOptions>;
  }
}

/** One protected request's execution. `streaming`: the body is being teed, finished on its end. */
interface Pending {
  execution: HttpExecution;
  phase: 'running' | 'streaming' | 'settled';
  thrown: { error: unknown } | undefined;
}

const pending = new WeakMap<FastifyRequest, Pending>();
/** The context of a request that runs without a claim (no key, or fail-open). */
const unprotected = new WeakMap<FastifyRequest, ExecutionContext>();

/**
 * Protects every POST and PATCH route registered after it in its scope (hooks apply to the
 * parent, like fastify-plugin). A route opts out with `config: { idempotency: false }` or
 * overrides options with `config: { idempotency: { required: true } }`. `scope` and
 * `fingerprint` receive the Fastify request; inside the handler, `executionContext()` gives the
 * abort signal and `downstreamKey`. A client that disconnects does not release the key: the
 * handler's response is still stored, so the retry replays it.
 *
 * @example
 * ```ts
 * await app.register(oncely, { store, required: true });
 * app.post('/orders', async (request, reply) => reply.code(201).send(await createOrder(request.body)));
 * app.post('/search', { config: { idempotency: false } }, search);
 * ```
 */
/** What Fastify's `register(plugin, options)` itself reads from the same options object. */
const FASTIFY_REGISTER_OPTIONS = ['prefix', 'logLevel', 'logSerializers'];

const oncelyPlugin: FastifyPluginAsync<FastifyIdempotencyOptions> = async (fastify, options) => {
  const shared = createProtocol(options, FASTIFY_REGISTER_OPTIONS);
  fastify.addHook('onRoute', (route) => {
    const config = route.config?.idempotency;
    if (config === false) return;
    const protocol = typeof config === 'object' ? createProtocol({ ...options, ...config }, FASTIFY_REGISTER_OPTIONS) : shared;
    const { methods, maxStoredBytes } = protocol.settings;
    if (![route.method].flat().some((method) => methods.includes(method.toUpperCase()))) return;
    protectRoute(route as RouteOptions, protocol.decide, maxStoredBytes);
    // A custom fingerprint never reads the body: nothing to keep.
    if (!protocol.settings.fingerprint) captureBody(route as RouteOptions, protocol.settings.maxBodyBytes);
  });
};

export const oncely = Object.assign(oncelyPlugin, {
  [Symbol.for('skip-override')]: true,
  [Symbol.for('fastify.display-name')]: 'oncely',
  [Symbol.for('plugin-meta')]: { name: 'oncely', fastify: '4.x || 5.x' },
});
export default oncely;

type Decide = (request: FastifyRequest, facts: RequestFacts) => Promise<Decision>;
const hooks = <T>(existing: T | T[] | undefined, hook: T): T[] => [...(existing === undefined ? [] : [existing].flat() as T[]), hook];

function protectRoute(route: RouteOptions, decide: Decide, maxStoredBytes: number): void {
  const handler = route.handler;
  route.handler = function idempotentHandler(this: FastifyInstance, request, reply) {
    const state = pending.get(request);
    const context = state?.execution.context ?? unprotected.get(request);
    return context ? runInExecutionContext(context, () => handler.call(this, request, reply)) : handler.call(this, request, reply);
  };
  // Last, so the route's own preHandlers (auth, which `scope` reads) have run.
  route.preHandler = hooks(route.preHandler, async function idempotencyPreHandler(request: FastifyRequest, reply: FastifyReply) {
    const decision = await decide(request, requestFacts(request));
    if (decision.action === 'pass') return void (decision.context && unprotected.set(request, decision.context));
    if (decision.action === 'respond') return sendParts(reply, decision.response);
    const state: Pending = { execution: decision.execution, phase: 'running', thrown: undefined };
    pending.set(request, state);
    // The response ended without being captured: a hijacked reply, or a stream that broke off.
    // A handler still running when its client leaves is let finish; its response is stored.
    reply.raw.once('close', () => {
      if (state.phase === 'streaming' || (state.phase === 'running' && reply.sent)) void settle(state, () => state.execution.release());
    });
  });
  // Fastify answers a thrown error through its error handler: onError tells it apart from a returned 500.
  route.onError = hooks(route.onError, async function idempotencyOnError(request: FastifyRequest, _reply: FastifyReply, error: Error) {
    const state = pending.get(request);
    if (state) state.thrown = { error };
  });
  route.onSend = hooks(route.onSend, async function idempotencyOnSend(request: FastifyRequest, reply: FastifyReply, payload: unknown) {
    const state = pending.get(request);
    if (!state || state.phase !== 'running') return payload;
    const { execution } = state;
    if (state.thrown) {
      const { error } = state.thrown;
      const stored = await settle(state, () => execution.fail(error));
      if (!stored) return payload;
      reply.code(stored.status).headers(headerRecord(stored.headers));
      return Buffer.from(stored.body);
    }
    if (isResponse(payload)) {
      // Fastify applies a returned Response's status and headers after onSend; apply them now to capture them.
      reply.code(payload.status);
      for (const [name, value] of payload.headers) reply.header(name, value);
      payload = payload.body;
    }
    const status = reply.statusCode;
    const headers = replyHeaders(reply);
    for (const [name, value] of execution.firstResponseHeaders) reply.header(name, value);
    if (payload instanceof Readable || isWebStream(payload)) {
      state.phase = 'streaming';
      return tee(payload instanceof Readable ? payload : Readable.fromWeb(payload), maxStoredBytes, (body) => settle(state, () => execution.finish({ status, headers, body })));
    }
    const bytes = payload === undefined || payload === null ? Buffer.alloc(0) : Buffer.from(payload as string | Buffer);
    // Stored before the client sees the response.
    await settle(state, () => execution.finish({ status, headers, body: bytes.byteLength > maxStoredBytes ? 'too-large' : bytes }));
    return payload;
  });
}

function requestFacts(request: FastifyRequest): RequestFacts {
  return {
    method: request.method,
    // Path and query, as the other adapters use: `?dry_run=1` must not replay a real run.
    route: request.url,
    header(name) {
      // rawHeaders keeps one entry per header line; request.headers joins repeats with ", ".
      const raw = request.raw.rawHeaders;
      const values: string[] = [];
      for (let i = 0; i + 1 < raw.length; i += 2) if (raw[i]?.toLowerCase() === name.toLowerCase()) values.push(raw[i + 1] ?? '');
      return values;
    },
    async body(maxBytes): Promise<RequestBody> {
      if (Number(request.headers['content-length'] ?? Number.NaN) > maxBytes) return { kind: 'too-large' };
      const { body } = request;
      // No parser ran: the request had no body.
      if (body === undefined) return { kind: 'none' };
      const contentType = request.headers['content-type'];
      const captured = bodies.get(request);
      bodies.delete(request);
      if (captured?.ended) return captured.size > maxBytes ? { kind: 'too-large' } : { kind: 'bytes', bytes: Buffer.concat(captured.chunks), contentType };
      // A parser that did not read the body to its end: what it made of it is all there is.
      if ((Buffer.isBuffer(body) || typeof body === 'string') && Buffer.byteLength(body) > maxBytes) return { kind: 'too-large' };
      return { kind: 'parsed', value: body, contentType };
    },
  };
}

/** The bytes of a protected request's body as its parser read them: up to the limit, then only their size. */
interface CapturedBody {
  chunks: Buffer[];
  size: number;
  ended: boolean;
}

const bodies = new WeakMap<FastifyRequest, CapturedBody>();

/**
 * Keeps the body's bytes as Fastify's parser reads them (this preParsing hook runs last, after
 * any that decompress), so that the fingerprint covers the body as sent, not as parsed: two
 * numbers one double cannot tell apart, or two invalid UTF-8 sequences, stay two requests.
 */
function captureBody(route: RouteOptions, limit: number): void {
  route.preParsing = hooks(route.preParsing, async function idempotencyPreParsing(request: FastifyRequest, _reply: FastifyReply, payload: RequestPayload) {
    const captured: CapturedBody = { chunks: [], size: 0, ended: false };
    bodies.set(request, captured);
    const tap = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        captured.size += chunk.byteLength;
        if (captured.size <= limit) captured.chunks.push(chunk);
        else captured.chunks.length = 0;
        callback(null, chunk);
      },
      flush(callback) {
        captured.ended = true;
        callback();
      },
    });
    // Fastify compares Content-Length with what an earlier hook (one that decompresses) says it received.
    Object.defineProperty(tap, 'receivedEncodedLength', { get: () => payload.receivedEncodedLength });
    pipeline(payload, tap, () => {});
    return tap;
  });
}

async function settle<T>(state: Pending, work: () => Promise<T>): Promise<T | undefined> {
  if (state.phase === 'settled') return undefined;
  state.phase = 'settled';
  return work();
}

function sendParts(reply: FastifyReply, parts: ResponseParts): FastifyReply {
  reply.code(parts.status).headers(headerRecord(parts.headers));
  return reply.send(parts.body.byteLength === 0 ? undefined : Buffer.from(parts.body.buffer, parts.body.byteOffset, parts.body.byteLength));
}

/** Repeated names become arrays: Node writes one header line per value. */
function headerRecord(headers: [string, string][]): Record<string, string | string[]> {
  const record: Record<string, string | string[]> = {};
  for (const [name, value] of headers) {
    const previous = record[name];
    record[name] = previous === undefined ? value : [previous, value].flat();
  }
  return record;
}

function replyHeaders(reply: FastifyReply): [string, string][] {
  const headers: [string, string][] = [];
  for (const [name, value] of Object.entries(reply.getHeaders())) {
    if (value !== undefined) for (const item of [value].flat()) headers.push([name.toLowerCase(), String(item)]);
  }
  return headers;
}

const isResponse = (payload: unknown): payload is Response => Object.prototype.toString.call(payload) === '[object Response]';
const isWebStream = (payload: unknown): payload is WebReadableStream =>
  typeof payload === 'object' && payload !== null && typeof (payload as { getReader?: unknown }).getReader === 'function';

/**
 * Passes `source` through while keeping up to `limit` bytes; calls `finish` before the stream
 * ends for the client (so the record is stored first). A source error breaks the response off.
 */
function tee(source: Readable, limit: number, finish: (body: Uint8Array | 'too-large') => Promise<unknown>): Readable {
  const chunks: Buffer[] = [];
  let size = 0;
  const capture = new Transform({
    transform(chunk: Buffer | string, _encoding, callback) {
      const bytes = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk);
      size += bytes.byteLength;
      if (size <= limit) chunks.push(bytes);
      else chunks.length = 0;
      callback(null, bytes);
    },
    flush(callback) {
      finish(size > limit ? 'too-large' : Buffer.concat(chunks)).then(() => callback(), callback);
    },
  });
  pipeline(source, capture, () => {});
  return capture;
}
