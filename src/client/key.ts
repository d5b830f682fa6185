/**
 * The key a client sends. The IETF httpapi draft "The Idempotency-Key HTTP Header Field" (§2)
 * makes the header an RFC 8941 Item whose value is a String: `Idempotency-Key: "8e03978e-…"`.
 */
import { InvalidKeyError } from '../core/errors.js';

export const MAX_KEY_LENGTH = 255;

/**
 * Printable ASCII (RFC 8941 §3.3.3 sf-string range) without `"` and `\`, so the key needs no
 * escaping and reads the same to servers that take the header value bare.
 */
const KEY = /^[\x20\x21\x23-\x5b\x5d-\x7e]+$/;

/** The key, checked; `where` says where it came from, for the error message. */
export function checkKey(key: unknown, where: string): string {
  if (typeof key !== 'string' || key.length === 0) throw new InvalidKeyError(`${where} must be a non-empty string, got ${JSON.stringify(key) ?? String(key)}`);
  if (key.length > MAX_KEY_LENGTH) throw new InvalidKeyError(`${where} is ${key.length} characters long; at most ${MAX_KEY_LENGTH} are allowed`);
  if (!KEY.test(key)) throw new InvalidKeyError(`${where} may only contain printable ASCII characters other than " and \\, got ${JSON.stringify(key)}`);
  return key;
}

/** The header value: an sf-string (`"key"`), or the key as is for servers that want it bare. */
export function headerValue(key: string, quote: boolean): string {
  return quote ? `"${key}"` : key;
}
