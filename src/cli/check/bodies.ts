/**
 * Request bodies for the probes: the default body, and the "other body" sent with a reused key.
 */
import { randomUUID } from 'node:crypto';

/** The body sent when `--data` is not given: new for each probe, so no request repeats another. */
export const defaultBody = (): Buffer => Buffer.from(JSON.stringify({ oncely_check: randomUUID() }));

/** `true` when the bytes parse as JSON. */
export function isJson(body: Buffer): boolean {
  if (body.length === 0) return false;
  try {
    JSON.parse(body.toString('utf8'));
    return true;
  } catch {
    return false;
  }
}

/** The Content-Type sent when no `-H 'Content-Type: …'` is given. */
export const defaultContentType = (body: Buffer): string => (isJson(body) ? 'application/json' : 'text/plain; charset=utf-8');

export interface OtherBody {
  body: Buffer;
  /** How it differs, for the report: `changed "amount" from 100 to 101`. */
  description: string;
}

const MARKER = 'oncely_check_other';

/**
 * A body that differs from `body` in a way any fingerprint sees, yet that the endpoint is likely
 * to accept (a body it refuses for being invalid would hide whether the key reuse was noticed):
 *
 * - a JSON object: its first top-level number + 1, else its first top-level string + `-other`,
 *   else its first top-level boolean negated, else a field `"oncely_check_other": true` added;
 * - a JSON array: the element `"oncely_check_other"` appended;
 * - a form (`application/x-www-form-urlencoded`): the pair `oncely_check_other=1` appended;
 * - anything else (text, bytes, an empty body): a line `oncely_check_other` appended.
 */
export function deriveOtherBody(body: Buffer, contentType: string | undefined): OtherBody {
  const text = body.toString('utf8');
  if (isJson(body)) {
    const value: unknown = JSON.parse(text);
    if (Array.isArray(value)) return { body: Buffer.from(JSON.stringify([...value, MARKER])), description: `appended the element "${MARKER}" to the JSON array` };
    if (value !== null && typeof value === 'object') return changeObject(value as Record<string, unknown>);
  }
  if (/^application\/x-www-form-urlencoded\b/i.test(contentType ?? '')) {
    const separator = body.length === 0 || text.endsWith('&') ? '' : '&';
    return { body: Buffer.concat([body, Buffer.from(`${separator}${MARKER}=1`)]), description: `appended the form field ${MARKER}=1` };
  }
  const separator = body.length === 0 ? '' : '\n';
  return { body: Buffer.concat([body, Buffer.from(`${separator}${MARKER}`)]), description: `appended the line "${MARKER}" to the body` };
}

function changeObject(object: Record<string, unknown>): OtherBody {
  const entries = Object.entries(object);
  const changed = (name: string, from: unknown, to: unknown): OtherBody => ({
    body: Buffer.from(JSON.stringify({ ...object, [name]: to })),
    description: `changed ${JSON.stringify(name)} from ${short(from)} to ${short(to)}`,
  });
  const number = entries.find(([, value]) => typeof value === 'number' && Number.isFinite(value));
  if (number) return changed(number[0], number[1], (number[1] as number) + 1);
  const string = entries.find(([, value]) => typeof value === 'string');
  if (string) return changed(string[0], string[1], `${string[1] as string}-other`);
  const boolean = entries.find(([, value]) => typeof value === 'boolean');
  if (boolean) return changed(boolean[0], boolean[1], !boolean[1]);
  return { body: Buffer.from(JSON.stringify({ ...object, [MARKER]: true })), description: `added the field "${MARKER}": true` };
}

const short = (value: unknown): string => {
  const text = JSON.stringify(value);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
};
