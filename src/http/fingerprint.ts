/**
 * The request body's part of the HTTP fingerprint (DESIGN §1, §3.4). The rule: it never makes
 * two different requests equal. Two retries of one request (the same bytes, or the same JSON
 * with other whitespace or key order) are equal.
 *
 * - The content type is part of it for every body kind: the media type lower-cased, each
 *   parameter's name lower-cased and value unquoted, a `charset` value lower-cased (RFC 9110
 *   §8.3.1 makes those case-insensitive); a header that does not parse counts as sent.
 * - Bytes sent as JSON (`application/json`, `application/*+json`, UTF-8) that are valid UTF-8
 *   and valid JSON (RFC 8259) count as their lossless canonical JSON: no whitespace, object
 *   members sorted by key (by their keys' canonical text), strings by their decoded value
 *   (`"\u0041"` is `"A"`), numbers by their literal text (`1.0` is not `1`; nothing passes
 *   through a double). A key given twice keeps every value, in order: a reader that keeps the
 *   first and one that keeps the last each see the same in two bodies this makes equal.
 * - Any other bytes (another media type, invalid UTF-8, invalid JSON) count as they are.
 * - A body the framework already parsed (Express after `express.json()`) counts as the
 *   canonical JSON of the value the handler receives; a parsed Buffer as its bytes.
 *
 * The JSON is read and written with an explicit stack: JSON nested to any depth is fingerprinted.
 */
import { isUtf8 } from 'node:buffer';
import { createHash } from 'node:crypto';
import { canonicalJson } from '../core/codec.js';
import type { RequestBody } from './types.js';

/** The fingerprint of a request body: a hex SHA-256, or `''` when there is none. */
export function bodyDigest(body: RequestBody): string {
  switch (body.kind) {
    case 'none':
    case 'too-large':
      return '';
    case 'parsed':
      if (Buffer.isBuffer(body.value)) return bytesDigest(body.value, body.contentType);
      return digest('value', mediaType(body.contentType), canonicalJson(body.value));
    case 'bytes':
      return bytesDigest(body.bytes, body.contentType);
  }
}

function bytesDigest(bytes: Uint8Array, contentType: string | undefined): string {
  const type = mediaType(contentType);
  const json = isUtf8Json(type) ? canonicalJsonBytes(bytes) : undefined;
  return json === undefined ? digest('bytes', type, bytes) : digest('json', type, json);
}

/** SHA-256 over what the body is (its form and media type, one JSON line) and its content. */
function digest(form: 'bytes' | 'json' | 'value', type: MediaType, content: string | Uint8Array): string {
  return createHash('sha256').update(`${JSON.stringify([form, type])}\n`).update(content).digest('hex');
}

/** `[type/subtype, [name, value][]]`, or the header as sent when it does not parse; null when absent. */
type MediaType = [essence: string, parameters: [string, string][]] | string | null;

const TOKEN = "[!#$%&'*+.^_`|~0-9A-Za-z-]+";
const ESSENCE = new RegExp(`[ \\t]*(${TOKEN}/${TOKEN})[ \\t]*`, 'y');
// `; name=token` or `; name="quoted string"` (RFC 9110 §5.6.4), or an empty parameter.
const PARAMETER = new RegExp(`;[ \\t]*(?:(${TOKEN})=(?:(${TOKEN})|"((?:[\\t !#-\\[\\]-~\\x80-\\xff]|\\\\[\\t -~\\x80-\\xff])*)"))?[ \\t]*`, 'y');

function mediaType(header: string | undefined): MediaType {
  if (header === undefined) return null;
  ESSENCE.lastIndex = 0;
  const essence = ESSENCE.exec(header);
  if (!essence) return header;
  const parameters: [string, string][] = [];
  for (let at = ESSENCE.lastIndex; at < header.length; at = PARAMETER.lastIndex) {
    PARAMETER.lastIndex = at;
    const parameter = PARAMETER.exec(header);
    if (!parameter) return header;
    const [, rawName, token, quoted] = parameter;
    if (rawName === undefined) continue;
    const name = rawName.toLowerCase();
    const value = token ?? quoted!.replace(/\\(.)/g, '$1');
    parameters.push([name, name === 'charset' ? value.toLowerCase() : value]);
  }
  return [essence[1]!.toLowerCase(), parameters];
}

/** JSON is UTF-8 (RFC 8259 §8.1); a body declared in another charset is compared by its bytes. */
function isUtf8Json(type: MediaType): boolean {
  if (!Array.isArray(type)) return false;
  const [essence, parameters] = type;
  if (essence !== 'application/json' && !/^application\/[^/]+\+json$/.test(essence)) return false;
  return parameters.every(([name, value]) => name !== 'charset' || value === 'utf-8');
}

/**
 * JSON parsed from bytes: one slot per value in typed arrays, no object per value, so a large
 * body costs little to collect. Text is addressed in the input (0 up to its length) and then
 * in `escaped`, where strings with escapes are written again.
 */
interface ParsedJson {
  input: Buffer;
  escaped: Buffer | undefined;
  /** How many values there are; the root is value 0. */
  count: number;
  /** A scalar's text is `start` up to `end`. A container's `start` is ARRAY or OBJECT, its `end` its last value (or NONE). */
  start: Int32Array;
  end: Int32Array;
  /** The value before this one in its container, or NONE: a container's values link from last to first. */
  previous: Int32Array;
  /** A member's key, as text with its quotes; `keyEnd` 0 for a value that is not a member. */
  keyStart: Int32Array;
  keyEnd: Int32Array;
}

const ARRAY = -1;
const OBJECT = -2;
const NONE = -1;

/** The lossless canonical text of JSON bytes; undefined when they are not UTF-8 JSON. */
export function canonicalJsonBytes(bytes: Uint8Array): Buffer | undefined {
  const input = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  // A byte order mark is not JSON whitespace: a body with one is not JSON (nor the body without it).
  if (!isUtf8(input)) return undefined;
  const parsed = parseJson(input);
  return parsed && writeJson(parsed);
}

/** Parses RFC 8259 JSON with an explicit stack of open containers; undefined on any error. */
function parseJson(b: Buffer): ParsedJson | undefined {
  // JSON of n bytes has at most (n + 1) / 2 values (a container of k values has k + 1 bytes
  // more than they do); text that would need more slots is not JSON.
  const slots = (b.length >> 1) + 1;
  // One allocation for the five arrays and the stack of open containers.
  const memory = new Int32Array(6 * slots);
  const slice = (k: number) => memory.subarray(k * slots, (k + 1) * slots);
  const json: ParsedJson = { input: b, escaped: undefined, count: 0, start: slice(0), end: slice(1), previous: slice(2), keyStart: slice(3), keyEnd: slice(4) };
  const { start, end, previous, keyStart, keyEnd } = json;
  let escapedSize = 0;
  let at = 0;
  // The text of the last scalar or key read.
  let textStart = 0;
  let textEnd = 0;
  const read = (first: number, after: number) => {
    textStart = first;
    textEnd = after;
    return true;
  };
  const add = (first: number, after: number) => {
    start[json.count] = first;
    end[json.count] = after;
    previous[json.count] = NONE;
    return json.count++;
  };
  const skipSpace = () => {
    for (let c = b[at]; c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09; c = b[at]) at++;
  };
  const digits = () => {
    const first = at;
    for (let c = b[at]; c !== undefined && c >= 0x30 && c <= 0x39; c = b[at]) at++;
    return at > first;
  };
  /** A string: unescaped, its bytes are its canonical text; with escapes, it is decoded and written again. */
  const string = (): boolean => {
    const first = at++;
    let escapes = false;
    for (let c = b[at]; c !== 0x22; c = b[at]) {
      if (c === undefined || c < 0x20) return false;
      escapes ||= c === 0x5c;
      at += c === 0x5c ? 2 : 1;
    }
    at++;
    if (!escapes) return read(first, at);
    let decoded: string;
    try {
      // JSON.parse checks and decodes the escapes (\u0041, lone surrogates too); JSON.stringify
      // writes the decoded value back in one way only, never longer than it came.
      decoded = JSON.parse(b.toString('utf8', first, at)) as string;
    } catch {
      return false;
    }
    json.escaped ??= Buffer.allocUnsafe(b.length);
    const written = json.escaped.write(JSON.stringify(decoded), escapedSize);
    escapedSize += written;
    return read(b.length + escapedSize - written, b.length + escapedSize);
  };
  /** A number: its literal text as sent, so two numbers one double cannot tell apart stay apart. */
  const number = (): boolean => {
    const first = at;
    if (b[at] === 0x2d) at++;
    if (b[at] === 0x30) at++;
    else if (!digits()) return false;
    if (b[at] === 0x2e && (at++, !digits())) return false;
    if (b[at] === 0x65 || b[at] === 0x45) {
      at++;
      if (b[at] === 0x2b || b[at] === 0x2d) at++;
      if (!digits()) return false;
    }
    return read(first, at);
  };
  const word = (text: string): boolean => {
    for (let i = 0; i < text.length; i++) if (b[at + i] !== text.charCodeAt(i)) return false;
    at += text.length;
    return read(at - text.length, at);
  };
  const scalar = (): boolean => (b[at] === 0x22 ? string() : word('true') || word('false') || word('null') || number());
  /** A member's key and colon. The key is kept for the next value, which is this member's. */
  const key = (): boolean => {
    skipSpace();
    if (b[at] !== 0x22 || !string()) return false;
    skipSpace();
    keyStart[json.count] = textStart;
    keyEnd[json.count] = textEnd;
    return b[at++] === 0x3a;
  };

  // The containers open around `at`, innermost last.
  const open = slice(5);
  let depth = 0;
  for (;;) {
    if (json.count === slots) return undefined;
    skipSpace();
    let value: number;
    const c = b[at];
    if (c === 0x5b || c === 0x7b) {
      at++;
      value = add(c === 0x5b ? ARRAY : OBJECT, NONE);
      skipSpace();
      // `]` and `}` are two code points after `[` and `{`.
      if (b[at] === c + 2) at++;
      else {
        if (c === 0x7b && !key()) return undefined;
        open[depth++] = value;
        continue;
      }
    } else if (scalar()) value = add(textStart, textEnd);
    else return undefined;
    // Add the value to its container, and close every container that ends after it.
    for (;;) {
      if (depth === 0) {
        skipSpace();
        return at === b.length ? json : undefined;
      }
      const container = open[depth - 1]!;
      previous[value] = end[container]!;
      end[container] = value;
      const isObject = start[container] === OBJECT;
      skipSpace();
      const next = b[at++];
      if (next === 0x2c) {
        if (isObject && !key()) return undefined;
        break;
      }
      if (next !== (isObject ? 0x7d : 0x5d)) return undefined;
      depth--;
      value = container;
    }
  }
}

/**
 * Writes parsed JSON without whitespace, object members sorted by their key's canonical text
 * (a total order of decoded keys), stably: a key given twice keeps its values in their order.
 * The text is never longer than the input, so it is written into one buffer of that size.
 */
function writeJson(json: ParsedJson): Buffer {
  const { input, escaped, count, start, end, previous, keyStart, keyEnd } = json;
  const size = input.length;
  const out = Buffer.allocUnsafe(size);
  let n = 0;
  const copy = (from: number, to: number) => {
    const source = from < size ? input : escaped!;
    const offset = from < size ? 0 : size;
    for (let i = from - offset; i < to - offset; i++) out[n++] = source[i]!;
  };
  const byteAt = (address: number) => (address < size ? input[address]! : escaped![address - size]!);
  const byKey = (x: number, y: number) => {
    const xEnd = keyEnd[x]!;
    const yEnd = keyEnd[y]!;
    let i = keyStart[x]!;
    let j = keyStart[y]!;
    for (; i < xEnd && j < yEnd; i++, j++) {
      const difference = byteAt(i) - byteAt(j);
      if (difference !== 0) return difference;
    }
    return xEnd - i - (yEnd - j);
  };
  // A task is a value to write, or a mark: the end of an array or an object, or a comma. Each
  // value, comma and end is pushed once: three per value is room enough.
  const CLOSE_ARRAY = -1;
  const CLOSE_OBJECT = -2;
  const COMMA = -3;
  const tasks = new Int32Array(3 * count);
  let pending = 0;
  const push = (task: number) => void (tasks[pending++] = task);
  push(0);
  while (pending > 0) {
    const task = tasks[--pending]!;
    if (task === CLOSE_ARRAY) out[n++] = 0x5d;
    else if (task === CLOSE_OBJECT) out[n++] = 0x7d;
    else if (task === COMMA) out[n++] = 0x2c;
    else {
      if (keyEnd[task]! > 0) {
        copy(keyStart[task]!, keyEnd[task]!);
        out[n++] = 0x3a;
      }
      if (start[task]! >= 0) {
        copy(start[task]!, end[task]!);
        continue;
      }
      const isObject = start[task] === OBJECT;
      out[n++] = isObject ? 0x7b : 0x5b;
      push(isObject ? CLOSE_OBJECT : CLOSE_ARRAY);
      // The stack pops in the reverse of its pushes: the values go on last first.
      if (isObject) {
        const members: number[] = [];
        for (let value = end[task]!; value !== NONE; value = previous[value]!) members.push(value);
        // Reversed into document order first, so that sorting (stable) keeps duplicates in it.
        members.reverse().sort(byKey);
        for (let i = members.length - 1; i >= 0; i--) {
          push(members[i]!);
          if (i > 0) push(COMMA);
        }
      } else {
        for (let value = end[task]!; value !== NONE; value = previous[value]!) {
          push(value);
          if (previous[value] !== NONE) push(COMMA);
        }
      }
    }
  }
  return out.subarray(0, n);
}
