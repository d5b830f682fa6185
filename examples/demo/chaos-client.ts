/**
 * The checkout page and the ways its order gets sent more than once.
 *
 * `checkout()` is the page's "Pay" button on `oncely/client`: the `Idempotency-Key` is made
 * once per logical checkout (at page load) and sent on every attempt; the client retries
 * network errors, timeouts, 409 "in progress" and 5xx answers, up to 3 times, honouring
 * `Retry-After`. The same client talks to both routes: only the URL differs, so the
 * difference in the table is the server's.
 */
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { createIdempotentFetch, IdempotentFetchError, type RetryEvent } from 'oncely/client';
import { startFlakyProxy, type Fault } from './flaky-proxy.js';

/** What one attempt got back. */
export type AttemptResult =
  | { kind: 'created' | 'replayed'; orderId: number }
  | { kind: 'in-progress' }
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

const CART = { amountCents: 4_999, email: 'ada@example.com' };

/** An attempt that is retried, as `onRetry` reports it. */
function retriedAttempt(event: RetryEvent): AttemptResult {
  if (event.reason === 'timeout' || event.reason === 'network-error') return { kind: event.reason };
  return event.status === 409 ? { kind: 'in-progress' } : { kind: 'refused', status: event.status ?? 0 };
}

/** Sends one checkout through `oncely/client`; returns every attempt's result in order. */
export async function checkout(url: string, idempotencyKey: string, options: CheckoutOptions = {}): Promise<AttemptResult[]> {
  const results: AttemptResult[] = [];
  const send = createIdempotentFetch({
    retries: 3,
    baseDelayMs: 50, // a demo should not idle; a real page keeps the default 500 ms
    attemptTimeoutMs: options.attemptTimeoutMs ?? 5_000,
    onRetry: (event) => results.push(retriedAttempt(event)),
  });
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (options.paymentDelayMs !== undefined) headers['x-demo-delay-ms'] = String(options.paymentDelayMs);
  try {
    const response = await send(url, { method: 'POST', headers, body: JSON.stringify(CART) }, { key: idempotencyKey });
    const body = await response.text();
    if (response.status === 201) {
      results.push({ kind: response.headers.get('idempotent-replayed') === 'true' ? 'replayed' : 'created', orderId: (JSON.parse(body) as { id: number }).id });
    } else results.push(response.status === 409 ? { kind: 'in-progress' } : { kind: 'refused', status: response.status });
  } catch (error) {
    if (!(error instanceof IdempotentFetchError)) throw error;
    results.push({ kind: error.code === 'TIMEOUT' ? 'timeout' : 'network-error' });
  }
  return results;
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
