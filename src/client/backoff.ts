/**
 * How long to wait before a retry: full-jitter exponential backoff ("Exponential Backoff And
 * Jitter", AWS Architecture Blog), with the server's `Retry-After` as a floor (RFC 9110 §10.2.3).
 */

/**
 * The wait before retry number `retry` (0 for the first retry): `random(0, min(cap, base·2^retry))`,
 * whole milliseconds. Full jitter spreads clients that failed together, so they do not all
 * come back at the same instant.
 */
export function backoffDelay(retry: number, baseDelayMs: number, maxDelayMs: number, random: () => number): number {
  const ceiling = Math.min(maxDelayMs, baseDelayMs * 2 ** retry);
  return Math.floor(random() * ceiling);
}

const HTTP_DATE_START = /^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)/;

/**
 * `Retry-After` in milliseconds from `now`: delta-seconds (`120`) or an HTTP-date
 * (`Wed, 21 Oct 2015 07:28:00 GMT`). `undefined` when absent or unreadable; 0 for a past date.
 */
export function retryAfterMs(value: string | null, now: number): number | undefined {
  if (value === null) return undefined;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  // Every HTTP-date form starts with the day name; JavaScript's lenient parser would read "1.5" as a date.
  if (!HTTP_DATE_START.test(text)) return undefined;
  const date = Date.parse(text);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}
