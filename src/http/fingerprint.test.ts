import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { canonicalJson } from '../core/codec.js';
import { bodyDigest, canonicalJsonBytes } from './fingerprint.js';

const JSON_TYPE = 'application/json';
const bytes = (body: string | Buffer, contentType: string | undefined = JSON_TYPE) => bodyDigest({ kind: 'bytes', bytes: Buffer.from(body), contentType });
const canonical = (body: string | Buffer) => canonicalJsonBytes(Buffer.from(body))?.toString();

/** A small seeded generator, so that fast-check can shrink and replay a formatting choice. */
function chooser(seed: number) {
  let state = seed >>> 0 || 1;
  return (n: number) => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) % n;
  };
}

const SPACE = [' ', '\t', '\n', '\r'];
const SHORT_ESCAPES: Record<string, string> = { '"': '\\"', '\\': '\\\\', '/': '\\/', '\b': '\\b', '\f': '\\f', '\n': '\\n', '\r': '\\r', '\t': '\\t' };

/** A string as JSON text, each code unit written raw or escaped (`\uXXXX` in either case, or its short escape) at random. */
function writeString(value: string, choose: (n: number) => number): string {
  let out = '"';
  for (const unit of value.split('')) {
    const code = unit.charCodeAt(0);
    const mustEscape = code < 0x20 || unit === '"' || unit === '\\' || (code >= 0xd800 && code <= 0xdfff);
    const choice = choose(4);
    if (!mustEscape && choice < 2) out += unit;
    else if (choice === 2 && SHORT_ESCAPES[unit]) out += SHORT_ESCAPES[unit];
    else {
      const hex = code.toString(16).padStart(4, '0');
      out += `\\u${choose(2) ? hex : hex.toUpperCase()}`;
    }
  }
  return `${out}"`;
}

/** `value` as JSON text with random whitespace, member order and string escapes: what another client could send for it. */
function writeJson(value: unknown, choose: (n: number) => number): string {
  const space = () => Array.from({ length: choose(3) }, () => SPACE[choose(SPACE.length)]).join('');
  if (typeof value === 'string') return writeString(value, choose);
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  if (Array.isArray(value)) return `[${space()}${value.map((item) => `${writeJson(item, choose)}${space()}`).join(`,${space()}`)}]`;
  const keys = Object.keys(value);
  for (let i = keys.length - 1; i > 0; i--) {
    const j = choose(i + 1);
    [keys[i], keys[j]] = [keys[j]!, keys[i]!];
  }
  const members = keys.map((key) => `${space()}${writeString(key, choose)}${space()}:${space()}${writeJson((value as Record<string, unknown>)[key], choose)}${space()}`);
  return `{${members.join(',')}${keys.length === 0 ? space() : ''}}`;
}

const jsonValue = fc.jsonValue({ maxDepth: 4, stringUnit: 'binary' });
const seed = fc.integer();

describe('bodyDigest', () => {
  it('gives one digest for one JSON value however it is written: whitespace, member order, string escapes (property)', () => {
    fc.assert(
      fc.property(jsonValue, seed, seed, (value, a, b) => {
        const one = writeJson(value, chooser(a));
        const other = writeJson(value, chooser(b));
        assert.equal(bytes(one), bytes(other), `${one} vs ${other}`);
        assert.equal(bytes(` ${one}\n`), bytes(one));
      }),
      { numRuns: 1000 },
    );
  });

  it('gives two JSON values two digests unless they are equal (property)', () => {
    fc.assert(
      fc.property(jsonValue, jsonValue, seed, (a, b, s) => {
        const same = canonicalJson(a) === canonicalJson(b);
        assert.equal(bytes(writeJson(a, chooser(s))) === bytes(writeJson(b, chooser(s + 1))), same);
      }),
      { numRuns: 1000 },
    );
  });

  it('tells apart any two different number literals, and any two different strings (property)', () => {
    const literal = fc.stringMatching(/^-?(0|[1-9][0-9]{0,25})(\.[0-9]{1,25})?([eE][+-]?[0-9]{1,3})?$/);
    fc.assert(
      fc.property(literal, literal, (a, b) => {
        fc.pre(a !== b);
        assert.notEqual(bytes(`{"amount":${a}}`), bytes(`{"amount":${b}}`));
        assert.notEqual(bytes(`[${a}]`), bytes(`[${b}]`));
      }),
      { numRuns: 1000 },
    );
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), fc.string({ unit: 'binary' }), seed, (a, b, s) => {
        fc.pre(a !== b);
        assert.notEqual(bytes(`{"a":${writeString(a, chooser(s))}}`), bytes(`{"a":${writeString(b, chooser(s))}}`));
        assert.notEqual(bytes(`{${writeString(a, chooser(s))}:0}`), bytes(`{${writeString(b, chooser(s))}:0}`));
      }),
      { numRuns: 1000 },
    );
  });

  it('accepts as JSON exactly what JSON.parse accepts; anything else counts by its bytes (property)', () => {
    const pieces = ['{', '}', '[', ']', ',', ':', ' ', '\n', '"', '\\', 'a', 'u', '0', '1', '-', '+', '.', 'e', 'E', 'true', 'fals', 'null', '\\u00', '"k"', '\u00e9', '\u2028', '\t', '\u0001', '\ufeff'];
    fc.assert(
      fc.property(fc.array(fc.constantFrom(...pieces), { maxLength: 12 }), (parts) => {
        const text = parts.join('');
        let valid = true;
        try {
          JSON.parse(text);
        } catch {
          valid = false;
        }
        assert.equal(canonicalJsonBytes(Buffer.from(text)) !== undefined, valid, text);
      }),
      { numRuns: 5000 },
    );
  });

  it('keeps apart the bodies that collided: big and precise numbers, invalid UTF-8, one body under two content types', () => {
    assert.notEqual(bytes('{"amount":18446744073709551616}'), bytes('{"amount":18446744073709551617}'));
    assert.notEqual(bytes('0.1'), bytes('0.10000000000000000001'));
    assert.notEqual(bytes(Buffer.from('{"a":"\xff"}', 'latin1')), bytes(Buffer.from('{"a":"\xfe"}', 'latin1')));
    assert.notEqual(bytes('{"a":1}', JSON_TYPE), bytes('{"a":1}', 'text/plain'));
    assert.notEqual(bytes('{"a":1}', JSON_TYPE), bodyDigest({ kind: 'bytes', bytes: Buffer.from('{"a":1}'), contentType: undefined }));
  });

  it('writes numbers as sent, strings by their decoded value, members sorted, no whitespace', () => {
    assert.equal(canonical(' { "b" : [ 1.0 , -0 , 1E5 , "\\u0041\\/" ] , "a" : { } } '), '{"a":{},"b":[1.0,-0,1E5,"A/"]}');
    assert.equal(canonical('"\\ud800"'), '"\\ud800"', 'a lone surrogate stays itself, not U+FFFD');
    assert.equal(canonical('"\\u00e9\\n\\u001F"'), '"é\\n\\u001f"');
    assert.notEqual(bytes('[1.0]'), bytes('[1]'), 'a literal is not normalised: a retry sends the same bytes');
    assert.notEqual(bytes('[-0]'), bytes('[0]'));
    assert.notEqual(bytes('["\\ud800"]'), bytes('["\\ufffd"]'));
  });

  it('keeps every value of a key given twice, in order', () => {
    assert.equal(canonical('{"a":1,"b":0,"a":2}'), '{"a":1,"a":2,"b":0}');
    assert.notEqual(bytes('{"a":1,"a":2}'), bytes('{"a":2,"a":1}'), 'JSON.parse keeps the last: these differ');
    assert.notEqual(bytes('{"a":1,"a":2}'), bytes('{"a":2}'), 'a strict reader refuses one and not the other');
    assert.equal(bytes('{"a":1,"b":0,"a":2}'), bytes('{"b":0, "a":1, "a":2}'));
    assert.equal(bytes('{"A":1,"\\u0041":2}'), bytes('{"\\u0041":1,"A":2}'), 'equal decoded keys are one key');
  });

  it('counts invalid JSON, invalid UTF-8, a byte order mark and other media types by their bytes', () => {
    assert.notEqual(bytes('{"a":1'), bytes('{"a": 1'));
    assert.notEqual(bytes('{"a":1}', 'text/plain'), bytes('{ "a":1 }', 'text/plain'), 'whitespace is data to a text reader');
    assert.notEqual(bytes('\ufeff{"a":1}'), bytes('{"a":1}'));
    assert.equal(canonical('\ufeff{}'), undefined);
    assert.equal(canonical(Buffer.from([0x22, 0xed, 0xa0, 0x80, 0x22])), undefined, 'an encoded surrogate is not UTF-8');
    assert.notEqual(bytes('{"a":1}', 'application/json; charset=latin1'), bytes('{ "a":1 }', 'application/json; charset=latin1'));
    assert.equal(bytes('{"a":1}', 'application/problem+json'), bytes('{ "a":1 }', 'application/problem+json'));
    assert.equal(bytes('{"a":1}', 'application/json; charset=utf-8'), bytes('{ "a":1 }', 'application/json; charset=utf-8'));
  });

  it('takes the media type lower-cased and its parameters unquoted, keeping case where it can matter', () => {
    assert.equal(bytes('{}', 'Application/JSON; Charset="UTF-8"'), bytes('{}', 'application/json;charset=utf-8'));
    assert.notEqual(bytes('--x', 'multipart/form-data; boundary=AbC'), bytes('--x', 'multipart/form-data; boundary=abc'));
    assert.notEqual(bytes('x', 'text/plain junk'), bytes('x', 'text/plain'), 'a header that does not parse counts as sent');
    assert.equal(bytes('x', 'text/plain junk'), bytes('x', 'text/plain junk'));
  });

  it('fingerprints a parsed body by the value the handler gets, with its content type; a parsed Buffer by its bytes', () => {
    const parsed = (value: unknown, contentType?: string) => bodyDigest({ kind: 'parsed', value, contentType });
    assert.equal(parsed({ a: 1, b: [2] }, JSON_TYPE), parsed({ b: [2], a: 1 }, JSON_TYPE));
    assert.notEqual(parsed({ a: 1 }, JSON_TYPE), parsed({ a: 2 }, JSON_TYPE));
    assert.notEqual(parsed({ a: 1 }, JSON_TYPE), parsed({ a: 1 }, 'application/x-www-form-urlencoded'));
    assert.equal(parsed(Buffer.from('{"a":1}'), 'text/plain'), bytes('{"a":1}', 'text/plain'));
    assert.equal(bodyDigest({ kind: 'none' }), '');
    assert.equal(bodyDigest({ kind: 'too-large' }), '');
    assert.match(bytes(''), /^[0-9a-f]{64}$/);
  });

  it('digests bodies nested 20,000 levels deep, as bytes and parsed, and tells two of them apart', () => {
    const depth = 20_000;
    const arrays = `${'['.repeat(depth)}1${']'.repeat(depth)}`;
    const objects = `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`;
    assert.match(bytes(arrays), /^[0-9a-f]{64}$/);
    assert.notEqual(bytes(arrays), bytes(arrays.replace('1', '2')));
    assert.equal(bytes(objects), bytes(objects.replaceAll(':', ': ')));
    assert.equal(canonical(objects), objects);
    const value = JSON.parse(objects) as unknown;
    assert.match(bodyDigest({ kind: 'parsed', value, contentType: JSON_TYPE }), /^[0-9a-f]{64}$/);
  });
});
