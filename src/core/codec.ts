/**
 * Values in and out of the store.
 *
 * - `encodeValue` / `decodeValue`: results of `idempotent(fn)` as UTF-8 JSON, with tags for
 *   what JSON cannot hold (Date, BigInt, Uint8Array/Buffer, Map, Set, undefined, -0, NaN,
 *   ±Infinity). A value that cannot come back as it went in is an `UnserializableResultError`
 *   naming where it is, never a silent `{}`.
 * - `canonicalJson`: the same tagged tree serialised per RFC 8785 (JCS): object keys sorted by
 *   UTF-16 code units, no whitespace, JavaScript's number formatting (the one JCS prescribes);
 *   Map entries and Set members sorted too, so that equal values give equal text. Written
 *   with an explicit stack, so a value nested to any depth has a canonical text.
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

/** What a value is to the codec: a JSON leaf (tags included), a container to walk, or refused. */
type Shape =
  | { kind: 'leaf'; json: Json }
  | { kind: 'refused'; what: string }
  | { kind: 'array'; array: unknown[] }
  | { kind: 'object'; object: Record<string, unknown> }
  | { kind: 'map'; map: Map<unknown, unknown> }
  | { kind: 'set'; set: Set<unknown> };

function shapeOf(value: unknown, canonical: boolean): Shape {
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return { kind: 'leaf', json: value };
    case 'number':
      // RFC 8785 writes -0 as 0, so a fingerprint does not tell them apart; results keep it.
      if (Number.isFinite(value)) return { kind: 'leaf', json: Object.is(value, -0) && !canonical ? tagged('number', '-0') : value };
      return { kind: 'leaf', json: tagged('number', String(value)) };
    case 'bigint':
      return { kind: 'leaf', json: tagged('bigint', value.toString()) };
    case 'undefined':
      return { kind: 'leaf', json: tagged('undefined') };
    case 'function':
    case 'symbol':
      return { kind: 'refused', what: describe(value) };
  }
  if (value === null) return { kind: 'leaf', json: null };
  if (Array.isArray(value)) return { kind: 'array', array: value };
  if (value instanceof Date) {
    const time = value.getTime();
    return { kind: 'leaf', json: tagged('date', Number.isNaN(time) ? null : time) };
  }
  if (Buffer.isBuffer(value)) return { kind: 'leaf', json: tagged('buffer', value.toString('base64')) };
  if (value instanceof Uint8Array && value.constructor === Uint8Array) {
    return { kind: 'leaf', json: tagged('bytes', Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('base64')) };
  }
  if (value instanceof Map) return { kind: 'map', map: value };
  if (value instanceof Set) return { kind: 'set', set: value };
  if (!isPlainObject(value as object)) return { kind: 'refused', what: describe(value) };
  return { kind: 'object', object: value as Record<string, unknown> };
}

function toTagged(value: unknown, path: string, ancestors: Set<object>): Json {
  const shape = shapeOf(value, false);
  if (shape.kind === 'leaf') return shape.json;
  if (shape.kind === 'refused') throw new UnserializableResultError(path, shape.what);
  const object = value as object;
  if (ancestors.has(object)) throw new UnserializableResultError(path, 'a circular reference');
  ancestors.add(object);
  try {
    return containerToTagged(shape, path, ancestors);
  } finally {
    ancestors.delete(object);
  }
}

function containerToTagged(shape: Exclude<Shape, { kind: 'leaf' | 'refused' }>, path: string, ancestors: Set<object>): Json {
  switch (shape.kind) {
    case 'array': {
      const out: Json[] = [];
      for (let i = 0; i < shape.array.length; i++) out.push(toTagged(shape.array[i], `${path}[${i}]`, ancestors));
      return out;
    }
    case 'map': {
      const entries: Json[] = [];
      let i = 0;
      for (const [k, v] of shape.map) {
        entries.push([toTagged(k, `${path}<key ${i}>`, ancestors), toTagged(v, `${path}<value ${i}>`, ancestors)]);
        i++;
      }
      return tagged('map', entries);
    }
    case 'set': {
      const members: Json[] = [];
      let i = 0;
      for (const member of shape.set) members.push(toTagged(member, `${path}<member ${i++}>`, ancestors));
      return tagged('set', members);
    }
    case 'object': {
      const out: { [key: string]: Json } = {};
      for (const key of Object.keys(shape.object)) setOwn(out, key, toTagged(shape.object[key], `${path}.${key}`, ancestors));
      // A user object that happens to have our tag key is wrapped so it cannot be mistaken for a tag.
      return TAG in out ? tagged('object', out) : out;
    }
  }
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
  return toTagged(value, '$', new Set());
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

/** Where a value sits, as steps from the root; made into text (`$.a[2]`) only for an error. */
interface Path {
  parent: Path | undefined;
  step: string;
}

function pathText(path: Path): string {
  const steps: string[] = [];
  for (let at: Path | undefined = path; at; at = at.parent) steps.push(at.step);
  return steps.reverse().join('');
}

/**
 * One step of `canonicalJson`'s walk: text to write, a value to write, a container whose
 * children are written (no longer an ancestor), the start and end of a Map entry's or Set
 * member's own text (collected to be sorted), or the sorted Map or Set itself.
 */
type Task =
  | string
  | { value: unknown; path: Path }
  | { leave: object }
  | { open: true }
  | { close: string[] }
  | { tag: 'map' | 'set'; items: string[] };

/**
 * Canonical text of a value: equal values (whatever their key order) give equal text.
 * Iterative, with an explicit stack, so any depth is written (a call stack would overflow at
 * a few thousand levels of nesting).
 */
export function canonicalJson(value: unknown): string {
  // Text goes to the innermost open buffer: the result, or a Map entry's or Set member's own text.
  const buffers = [''];
  const ancestors = new Set<object>();
  const tasks: Task[] = [child(value, undefined, '$')];
  for (let task = tasks.pop(); task !== undefined; task = tasks.pop()) {
    if (typeof task === 'string') buffers[buffers.length - 1] += task;
    else if ('value' in task) pushSteps(tasks, task.value, task.path, ancestors);
    else if ('leave' in task) ancestors.delete(task.leave);
    else if ('open' in task) buffers.push('');
    else if ('close' in task) task.close.push(buffers.pop()!);
    else buffers[buffers.length - 1] += `{"${TAG}":"${task.tag}","v":[${task.items.sort().join(',')}]}`;
  }
  return buffers[0]!;
}

/** A JSON primitive is written at once; anything else is walked when its task comes up. */
function child(value: unknown, parent: Path | undefined, step: string): Task {
  const primitive = typeof value === 'string' || typeof value === 'boolean' || value === null || (typeof value === 'number' && Number.isFinite(value));
  // JSON.stringify writes -0 as 0, as RFC 8785 does.
  return primitive ? JSON.stringify(value) : { value, path: { parent, step } };
}

/** Pushes the tasks that write `value`, last first, so that the stack pops them in order. */
function pushSteps(tasks: Task[], value: unknown, path: Path, ancestors: Set<object>): void {
  const shape = shapeOf(value, true);
  // A leaf here is a tag of primitives, whose keys ($oncely, v) are already in order.
  if (shape.kind === 'leaf') return void tasks.push(JSON.stringify(shape.json));
  if (shape.kind === 'refused') throw new UnserializableResultError(pathText(path), shape.what);
  const object = value as object;
  if (ancestors.has(object)) throw new UnserializableResultError(pathText(path), 'a circular reference');
  ancestors.add(object);
  tasks.push({ leave: object });
  switch (shape.kind) {
    case 'array': {
      tasks.push(']');
      for (let i = shape.array.length - 1; i >= 0; i--) {
        tasks.push(child(shape.array[i], path, `[${i}]`));
        if (i > 0) tasks.push(',');
      }
      tasks.push('[');
      return;
    }
    case 'object': {
      const keys = Object.keys(shape.object).sort();
      // A user object that happens to have our tag key is wrapped so it cannot be mistaken for a tag.
      const wrapped = keys.includes(TAG);
      tasks.push(wrapped ? '}}' : '}');
      for (let i = keys.length - 1; i >= 0; i--) {
        const key = keys[i]!;
        tasks.push(child(shape.object[key], path, `.${key}`), `${i > 0 ? ',' : ''}${JSON.stringify(key)}:`);
      }
      tasks.push(wrapped ? `{"${TAG}":"object","v":{` : '{');
      return;
    }
    case 'map': {
      // Entries and members are ordered by their own canonical text: insertion order does not matter.
      const items: string[] = [];
      const entries = [...shape.map];
      tasks.push({ tag: 'map', items });
      for (let i = entries.length - 1; i >= 0; i--) {
        const [k, v] = entries[i]!;
        tasks.push({ close: items }, ']', child(v, path, `<value ${i}>`), ',', child(k, path, `<key ${i}>`), '[', { open: true });
      }
      return;
    }
    case 'set': {
      const items: string[] = [];
      const members = [...shape.set];
      tasks.push({ tag: 'set', items });
      for (let i = members.length - 1; i >= 0; i--) tasks.push({ close: items }, child(members[i], path, `<member ${i}>`), { open: true });
      return;
    }
  }
}

export type { Json };
