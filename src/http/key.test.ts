import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { serializeItem } from 'structured-headers';
import { parseIdempotencyKey } from './key.js';

const MAX = 255;
const printable = fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((code) => String.fromCharCode(code)), minLength: 1, maxLength: MAX });
const bare = fc.string({ unit: fc.constantFrom(...[...Array(0x7f - 0x21).keys()].map((i) => String.fromCharCode(0x21 + i)).filter((c) => c !== '"' && c !== ',')), minLength: 1, maxLength: MAX });

describe('parseIdempotencyKey', () => {
  it('reads every sf-string (RFC 8941) back to its value (property)', () => {
    fc.assert(
      fc.property(printable, (key) => {
        assert.deepEqual(parseIdempotencyKey([serializeItem([key, new Map()])], MAX), { status: 'key', key });
      }),
    );
  });

  it('reads every bare visible-ASCII key as itself (property)', () => {
    fc.assert(
      fc.property(bare, (key) => {
        assert.deepEqual(parseIdempotencyKey([key], MAX), { status: 'key', key });
      }),
    );
  });

  it('refuses any value with a character outside printable ASCII, quoted or not (property)', () => {
    const outside = fc.oneof(fc.integer({ min: 0, max: 0x1f }), fc.integer({ min: 0x7f, max: 0xffff })).map((code) => String.fromCharCode(code));
    fc.assert(
      fc.property(bare, outside, fc.nat(), (key, bad, at) => {
        const position = at % (key.length + 1);
        const value = key.slice(0, position) + bad + key.slice(position);
        // A value that only gains leading or trailing whitespace is trimmed, as HTTP does.
        fc.pre(value.trim() !== key);
        assert.equal(parseIdempotencyKey([value], MAX).status, 'invalid');
        assert.equal(parseIdempotencyKey([`"${value}"`], MAX).status, 'invalid');
      }),
    );
  });

  it('refuses keys longer than the limit, counting the key without its quotes (property)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 600 }), (length) => {
        const key = 'k'.repeat(length);
        const expected = length <= MAX ? 'key' : 'invalid';
        assert.equal(parseIdempotencyKey([key], MAX).status, expected);
        assert.equal(parseIdempotencyKey([`"${key}"`], MAX).status, expected);
      }),
    );
  });

  it('counts the limit after unescaping: a key of escaped quotes or backslashes up to the limit is accepted', () => {
    for (const char of ['"', '\\']) {
      for (const length of [150, MAX]) {
        assert.deepEqual(parseIdempotencyKey([serializeItem([char.repeat(length), new Map()])], MAX), { status: 'key', key: char.repeat(length) });
      }
      assert.equal(parseIdempotencyKey([serializeItem([char.repeat(MAX + 1), new Map()])], MAX).status, 'invalid');
    }
  });

  it('tells absent from empty, and refuses several header lines', () => {
    assert.deepEqual(parseIdempotencyKey([], MAX), { status: 'absent' });
    assert.equal(parseIdempotencyKey([''], MAX).status, 'invalid');
    assert.equal(parseIdempotencyKey(['  '], MAX).status, 'invalid');
    assert.equal(parseIdempotencyKey(['""'], MAX).status, 'invalid');
    assert.equal(parseIdempotencyKey(['a', 'b'], MAX).status, 'invalid');
    assert.equal(parseIdempotencyKey(['a, b'], MAX).status, 'invalid', 'two lines joined by a proxy or by fetch Headers');
  });

  it('accepts the forms clients send', () => {
    assert.deepEqual(parseIdempotencyKey(['"8e03978e-40d5-43e8-bc93-6894a57f9324"'], MAX), { status: 'key', key: '8e03978e-40d5-43e8-bc93-6894a57f9324' });
    assert.deepEqual(parseIdempotencyKey(['8e03978e-40d5-43e8-bc93-6894a57f9324'], MAX), { status: 'key', key: '8e03978e-40d5-43e8-bc93-6894a57f9324' });
    assert.deepEqual(parseIdempotencyKey(['"a key, with \\"spaces\\""'], MAX), { status: 'key', key: 'a key, with "spaces"' });
    assert.deepEqual(parseIdempotencyKey(['  padded  '], MAX), { status: 'key', key: 'padded' });
  });

  it('refuses structured values that are not plain strings', () => {
    assert.equal(parseIdempotencyKey(['"abc";p=1'], MAX).status, 'invalid');
    assert.equal(parseIdempotencyKey(['"unterminated'], MAX).status, 'invalid');
  });
});
