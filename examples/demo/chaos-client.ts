/**
 * The checkout page and the ways its order gets sent more than once.
 *
 * `checkout()` is a correct retrying client: the `Idempotency-Key` is made once per logical
 * checkout (at page load) and sent on every attempt; it retries network errors, timeouts and
 * 5xx answers (at most 3 such failures), and waits on 409 "in progress" answers, honouring
 * `Retry-After` up to a small cap, until it gets the order. The same client talks to both
 * routes: only the URL differs, so the difference in the table is the server's.
 */
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { startFlakyProxy, type Fault } from './flaky-proxy.js';

/** What one attempt got back. */
export type AttemptResult =
  | { kind: 'created' | 'replayed'; orderId: number }
  | { kind: 'in-progress'; retryAfterMs: number }
  | { kind: 'refused'; status: number }
  | { kind: 'timeout' }
  | { kind: 'network-error' };

export interface Scenario {
  name: string;
  /** Plays the scenario against one route of the shop; resolves with every attempt's result once the client is done. */
  play(shopUrl: string, path: '/orders' | '/orders-unsafe'): Promise<AttemptResult[]>;
}

interface CheckoutOptions {
  /** Per-attempt timeout. Default 5 s. */
  attemptTimeoutMs?: number;
  /** Asks the shop's payment provider to take this long (header `x-demo-delay-ms`). */
  paymentDelayMs?: number;
}

/** Network errors, timeouts and 5xx answers a checkout retries before it gives up. */
const MAX_FAILURES = 3;
/** Longest wait after a 409, whatever its Retry-After says: the demo should not idle for seconds. */
const MAX_RETRY_AFTER_MS = 100;
/** A checkout gives up after this long, whatever happens. */
const CHECKOUT_DEADLINE_MS = 10_000;
const RETRYABLE_STATUSES = new Set([408, 429, 500, 502, 503, 504]);

const CART = { amountCents: 4_999, email: 'ada@example.com' };

/** Sends one checkout, retrying as described above; returns every attempt's result in order. */
export async function checkout(url: string, idempotencyKey: string, options: CheckoutOptions = {}): Promise<AttemptResult[]> {
  const results: AttemptResult[] = [];
  const deadline = Date.now() + CHECKOUT_DEADLINE_MS;
  let failures = 0;
  while (Date.now() < deadline) {
    const result = await attempt(url, idempotencyKey, options);
    results.push(result);
    if (result.kind === 'created' || result.kind === 'replayed') break;
    if (result.kind === 'in-progress') {
      await sleep(Math.min(result.retryAfterMs, MAX_RETRY_AFTER_MS));
      continue;
    }
    if (result.kind === 'refused' && !RETRYABLE_STATUSES.has(result.status)) break;
    failures += 1;
    if (failures === MAX_FAILURES) break;
    await sleep(50 * failures); // backoff
  }
  return results;
}

async function attempt(url: string, idempotencyKey: string, options: CheckoutOptions): Promise<AttemptResult> {
  const headers: Record<string, string> = { 'content-type': 'application/json', 'idempotency-key': idempotencyKey };
  if (options.paymentDelayMs !== undefined) headers['x-demo-delay-ms'] = String(options.paymentDelayMs);
  try {
    const response = await fetch(url, { method: 'POST', headers, body: JSON.stringify(CART), signal: AbortSignal.timeout(options.attemptTimeoutMs ?? 5_000) });
    const body = await response.text(); // read whole: a connection cut mid-body is a network error
    if (response.status === 201) return { kind: response.headers.get('idempotent-replayed') === 'true' ? 'replayed' : 'created', orderId: (JSON.parse(body) as { id: number }).id };
    if (response.status === 409) return { kind: 'in-progress', retryAfterMs: 1_000 * (Number(response.headers.get('retry-after')) || 1) };
    return { kind: 'refused', status: response.status };
  } catch (error) {
    return { kind: error instanceof DOMException && error.name === 'TimeoutError' ? 'timeout' : 'network-error' };
  }
}

/** A new Idempotency-Key, as the checkout page makes one when it loads. */
const pageLoadKey = (): string => randomUUID();

/** Runs `play` with a flaky proxy to the shop in between, closing the proxy afterwards. */
async function throughProxy(shopUrl: string, faults: Fault[], play: (proxyUrl: string) => Promise<AttemptResult[]>): Promise<AttemptResult[]> {
  const proxy = await startFlakyProxy(shopUrl, faults);
  try {
    return await play(proxy.url);
  } finally {
    await proxy.close();
  }
}

export const scenarios: Scenario[] = [
  {
    name: 'double click',
    async play(shopUrl, path) {
      const key = pageLoadKey();
      const first = checkout(shopUrl + path, key);
      await sleep(30);
      const second = checkout(shopUrl + path, key);
      return (await Promise.all([first, second])).flat();
    },
  },
  {
    // The payment provider is slow today: each attempt gives up after 300 ms, the order takes 1.2 s.
    name: 'timeout and retry',
    play: (shopUrl, path) => checkout(shopUrl + path, pageLoadKey(), { attemptTimeoutMs: 300, paymentDelayMs: 1_200 }),
  },
  {
    name: 'load balancer retry',
    play: (shopUrl, path) => throughProxy(shopUrl, ['answer-503'], (proxyUrl) => checkout(proxyUrl + path, pageLoadKey())),
  },
  {
    name: '47 clicks',
    async play(shopUrl, path) {
      const key = pageLoadKey();
      return (await Promise.all(Array.from({ length: 47 }, () => checkout(shopUrl + path, key)))).flat();
    },
  },
  {
    name: 'response lost',
    play: (shopUrl, path) => throughProxy(shopUrl, ['cut-connection'], (proxyUrl) => checkout(proxyUrl + path, pageLoadKey())),
  },
];
