/**
 * The retry policy of `oncely/client` against a scripted `fetch`: what is retried and what is
 * final, the backoff and `Retry-After`, the deadline and aborts, one key per operation, the
 * same body bytes on every attempt, and the key store's lifecycle.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import fc from 'fast-check';
import { backoffDelay, retryAfterMs } from './backoff.js';
import {
  createIdempotentFetch,
  IdempotentFetchError,
  InvalidKeyError,
  InvalidOptionError,
  memoryKeyStore,
  OncelyError,
  sessionStorageKeyStore,
  type FetchFunction,
  type IdempotentFetch,
  type IdempotentFetchOptions,
  type RetryEvent,
} from './index.js';

const ORDERS = 'https://api.example.test/orders';
const UUID_V4 = /^"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"$/;

/** What the server does with one attempt. */
type Answer = Response | Error | 'hang' | 'hang-ignoring-signal' | (() => Response);

interface Sent {
  key: string | null;
  contentType: string | null;
  body: Uint8Array | undefined;
  method: string;
}

/** A fetch that records every attempt and answers from `answers` (the last one repeats). */
function scripted(...answers: Answer[]) {
  const sent: Sent[] = [];
  const fetch: FetchFunction = async (input, init) => {
    const request = new Request(input, init);
    const answer = answers[Math.min(sent.length, answers.length - 1)]!;
    sent.push({
      key: request.headers.get('idempotency-key'),
      contentType: request.headers.get('content-type'),
      body: request.body ? new Uint8Array(await request.arrayBuffer()) : undefined,
      method: request.method,
    });
    if (answer instanceof Error) throw answer;
    if (answer === 'hang-ignoring-signal') return new Promise<Response>(() => {});
    if (answer === 'hang') {
      return new Promise<Response>((_resolve, reject) => request.signal.addEventListener('abort', () => reject(request.signal.reason)));
    }
    return typeof answer === 'function' ? answer() : answer.clone();
  };
  return { fetch, sent };
}

const status = (code: number, headers: Record<string, string> = {}) => new Response(code === 204 ? null : JSON.stringify({ status: code }), { status: code, headers });
const fast: IdempotentFetchOptions = { baseDelayMs: 1, maxDelayMs: 2 };
const post = (body: unknown = '{"amount":42}') => ({ method: 'POST', body: body as string });

describe('createIdempotentFetch: one key per operation', () => {
  it('sends the same key, an RFC 8941 string holding a UUID v4, on every attempt', async () => {
    const { fetch, sent } = scripted(status(503), new TypeError('fetch failed'), status(201));
    const send = createIdempotentFetch({ ...fast, fetch });
    const res = await send(ORDERS, post());
    assert.equal(res.status, 201);
    assert.equal(sent.length, 3);
    assert.match(sent[0]!.key!, UUID_V4);
    assert.deepEqual(new Set(sent.map((s) => s.key)).size, 1);
  });

  it('makes a new key for each call', async () => {
    const { fetch, sent } = scripted(status(201));
    const send = createIdempotentFetch({ fetch });
    await send(ORDERS, post());
    await send(ORDERS, post());
    assert.notEqual(sent[0]!.key, sent[1]!.key);
  });

  it('uses a key the caller gives, and headerName / quoteKey for other servers', async () => {
    const { fetch, sent } = scripted(status(201));
    await createIdempotentFetch({ fetch })(ORDERS, post(), { key: 'checkout-7f3a' });
    assert.equal(sent[0]!.key, '"checkout-7f3a"');

    const other = scripted(status(201));
    const calls: Headers[] = [];
    await createIdempotentFetch({ fetch: (input, init) => (calls.push(new Headers(init?.headers)), other.fetch(input, init)), headerName: 'X-Request-Id', quoteKey: false })(ORDERS, post(), { key: 'k-1' });
    assert.equal(calls[0]!.get('x-request-id'), 'k-1');
    assert.equal(calls[0]!.get('idempotency-key'), null);
  });

  it('refuses an invalid key before sending anything', async () => {
    const { fetch, sent } = scripted(status(201));
    const send = createIdempotentFetch({ fetch });
    for (const key of ['', 'x'.repeat(256), 'has"quote', 'back\\slash', 'caf\u00e9', 'tab\there', 'new\nline']) {
      await assert.rejects(send(ORDERS, post(), { key }), (error: unknown) => error instanceof InvalidKeyError && error.code === 'KEY_INVALID', JSON.stringify(key));
    }
    await assert.rejects(createIdempotentFetch({ fetch, generateKey: () => '' })(ORDERS, post()), /generateKey\(\) must be a non-empty string/);
    await send(ORDERS, post(), { key: 'x'.repeat(255) });
    assert.equal(sent.length, 1, 'only the valid key was sent');
  });

  it('refuses a request that already carries the key header, instead of overriding it', async () => {
    const { fetch, sent } = scripted(status(201));
    await assert.rejects(
      createIdempotentFetch({ fetch })(ORDERS, { ...post(), headers: { 'Idempotency-Key': 'mine' } }),
      (error: unknown) => error instanceof InvalidOptionError && /pass the key to send\(\)/.test(error.message),
    );
    assert.equal(sent.length, 0);
  });

  it('checks its options when created', () => {
    assert.throws(() => createIdempotentFetch({ retries: -1 }), InvalidOptionError);
    assert.throws(() => createIdempotentFetch({ retries: 1.5 }), InvalidOptionError);
    assert.throws(() => createIdempotentFetch({ baseDelayMs: Number.NaN }), InvalidOptionError);
    assert.throws(() => createIdempotentFetch({ attemptTimeoutMs: 0 }), InvalidOptionError);
    assert.throws(() => createIdempotentFetch({ deadlineMs: -5 }), InvalidOptionError);
    assert.throws(() => createIdempotentFetch({ headerName: 'Idempotency Key' }), InvalidOptionError);
    assert.throws(() => createIdempotentFetch({ retryStatuses: [1000] }), InvalidOptionError);
  });
});

describe('createIdempotentFetch: what is retried', () => {
  const reasons: Record<number, RetryEvent['reason']> = { 409: 'in-progress', 429: 'rate-limited', 500: 'server-error', 502: 'server-error', 503: 'server-error', 504: 'server-error' };
  for (const [code, reason] of Object.entries(reasons)) {
    it(`retries ${code} (${reason}) and returns the success that follows`, async () => {
      const { fetch, sent } = scripted(status(Number(code)), status(201, { 'idempotent-replayed': 'false' }));
      const events: RetryEvent[] = [];
      const res = await createIdempotentFetch({ ...fast, fetch, onRetry: (event) => events.push(event) })(ORDERS, post());
      assert.equal(res.status, 201);
      assert.equal(sent.length, 2);
      assert.equal(events.length, 1);
      assert.equal(events[0]!.reason, reason);
      assert.equal(events[0]!.status, Number(code));
      assert.equal(events[0]!.attempt, 1);
      assert.equal(`"${events[0]!.key}"`, sent[0]!.key);
    });
  }

  for (const code of [200, 201, 204, 400, 401, 403, 404, 408, 410, 413, 422, 501, 505]) {
    it(`does not retry ${code}`, async () => {
      const { fetch, sent } = scripted(status(code), status(201));
      const res = await createIdempotentFetch({ ...fast, fetch })(ORDERS, post());
      assert.equal(res.status, code);
      assert.equal(sent.length, 1);
    });
  }

  it('never retries a replay, whatever its status: it is the stored outcome', async () => {
    for (const replayed of ['true', 'TRUE', '?1']) {
      const { fetch, sent } = scripted(status(503, { 'idempotent-replayed': replayed }), status(201));
      const res = await createIdempotentFetch({ ...fast, fetch })(ORDERS, post());
      assert.equal(res.status, 503);
      assert.equal(sent.length, 1, replayed);
    }
  });

  it("does not retry a 409 the handler itself answered (it carries Idempotent-Replayed)", async () => {
    const { fetch, sent } = scripted(status(409, { 'idempotent-replayed': 'false' }), status(201));
    const res = await createIdempotentFetch({ ...fast, fetch })(ORDERS, post());
    assert.equal(res.status, 409);
    assert.equal(sent.length, 1);
  });

  it('follows retryStatuses', async () => {
    const { fetch, sent } = scripted(status(408), status(409), status(201));
    const events: RetryEvent[] = [];
    const res = await createIdempotentFetch({ ...fast, fetch, retryStatuses: [408], onRetry: (event) => events.push(event) })(ORDERS, post());
    assert.equal(res.status, 409, '409 is not retried once left out of the list');
    assert.equal(sent.length, 2);
    assert.equal(events[0]!.reason, 'retryable-status');
  });

  it('returns the last retryable response when retries run out, its body unread', async () => {
    const { fetch, sent } = scripted(new Response(JSON.stringify({ type: 'https://oncely.dev/problems/store-unavailable' }), { status: 503, headers: { 'content-type': 'application/problem+json' } }));
    const res = await createIdempotentFetch({ ...fast, fetch, retries: 2 })(ORDERS, post());
    assert.equal(res.status, 503);
    assert.equal(sent.length, 3);
    assert.deepEqual(await res.json(), { type: 'https://oncely.dev/problems/store-unavailable' });
  });

  it('cancels the body of every response it discards, so no connection is held', async () => {
    let cancelled = 0;
    const streaming = () => new Response(new ReadableStream({ pull: () => {}, cancel: () => void cancelled++ }), { status: 503 });
    const { fetch } = scripted(streaming, streaming, status(201));
    assert.equal((await createIdempotentFetch({ ...fast, fetch })(ORDERS, post())).status, 201);
    assert.equal(cancelled, 2);
  });

  it('retries network errors, then throws NETWORK_ERROR with the attempts, the key and the cause', async () => {
    const failure = new TypeError('fetch failed');
    const { fetch, sent } = scripted(failure);
    const events: RetryEvent[] = [];
    const error = await createIdempotentFetch({ ...fast, fetch, retries: 3, onRetry: (event) => events.push(event) })(ORDERS, post()).catch((e: unknown) => e);
    assert.ok(error instanceof IdempotentFetchError);
    assert.ok(error instanceof OncelyError, 'one error base for the whole library');
    assert.equal(error.code, 'NETWORK_ERROR');
    assert.equal(error.attempts, 4);
    assert.equal(`"${error.key}"`, sent[0]!.key);
    assert.equal(error.cause, failure);
    assert.deepEqual(events.map((e) => [e.attempt, e.reason, e.error]), [[1, 'network-error', failure], [2, 'network-error', failure], [3, 'network-error', failure]]);
  });

  it('abandons an attempt after attemptTimeoutMs and retries it; TIMEOUT once retries run out', async () => {
    const { fetch, sent } = scripted('hang', status(201));
    const events: RetryEvent[] = [];
    const res = await createIdempotentFetch({ ...fast, fetch, attemptTimeoutMs: 30, onRetry: (event) => events.push(event) })(ORDERS, post());
    assert.equal(res.status, 201);
    assert.equal(events[0]!.reason, 'timeout');
    assert.equal(sent[0]!.key, sent[1]!.key);

    const hung = scripted('hang-ignoring-signal');
    const started = performance.now();
    const error = await createIdempotentFetch({ ...fast, fetch: hung.fetch, attemptTimeoutMs: 20, retries: 1 })(ORDERS, post()).catch((e: unknown) => e);
    assert.ok(error instanceof IdempotentFetchError);
    assert.equal(error.code, 'TIMEOUT');
    assert.equal(error.attempts, 2);
    assert.ok(performance.now() - started < 1_000, 'a fetch that ignores its signal does not hold the call');
  });
});

describe('createIdempotentFetch: how long it waits', () => {
  it('backoff is full jitter: random(0, min(cap, base·2^n)) in whole ms', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 60 }), fc.integer({ min: 0, max: 10_000 }), fc.integer({ min: 0, max: 60_000 }), fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), (retry, base, cap, r) => {
        const delay = backoffDelay(retry, base, cap, () => r);
        const ceiling = Math.min(cap, base * 2 ** retry);
        assert.ok(Number.isInteger(delay));
        assert.ok(delay >= 0 && delay <= ceiling, `${delay} within [0, ${ceiling}]`);
        assert.equal(delay, Math.floor(r * ceiling));
      }),
    );
    assert.equal(backoffDelay(0, 500, 5_000, () => 0.999), 499);
    assert.equal(backoffDelay(3, 500, 5_000, () => 0.999), 3_996);
    assert.equal(backoffDelay(4, 500, 5_000, () => 0.999), 4_995, 'capped at maxDelayMs');
    assert.equal(backoffDelay(1_100, 500, 5_000, () => 0.5), 2_500, 'no overflow for a large retry number');
  });

  it('waits the backoff with the injected random, doubling per retry up to the cap', async () => {
    const { fetch } = scripted(status(503));
    const events: RetryEvent[] = [];
    await createIdempotentFetch({ fetch, retries: 5, baseDelayMs: 2, maxDelayMs: 10, random: () => 0.999, onRetry: (event) => events.push(event) })(ORDERS, post());
    assert.deepEqual(events.map((e) => e.delayMs), [1, 3, 7, 9, 9]);
  });

  it('reads Retry-After in seconds and as an HTTP date', () => {
    const now = Date.parse('Wed, 21 Oct 2015 07:28:00 GMT');
    assert.equal(retryAfterMs('120', now), 120_000);
    assert.equal(retryAfterMs(' 0 ', now), 0);
    assert.equal(retryAfterMs('Wed, 21 Oct 2015 07:28:30 GMT', now), 30_000);
    assert.equal(retryAfterMs('Wednesday, 21-Oct-15 07:28:30 GMT', now), 30_000);
    assert.equal(retryAfterMs('Wed, 21 Oct 2015 07:00:00 GMT', now), 0, 'a date in the past: no wait');
    for (const unreadable of ['1.5', '-3', 'soon', '']) assert.equal(retryAfterMs(unreadable, now), undefined, unreadable);
    assert.equal(retryAfterMs(null, now), undefined);
  });

  for (const [form, header] of [
    ['seconds', () => '7'],
    ['an HTTP date', () => new Date(Date.now() + 8_000).toUTCString()],
  ] as const) {
    it(`takes Retry-After (${form}) as a floor under the backoff`, async () => {
      const { fetch } = scripted(() => status(429, { 'retry-after': header() }));
      const controller = new AbortController();
      const events: RetryEvent[] = [];
      const stop = new Error('stop');
      const call = createIdempotentFetch({ fetch, random: () => 0.5, onRetry: (event) => (events.push(event), controller.abort(stop)) })(ORDERS, post(), { signal: controller.signal });
      await assert.rejects(call, stop);
      assert.ok(events[0]!.delayMs >= 6_000 && events[0]!.delayMs <= 8_000, `${events[0]!.delayMs}`);
    });
  }

  it('a Retry-After below the backoff does not shorten it', async () => {
    const { fetch } = scripted(status(503, { 'retry-after': '0' }), status(201));
    const events: RetryEvent[] = [];
    await createIdempotentFetch({ fetch, baseDelayMs: 40, random: () => 0.5, onRetry: (event) => events.push(event) })(ORDERS, post());
    assert.equal(events[0]!.delayMs, 20);
  });

  it('returns the retryable response at once when its Retry-After would cross the deadline', async () => {
    const { fetch, sent } = scripted(status(503, { 'retry-after': '5' }), status(201));
    const started = performance.now();
    const res = await createIdempotentFetch({ ...fast, fetch, deadlineMs: 1_000 })(ORDERS, post());
    assert.equal(res.status, 503);
    assert.equal(sent.length, 1);
    assert.ok(performance.now() - started < 500);
  });

  it('throws DEADLINE_EXCEEDED when the deadline ends an attempt or the next wait would cross it', async () => {
    const hang = scripted('hang');
    const error = await createIdempotentFetch({ ...fast, fetch: hang.fetch, deadlineMs: 50, attemptTimeoutMs: 5_000 })(ORDERS, post()).catch((e: unknown) => e);
    assert.ok(error instanceof IdempotentFetchError);
    assert.equal(error.code, 'DEADLINE_EXCEEDED');
    assert.equal(error.attempts, 1);

    const down = scripted(new TypeError('fetch failed'));
    const waited = await createIdempotentFetch({ fetch: down.fetch, baseDelayMs: 10_000, maxDelayMs: 10_000, random: () => 0.9, deadlineMs: 2_000 })(ORDERS, post()).catch((e: unknown) => e);
    assert.ok(waited instanceof IdempotentFetchError);
    assert.equal(waited.code, 'DEADLINE_EXCEEDED');
    assert.equal(down.sent.length, 1);
    assert.ok(waited.cause instanceof TypeError);
  });

  it('an abort during a wait rejects at once with the signal reason', async () => {
    const { fetch, sent } = scripted(status(503));
    const controller = new AbortController();
    const reason = new Error('user left the page');
    const call = createIdempotentFetch({ fetch, baseDelayMs: 10_000, maxDelayMs: 10_000, random: () => 0.9 })(ORDERS, post(), { signal: controller.signal });
    await new Promise((resolve) => setTimeout(resolve, 30));
    const abortedAt = performance.now();
    controller.abort(reason);
    await assert.rejects(call, reason);
    assert.ok(performance.now() - abortedAt < 100);
    assert.equal(sent.length, 1);
  });

  it('an abort during an attempt, through init.signal or a Request, rejects with its reason', async () => {
    const { fetch } = scripted('hang');
    const send = createIdempotentFetch({ ...fast, fetch });
    const controller = new AbortController();
    const reason = new Error('cancelled');
    setTimeout(() => controller.abort(reason), 20);
    await assert.rejects(send(ORDERS, { ...post(), signal: controller.signal }), reason);

    const second = new AbortController();
    setTimeout(() => second.abort(reason), 20);
    await assert.rejects(send(new Request(ORDERS, { ...post(), signal: second.signal })), reason);
  });

  it('an already aborted signal sends nothing', async () => {
    const { fetch, sent } = scripted(status(201));
    const reason = new Error('too late');
    await assert.rejects(createIdempotentFetch({ fetch })(ORDERS, post(), { signal: AbortSignal.abort(reason) }), reason);
    assert.equal(sent.length, 0);
  });
});

describe('createIdempotentFetch: the same body on every attempt', () => {
  const bytesOf = async (body: ConstructorParameters<typeof Response>[0]) => new Uint8Array(await new Response(body).arrayBuffer());
  const form = () => {
    const data = new FormData();
    data.set('item', 'book');
    data.set('file', new Blob([new Uint8Array([0, 1, 2, 255])], { type: 'application/octet-stream' }), 'a.bin');
    return data;
  };
  const bodies: [string, () => NonNullable<RequestInit['body']>, string | RegExp][] = [
    ['a string', () => '{"amount":42,"note":"caf\u00e9"}', 'text/plain;charset=UTF-8'],
    ['a Uint8Array', () => new Uint8Array([1, 2, 3, 0, 255]), ''],
    ['an ArrayBuffer', () => new Uint8Array([9, 8, 7]).buffer, ''],
    ['a Blob', () => new Blob(['{"a":1}'], { type: 'application/json' }), 'application/json'],
    ['URLSearchParams', () => new URLSearchParams({ amount: '42', note: 'a&b' }), 'application/x-www-form-urlencoded;charset=UTF-8'],
    ['FormData', form, /^multipart\/form-data; boundary=/],
  ];
  for (const [name, make, contentType] of bodies) {
    it(`${name}: byte-identical with the same content type`, async () => {
      const { fetch, sent } = scripted(status(503), new TypeError('fetch failed'), status(201));
      await createIdempotentFetch({ ...fast, fetch })(ORDERS, { method: 'POST', body: make() });
      assert.equal(sent.length, 3);
      for (const attempt of sent.slice(1)) {
        assert.deepEqual(attempt.body, sent[0]!.body);
        assert.equal(attempt.contentType, sent[0]!.contentType);
      }
      if (contentType === '') assert.equal(sent[0]!.contentType, null);
      else if (typeof contentType === 'string') assert.equal(sent[0]!.contentType, contentType);
      else assert.match(sent[0]!.contentType!, contentType);
      if (name === 'FormData') {
        const boundary = sent[0]!.contentType!.split('boundary=')[1]!;
        assert.ok(new TextDecoder().decode(sent[0]!.body).startsWith(`--${boundary}`), 'the boundary in the header is the one in the bytes');
        const parsed = await new Response(sent[2]!.body, { headers: { 'content-type': sent[2]!.contentType! } }).formData();
        assert.equal(parsed.get('item'), 'book');
      } else {
        assert.deepEqual(sent[0]!.body, await bytesOf(make()));
      }
    });
  }

  it('keeps a content type the caller set', async () => {
    const { fetch, sent } = scripted(status(201));
    await createIdempotentFetch({ fetch })(ORDERS, { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' } });
    assert.equal(sent[0]!.contentType, 'application/json');
  });

  it('takes a Request: its method, headers and body on every attempt, the caller\'s Request left unused', async () => {
    const { fetch, sent } = scripted(status(502), status(201));
    const request = new Request(ORDERS, { method: 'PATCH', body: 'patch me', headers: { 'x-trace': 't-1' } });
    const res = await createIdempotentFetch({ ...fast, fetch })(request);
    assert.equal(res.status, 201);
    assert.deepEqual(sent.map((s) => s.method), ['PATCH', 'PATCH']);
    assert.deepEqual(sent[1]!.body, new TextEncoder().encode('patch me'));
    assert.equal(sent[0]!.key, sent[1]!.key);
    assert.equal(request.bodyUsed, false);
  });

  it('refuses a stream body with a clear error, sending nothing', async () => {
    const { fetch, sent } = scripted(status(201));
    const stream = new ReadableStream<Uint8Array>({ start: (c) => (c.enqueue(new Uint8Array([1])), c.close()) });
    const error = await createIdempotentFetch({ fetch })(ORDERS, { method: 'POST', body: stream, duplex: 'half' } as RequestInit).catch((e: unknown) => e);
    assert.ok(error instanceof IdempotentFetchError);
    assert.equal(error.code, 'BODY_NOT_REPLAYABLE');
    assert.match(error.message, /stream.*allowStreamBody/s);
    assert.equal(error.attempts, 0);
    assert.equal(sent.length, 0);
  });

  it('with allowStreamBody, sends a stream body once and never retries it', async () => {
    const { fetch, sent } = scripted(status(503), status(201));
    const stream = new ReadableStream<Uint8Array>({ start: (c) => (c.enqueue(new Uint8Array([7, 7])), c.close()) });
    const res = await createIdempotentFetch({ ...fast, fetch, allowStreamBody: true })(ORDERS, { method: 'POST', body: stream });
    assert.equal(res.status, 503);
    assert.equal(sent.length, 1);
    assert.deepEqual(sent[0]!.body, new Uint8Array([7, 7]));
  });
});

describe('createIdempotentFetch: keyStore', () => {
  const shared = scripted(status(201));
  const syncStore = memoryKeyStore();
  it('keeps the key of an operation until it has a final outcome, then starts a new one', async () => {
    const keyStore = memoryKeyStore();
    const { fetch, sent } = scripted(status(503), status(503), new TypeError('fetch failed'), status(201), status(201));
    const send = createIdempotentFetch({ ...fast, fetch, keyStore, retries: 1 });

    assert.equal((await send(ORDERS, post(), { operation: 'checkout' })).status, 503, 'retries exhausted');
    const kept = keyStore.get('checkout');
    assert.equal(`"${kept}"`, sent[0]!.key, 'saved before the first attempt, kept after exhausted retries');

    await send(ORDERS, post(), { operation: 'checkout' }); // network error, then 201
    assert.deepEqual(sent.map((s) => s.key), Array(4).fill(`"${kept}"`), 'the next call of the operation reuses it');
    assert.equal(keyStore.get('checkout'), undefined, 'a final outcome deletes it');

    await send(ORDERS, post(), { operation: 'checkout' });
    assert.notEqual(sent[4]!.key, sent[0]!.key, 'the next checkout is a new operation');
  });

  it('keeps the key when the call throws or is aborted; deletes it on a final 4xx', async () => {
    const keyStore = memoryKeyStore();
    const down = scripted(new TypeError('fetch failed'));
    await assert.rejects(createIdempotentFetch({ ...fast, fetch: down.fetch, keyStore, retries: 1 })(ORDERS, post(), { operation: 'pay' }), IdempotentFetchError);
    assert.equal(`"${keyStore.get('pay')}"`, down.sent[0]!.key);

    const hang = scripted('hang');
    const controller = new AbortController();
    setTimeout(() => controller.abort(new Error('reload')), 10);
    await assert.rejects(createIdempotentFetch({ fetch: hang.fetch, keyStore })(ORDERS, post(), { operation: 'pay', signal: controller.signal }), /reload/);
    assert.equal(hang.sent[0]!.key, down.sent[0]!.key, 'the aborted call used the kept key');
    assert.equal(`"${keyStore.get('pay')}"`, down.sent[0]!.key, 'and kept it');

    const reused = scripted(status(422));
    await createIdempotentFetch({ fetch: reused.fetch, keyStore })(ORDERS, post(), { operation: 'pay' });
    assert.equal(reused.sent[0]!.key, down.sent[0]!.key);
    assert.equal(keyStore.get('pay'), undefined);
  });

  it('an explicit key wins over the stored one and is kept under the operation', async () => {
    const keyStore = memoryKeyStore();
    keyStore.set('checkout', 'old-key');
    const { fetch, sent } = scripted(status(503));
    await createIdempotentFetch({ ...fast, fetch, keyStore, retries: 0 })(ORDERS, post(), { operation: 'checkout', key: 'page-load-key' });
    assert.equal(sent[0]!.key, '"page-load-key"');
    assert.equal(keyStore.get('checkout'), 'page-load-key');
  });

  it('awaits an asynchronous store, and refuses operation without one', async () => {
    const map = new Map<string, string>();
    const log: string[] = [];
    const keyStore = {
      get: async (op: string) => (log.push(`get ${op}`), map.get(op)),
      set: async (op: string, key: string) => void (log.push(`set ${op}`), map.set(op, key)),
      delete: async (op: string) => void (log.push(`delete ${op}`), map.delete(op)),
    };
    const { fetch } = scripted(status(201));
    await createIdempotentFetch({ fetch, keyStore })(ORDERS, post(), { operation: 'o' });
    assert.deepEqual(log, ['get o', 'set o', 'get o', 'delete o'], 'deleted only if it is still this operation\'s key');
    await assert.rejects(createIdempotentFetch({ fetch })(ORDERS, post(), { operation: 'o' }), /keyStore/);
  });

  it('sessionStorageKeyStore keeps keys under the prefix in sessionStorage, and says so when there is none', async () => {
    const items = new Map<string, string>();
    const global = globalThis as { sessionStorage?: unknown };
    const store = sessionStorageKeyStore('shop:');
    assert.throws(() => store.get('checkout'), /sessionStorage is not available/);
    global.sessionStorage = { getItem: (k: string) => items.get(k) ?? null, setItem: (k: string, v: string) => void items.set(k, v), removeItem: (k: string) => void items.delete(k) };
    try {
      const { fetch, sent } = scripted(status(503), status(201));
      await createIdempotentFetch({ ...fast, fetch, keyStore: store, retries: 0 })(ORDERS, post(), { operation: 'checkout' });
      assert.equal(`"${items.get('shop:checkout')}"`, sent[0]!.key);
      // The page reloads: a new client, the same store.
      await createIdempotentFetch({ ...fast, fetch, keyStore: sessionStorageKeyStore('shop:') })(ORDERS, post(), { operation: 'checkout' });
      assert.equal(sent[1]!.key, sent[0]!.key);
      assert.equal(items.size, 0);
    } finally {
      delete global.sessionStorage;
    }
  });

  it('calls of one operation started together (a double click) share its key', async () => {
    const map = new Map<string, string>();
    const slowStore = {
      get: async (op: string) => (await sleep(5), map.get(op)),
      set: async (op: string, key: string) => void (await sleep(5), map.set(op, key)),
      delete: async (op: string) => void map.delete(op),
    };
    for (const [name, clients] of [
      ['one client, synchronous store', () => Array(2).fill(createIdempotentFetch({ ...fast, fetch: shared.fetch, keyStore: syncStore }))],
      ['two clients, synchronous store', () => [createIdempotentFetch({ ...fast, fetch: shared.fetch, keyStore: syncStore }), createIdempotentFetch({ ...fast, fetch: shared.fetch, keyStore: syncStore })]],
      ['one client, asynchronous store', () => Array(2).fill(createIdempotentFetch({ ...fast, fetch: shared.fetch, keyStore: slowStore }))],
    ] as const) {
      shared.sent.length = 0;
      const [a, b] = clients() as IdempotentFetch[];
      await Promise.all([a!(ORDERS, post(), { operation: 'checkout' }), b!(ORDERS, post(), { operation: 'checkout' })]);
      assert.equal(shared.sent.length, 2);
      assert.equal(shared.sent[0]!.key, shared.sent[1]!.key, name);
    }
  });

  it('a call that ends after a newer operation of the same name started leaves the newer key alone', async () => {
    const keyStore = memoryKeyStore();
    let release!: (response: Response) => void;
    const first = new Promise<Response>((resolve) => (release = resolve));
    const send = createIdempotentFetch({ ...fast, keyStore, fetch: () => first });
    const old = send(ORDERS, post(), { operation: 'checkout' });
    await sleep(5);
    keyStore.set('checkout', 'newer-checkout');
    release(status(201));
    await old;
    assert.equal(keyStore.get('checkout'), 'newer-checkout');
  });

  it('refuses a stored key that is not a valid key', async () => {
    const keyStore = memoryKeyStore();
    keyStore.set('checkout', 'bad"key');
    const { fetch } = scripted(status(201));
    await assert.rejects(createIdempotentFetch({ fetch, keyStore })(ORDERS, post(), { operation: 'checkout' }), /kept for operation "checkout"/);
  });
});
