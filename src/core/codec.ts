/**
 * Values in and out of the store.
 *
 * - `encodeValue` / `decodeValue`: results of `idempotent(fn)` as UTF-8 JSON, with tags for
 *   what JSON cannot hold (Date, BigInt, Uint8Array/Buffer, Map, Set, undefined, -0, NaN,
 *   ±Infinity). A value that cannot come back as it went in is an `UnserializableResultError`
 *   naming where it is, never a silent `{}`.
 * - `canonicalJson`: the same tagged tree serialised per RFC 8785 (JCS): object keys sorted by
 *   UTF-16 code units, no whitespace, JavaScript's number formatting (the one JCS prescribes);
 *   Map entries and Set members sorted too, so that equal values give equal text.
 */
import { UnserializableResultError } from './errors.js';

const TAG = '$oncely';

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

function tagged(kind: string, v?: Json): Json {
  return v === undefined ? { [TAG]: kind } : { [TAG]: kind, v };
}

function describe(value: unknown): string {
  if (typeof value === 'function') return 'a function';
  if (typeof value === 'symbol') return 'a symbol';
  const ctor = (value as object).constructor?.name;
  return ctor ? `an instance of ${ctor}` : 'an object with a custom prototype';
}

/** Assigns an own property, also for the key `__proto__` (plain assignment would set the prototype). */
function setOwn(target: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
}

function isPlainObject(value: object): value is Record<string, unknown> {
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

function toTagged(value: unknown, path: string, ancestors: Set<object>, canonical: boolean): Json {
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return value;
    case 'number':
      // RFC 8785 writes -0 as 0, so a fingerprint does not tell them apart; results keep it.
      if (Number.isFinite(value)) return Object.is(value, -0) && !canonical ? tagged('number', '-0') : value;
      return tagged('number', String(value));
    case 'bigint':
      return tagged('bigint', value.toString());
    case 'undefined':
      return tagged('undefined');
    case 'function':
    case 'symbol':
      throw new UnserializableResultError(path, describe(value));
  }
  if (value === null) return null;
  const object = value as object;
  if (ancestors.has(object)) throw new UnserializableResultError(path, 'a circular reference');
  ancestors.add(object);
  try {
    return objectToTagged(object, path, ancestors, canonical);
  } finally {
    ancestors.delete(object);
  }
}

/** RFC 8785 serialisation of a JSON tree: keys sorted by UTF-16 code units, no whitespace. */
function stringifyCanonical(value: Json): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(stringifyCanonical).join(',')}]`;
  const keys = Object.keys(value).sort();
  return `{${keys.map((key) => `${JSON.stringify(key)}:${stringifyCanonical(value[key] as Json)}`).join(',')}}`;
}

function sortedByText(items: Json[]): Json[] {
  return items
    .map((item) => [stringifyCanonical(item), item] as const)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([, item]) => item);
}

function objectToTagged(object: object, path: string, ancestors: Set<object>, canonical: boolean): Json {
  if (Array.isArray(object)) {
    const out: Json[] = [];
    for (let i = 0; i < object.length; i++) out.push(toTagged(object[i], `${path}[${i}]`, ancestors, canonical));
    return out;
  }
  if (object instanceof Date) {
    const time = object.getTime();
    return tagged('date', Number.isNaN(time) ? null : time);
  }
  if (Buffer.isBuffer(object)) return tagged('buffer', object.toString('base64'));
  if (object instanceof Uint8Array && object.constructor === Uint8Array) {
    return tagged('bytes', Buffer.from(object.buffer, object.byteOffset, object.byteLength).toString('base64'));
  }
  if (object instanceof Map) {
    const entries: Json[] = [];
    let i = 0;
    for (const [k, v] of object) {
      entries.push([toTagged(k, `${path}<key ${i}>`, ancestors, canonical), toTagged(v, `${path}<value ${i}>`, ancestors, canonical)]);
      i++;
    }
    return tagged('map', canonical ? sortedByText(entries) : entries);
  }
  if (object instanceof Set) {
    const members: Json[] = [];
    let i = 0;
    for (const member of object) members.push(toTagged(member, `${path}<member ${i++}>`, ancestors, canonical));
    return tagged('set', canonical ? sortedByText(members) : members);
  }
  if (!isPlainObject(object)) throw new UnserializableResultError(path, describe(object));
  const out: { [key: string]: Json } = {};
  for (const key of Object.keys(object)) {
    setOwn(out, key, toTagged(object[key], `${path}.${key}`, ancestors, canonical));
  }
  // A user object that happens to have our tag key is wrapped so it cannot be mistaken for a tag.
  return TAG in out ? tagged('object', out) : out;
}

function fromTagged(value: Json): unknown {
  if (value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map(fromTagged);
  const kind = value[TAG];
  if (kind === undefined) {
    const out: Record<string, unknown> = {};
    for (const key of Object.keys(value)) setOwn(out, key, fromTagged(value[key] as Json));
    return out;
  }
  const v = value.v as Json;
  switch (kind) {
    case 'undefined':
      return undefined;
    case 'number':
      return Number(v);
    case 'bigint':
      return BigInt(v as string);
    case 'date':
      return new Date(v === null ? Number.NaN : (v as number));
    case 'buffer':
      return Buffer.from(v as string, 'base64');
    case 'bytes':
      return new Uint8Array(Buffer.from(v as string, 'base64'));
    case 'map':
      return new Map((v as Json[][]).map(([k, val]) => [fromTagged(k as Json), fromTagged(val as Json)]));
    case 'set':
      return new Set((v as Json[]).map(fromTagged));
    case 'object': {
      const out: Record<string, unknown> = {};
      for (const [key, inner] of Object.entries(v as Record<string, Json>)) setOwn(out, key, fromTagged(inner));
      return out;
    }
    default:
      throw new TypeError(`Unknown stored value tag ${JSON.stringify(kind)}`);
  }
}

/** The JSON-safe tagged form of `value` (throws `UnserializableResultError`). */
export function toJsonSafe(value: unknown): Json {
  return toTagged(value, '$', new Set(), false);
}

/** Inverse of `toJsonSafe`. */
export function fromJsonSafe(value: Json): unknown {
  return fromTagged(value);
}

export function encodeValue(value: unknown): Uint8Array {
  return Buffer.from(JSON.stringify(toJsonSafe(value)), 'utf8');
}

export function decodeValue(bytes: Uint8Array): unknown {
  return fromTagged(JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8')) as Json);
}

/** Canonical text of a value: equal values (whatever their key order) give equal text. */
export function canonicalJson(value: unknown): string {
  return stringifyCanonical(toTagged(value, '$', new Set(), true));
}

export type { Json };
