import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { MemoryStore } from '../stores/memory/index.js';
import { canonicalJson, decodeValue, encodeValue } from './codec.js';
import { KeyReuseError, UnserializableResultError } from './errors.js';
import { idempotent } from './idempotent.js';

/** Values the codec promises to round-trip. */
const storable = fc.letrec((tie) => ({
  leaf: fc.oneof(
    fc.constant(null),
    fc.constant(undefined),
    fc.boolean(),
    fc.string(),
    fc.double(), // includes -0, NaN and ±Infinity
    fc.bigInt(),
    // Valid dates only: node 20's deepStrictEqual calls two Invalid Dates unequal (NaN !== NaN);
    // the Invalid Date has its own test below.
    fc.date({ noInvalidDate: true }),
    fc.uint8Array().map((bytes) => bytes),
    fc.uint8Array().map((bytes) => Buffer.from(bytes)),
  ),
  value: fc.oneof(
    { depthSize: 'small' },
    tie('leaf'),
    fc.array(tie('value'), { maxLength: 4 }),
    fc.dictionary(fc.string(), tie('value'), { maxKeys: 4, noNullPrototype: true }),
    fc.array(fc.tuple(tie('leaf'), tie('value')), { maxLength: 3 }).map((entries) => new Map(entries)),
    fc.array(tie('leaf'), { maxLength: 3 }).map((members) => new Set(members)),
  ),
})).value;

/** Same object with its keys inserted in reverse order, recursively. */
function reverseKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(reverseKeys);
  if (value && typeof value === 'object' && Object.getPrototypeOf(value) === Object.prototype) {
    const out: Record<string, unknown> = {};
    for (const key of Object.keys(value).reverse()) {
      Object.defineProperty(out, key, { value: reverseKeys((value as Record<string, unknown>)[key]), enumerable: true, writable: true, configurable: true });
    }
    return out;
  }
  return value;
}

describe('codec', () => {
  it('round-trips every storable value exactly (property)', () => {
    fc.assert(
      fc.property(storable, (value) => {
        assert.deepStrictEqual(decodeValue(encodeValue(value)), value);
      }),
      { numRuns: 500 },
    );
  });

  it('keeps an Invalid Date an Invalid Date', () => {
    const [back] = decodeValue(encodeValue([new Date(Number.NaN)])) as [Date];
    assert.ok(back instanceof Date);
    assert.ok(Number.isNaN(back.getTime()));
  });

  it('keeps Buffer and Uint8Array apart, and -0, NaN, Infinity as they were', () => {
    const value = { buffer: Buffer.from([1, 2]), bytes: new Uint8Array([3]), negZero: -0, nan: Number.NaN, inf: -Infinity };
    const back = decodeValue(encodeValue(value)) as typeof value;
    assert.ok(Buffer.isBuffer(back.buffer));
    assert.ok(!Buffer.isBuffer(back.bytes) && back.bytes instanceof Uint8Array);
    assert.ok(Object.is(back.negZero, -0));
    assert.ok(Number.isNaN(back.nan));
    assert.equal(back.inf, -Infinity);
  });

  it('does not confuse a user object that has the tag key with a tag', () => {
    const value = { $oncely: 'date', v: 0 };
    assert.deepStrictEqual(decodeValue(encodeValue(value)), value);
  });

  it('keeps a __proto__ key as data without touching prototypes', () => {
    const value = JSON.parse('{"__proto__": {"polluted": true}}') as object;
    const back = decodeValue(encodeValue(value)) as Record<string, unknown>;
    assert.deepStrictEqual(Object.keys(back), ['__proto__']);
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
    assert.equal(Object.getPrototypeOf(back), Object.prototype);
  });

  it('refuses what it cannot restore, naming where it is', () => {
    class Money {
      amount = 1;
    }
    const cases: [unknown, RegExp][] = [
      [{ fn: () => 1 }, /a function at \$\.fn\b/],
      [{ list: [1, new Money()] }, /an instance of Money at \$\.list\[1\]/],
      [{ error: new Error('x') }, /an instance of Error at \$\.error\b/],
      [Symbol('s'), /a symbol/],
      [new Int16Array(2), /Int16Array/],
    ];
    for (const [value, message] of cases) {
      assert.throws(() => encodeValue(value), (error: unknown) => error instanceof UnserializableResultError && message.test(error.message));
    }
    const circular: Record<string, unknown> = {};
    circular.self = circular;
    assert.throws(() => encodeValue(circular), /a circular reference at \$\.self\b/);
  });

  it('allows a value shared twice that is not circular', () => {
    const shared = { a: 1 };
    assert.deepStrictEqual(decodeValue(encodeValue([shared, shared])), [{ a: 1 }, { a: 1 }]);
  });
});

describe('canonicalJson', () => {
  it('does not depend on key order (property)', () => {
    fc.assert(
      fc.property(storable, (value) => {
        assert.equal(canonicalJson(reverseKeys(value)), canonicalJson(value));
      }),
      { numRuns: 500 },
    );
  });

  it('parses back to the same JSON for plain JSON values (property)', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (value) => {
        assert.deepStrictEqual(JSON.parse(canonicalJson(value)), JSON.parse(JSON.stringify(value)));
      }),
      { numRuns: 500 },
    );
  });

  it('tells different values apart (property)', () => {
    fc.assert(
      fc.property(fc.jsonValue(), fc.jsonValue(), (a, b) => {
        const same = JSON.stringify(JSON.parse(canonicalJson(a))) === JSON.stringify(JSON.parse(canonicalJson(b)));
        assert.equal(canonicalJson(a) === canonicalJson(b), same);
      }),
      { numRuns: 300 },
    );
  });

  it('sorts keys by UTF-16 code units as RFC 8785 does, also integer-like keys', () => {
    assert.equal(canonicalJson({ b: 1, a: [true, null], '10': 0, '9': 0, é: 1, z: 'x' }), '{"10":0,"9":0,"a":[true,null],"b":1,"z":"x","é":1}');
  });

  it('writes -0 as 0, as RFC 8785 does', () => {
    assert.equal(canonicalJson({ a: -0 }), '{"a":0}');
  });

  it('orders Map entries and Set members, so insertion order does not matter', () => {
    assert.equal(canonicalJson(new Map([['b', 1], ['a', 2]])), canonicalJson(new Map([['a', 2], ['b', 1]])));
    assert.equal(canonicalJson(new Set([2, 1])), canonicalJson(new Set([1, 2])));
    assert.notEqual(canonicalJson(new Set([1])), canonicalJson([1]));
  });

  it('writes tags, Maps, Sets and a wrapped tag-like object exactly as before (stored fingerprints stay valid)', () => {
    const value = {
      b: new Map<unknown, unknown>([[2, 'x'], ['1', new Set([3n, 'y'])]]),
      a: [undefined, Number.NaN, -Infinity, -0, 1e21, new Date(0), new Date(Number.NaN), Buffer.from('hi'), new Uint8Array([1])],
      $oncely: 'date',
      v: { '': null, é: true },
    };
    assert.equal(
      canonicalJson(value),
      '{"$oncely":"object","v":{"$oncely":"date","a":[{"$oncely":"undefined"},{"$oncely":"number","v":"NaN"},{"$oncely":"number","v":"-Infinity"},0,1e+21,' +
        '{"$oncely":"date","v":0},{"$oncely":"date","v":null},{"$oncely":"buffer","v":"aGk="},{"$oncely":"bytes","v":"AQ=="}],' +
        '"b":{"$oncely":"map","v":[["1",{"$oncely":"set","v":["y",{"$oncely":"bigint","v":"3"}]}],[2,"x"]]},"v":{"":null,"é":true}}}',
    );
  });

  it('writes values nested 20,000 levels deep (arrays, objects, Maps, Sets) without overflowing the stack', () => {
    const depth = 20_000;
    let array: unknown = [];
    let object: unknown = {};
    let map: unknown = 0;
    let set: unknown = 0;
    for (let i = 0; i < depth; i++) {
      array = [array];
      object = { a: object };
      map = new Map([['k', map]]);
      set = new Set([set]);
    }
    assert.equal(canonicalJson(array), `${'['.repeat(depth + 1)}${']'.repeat(depth + 1)}`);
    assert.equal(canonicalJson(object), `${'{"a":'.repeat(depth)}{}${'}'.repeat(depth)}`);
    assert.equal(canonicalJson(map), `${'{"$oncely":"map","v":[["k",'.repeat(depth)}0${']]}'.repeat(depth)}`);
    assert.equal(canonicalJson(set), `${'{"$oncely":"set","v":['.repeat(depth)}0${']}'.repeat(depth)}`);
  });

  it('refuses what it cannot write, naming where it is, also through Maps, Sets and cycles', () => {
    const looped: Record<string, unknown> = { list: [1] };
    (looped.list as unknown[]).push(looped);
    const cases: [unknown, RegExp][] = [
      [{ fn: () => 1 }, /a function at \$\.fn\b/],
      [new Map([[1, { s: Symbol('s') }]]), /a symbol at \$<value 0>\.s\b/],
      [new Set([new Int16Array(1)]), /Int16Array at \$<member 0>/],
      [looped, /a circular reference at \$\.list\[1\]/],
    ];
    for (const [value, message] of cases) {
      assert.throws(() => canonicalJson(value), (error: unknown) => error instanceof UnserializableResultError && message.test(error.message));
    }
    const shared = { a: 1 };
    assert.equal(canonicalJson([shared, shared]), '[{"a":1},{"a":1}]', 'a value seen twice is not a cycle');
  });

  it('fingerprints idempotent() arguments nested 20,000 levels deep', async () => {
    let deep: unknown = 'order-1';
    for (let i = 0; i < 20_000; i++) deep = { next: deep };
    let runs = 0;
    const charge = idempotent(async (_order: unknown) => ++runs, { store: new MemoryStore(), key: () => 'k', namespace: 'deep' });
    assert.equal(await charge(deep), 1);
    assert.equal(await charge(deep), 1, 'the retry replays');
    await assert.rejects(charge({ next: 'other' }), KeyReuseError);
  });
});
