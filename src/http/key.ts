/**
 * Reading the `Idempotency-Key` request header (IETF httpapi draft "The Idempotency-Key HTTP
 * Header Field", §2: an Item Structured Header whose value is a String, RFC 8941 §3.3.3).
 * Clients in the wild also send the key bare (`Idempotency-Key: 8e03978e-40d5-43e8`), as
 * Stripe accepts, so both forms are read; everything else is refused.
 */
import { parseItem } from 'structured-headers';

export type KeyParse =
  | { status: 'absent' }
  | { status: 'key'; key: string }
  | { status: 'invalid'; detail: string };

/** Visible ASCII without `"` (which starts an sf-string) and `,` (which joins repeated header lines). */
const BARE_KEY = /^[\x21\x23-\x2b\x2d-\x7e]+$/;

/**
 * `values` holds one entry per header line as received. Several lines, an empty value, a
 * value over `maxLength` characters, or characters outside printable ASCII are invalid.
 */
export function parseIdempotencyKey(values: readonly string[], maxLength: number): KeyParse {
  if (values.length === 0) return { status: 'absent' };
  if (values.length > 1) return { status: 'invalid', detail: `Send one Idempotency-Key header line, not ${values.length}` };
  const raw = values[0]!.trim();
  if (raw.length === 0) return { status: 'invalid', detail: 'The Idempotency-Key header is empty' };
  // Bound the work before parsing. The limit counts the key after unescaping: quoted, each of
  // its characters takes at most two (\" or \\), plus the two quotes.
  if (raw.length > 2 * maxLength + 2) return { status: 'invalid', detail: `The Idempotency-Key is longer than ${maxLength} characters` };
  let key: string;
  if (raw.startsWith('"')) {
    let item: ReturnType<typeof parseItem>;
    try {
      item = parseItem(raw);
    } catch {
      return { status: 'invalid', detail: 'The Idempotency-Key is not a valid quoted string (RFC 8941 sf-string: printable ASCII, with \\" and \\\\ escapes)' };
    }
    if (typeof item[0] !== 'string' || item[1].size > 0) return { status: 'invalid', detail: 'The Idempotency-Key must be a plain string, without parameters' };
    key = item[0];
  } else if (BARE_KEY.test(raw)) {
    key = raw;
  } else {
    return { status: 'invalid', detail: 'The Idempotency-Key may only contain printable ASCII without spaces, commas or quotes, or be a quoted string' };
  }
  if (key.length === 0) return { status: 'invalid', detail: 'The Idempotency-Key is empty' };
  if (key.length > maxLength) return { status: 'invalid', detail: `The Idempotency-Key is longer than ${maxLength} characters` };
  return { status: 'key', key };
}
