/**
 * The command line of `oncely check`: validation with clear messages, bodies and the derived
 * "other body".
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { deriveOtherBody, defaultBody, defaultContentType } from './bodies.js';
import { CliError } from '../cli-error.js';
import { parseConfig, parseHeader, type RawOptions } from './config.js';

const defaults: RawOptions = { method: 'POST', header: [], concurrency: '10', timeout: '10000', headerName: 'Idempotency-Key', keyStyle: 'quoted' };
const parse = (options: Partial<RawOptions> = {}, url = 'http://localhost:3000/orders', files: Record<string, string> = {}) =>
  parseConfig(url, { ...defaults, ...options }, (path) => {
    if (!(path in files)) throw Object.assign(new Error(`ENOENT: ${path}`), { code: 'ENOENT' });
    return Buffer.from(files[path]!);
  });
const refuses = (options: Partial<RawOptions>, message: RegExp, url?: string) => assert.throws(() => parse(options, url), (error: unknown) => error instanceof CliError && message.test(error.message));

describe('parseConfig', () => {
  it('applies the defaults: POST, a fresh JSON body per probe, 10 duplicates', () => {
    const config = parse({ method: 'post' });
    assert.equal(config.method, 'POST');
    assert.equal(config.data, undefined);
    assert.equal(config.contentType, 'application/json');
    assert.equal(config.concurrency, 10);
    assert.equal(config.timeoutMs, 10_000);
    assert.equal(config.hasBody, true);
  });

  it('reads --data @file and keeps a Content-Type given with -H', () => {
    const config = parse({ data: '@body.txt', header: ['Content-Type: application/x-www-form-urlencoded', 'Authorization: Bearer t'] }, undefined, { 'body.txt': 'a=1&b=2' });
    assert.equal(config.data?.toString(), 'a=1&b=2');
    assert.equal(config.contentType, 'application/x-www-form-urlencoded');
    assert.deepEqual(config.headers, [['Authorization', 'Bearer t']]);
  });

  it('refuses what it cannot use, saying what to change', () => {
    refuses({}, /not a URL/, '/orders');
    refuses({}, /must start with http/, 'localhost:3000/orders');
    refuses({}, /must start with http/, 'ftp://example.com/');
    refuses({ concurrency: 'ten' }, /--concurrency must be a whole number from 2 to 1000 \(got "ten"\)/);
    refuses({ concurrency: '0' }, /--concurrency/);
    refuses({ concurrency: '2.5' }, /--concurrency/);
    refuses({ timeout: '-1' }, /--timeout/);
    refuses({ data: '@missing.json' }, /cannot read the --data file "missing.json": ENOENT/);
    refuses({ header: ['Authorization Bearer x'] }, /"Name: value"/);
    refuses({ method: 'GET', data: '{}' }, /GET requests carry no body/);
    refuses({ method: 'PO ST' }, /--method/);
    refuses({ data: '{"a":1}', otherData: '{"a":1}' }, /must differ/);
  });

  it('sends no body and no Content-Type for GET', () => {
    const config = parse({ method: 'get' });
    assert.equal(config.hasBody, false);
    assert.equal(config.contentType, undefined);
  });
});

describe('parseHeader', () => {
  it('splits on the first colon and trims', () => {
    assert.deepEqual(parseHeader('X-Api-Key:  a:b ', 'Idempotency-Key'), ['X-Api-Key', 'a:b']);
  });

  it('refuses the key header itself, computed headers and unsendable values', () => {
    assert.throws(() => parseHeader('idempotency-key: abc', 'Idempotency-Key'), /sends its own keys/);
    assert.throws(() => parseHeader('Content-Length: 3', 'Idempotency-Key'), /computed from the body/);
    assert.throws(() => parseHeader('X-Name: \u4e16', 'Idempotency-Key'), /cannot carry/);
    assert.throws(() => parseHeader('Bad Name: x', 'Idempotency-Key'), /not a header field name/);
  });
});

describe('bodies', () => {
  it('makes a new default JSON body each time', () => {
    assert.notDeepEqual(defaultBody(), defaultBody());
    assert.equal(defaultContentType(defaultBody()), 'application/json');
    assert.equal(defaultContentType(Buffer.from('a=1')), 'text/plain; charset=utf-8');
  });

  it('derives another JSON body by changing the first number, else string, else boolean, else adding a field', () => {
    const derive = (json: unknown) => {
      const other = deriveOtherBody(Buffer.from(JSON.stringify(json)), 'application/json');
      return { value: JSON.parse(other.body.toString()) as unknown, description: other.description };
    };
    assert.deepEqual(derive({ email: 'a@b', amountCents: 4999 }), { value: { email: 'a@b', amountCents: 5000 }, description: 'changed "amountCents" from 4999 to 5000' });
    assert.deepEqual(derive({ oncely_check: 'u1' }).value, { oncely_check: 'u1-other' });
    assert.deepEqual(derive({ live: true }).value, { live: false });
    assert.deepEqual(derive({ nested: { a: 1 } }).value, { nested: { a: 1 }, oncely_check_other: true });
    assert.deepEqual(derive([1, 2]).value, [1, 2, 'oncely_check_other']);
  });

  it('appends to forms and to any other body', () => {
    assert.equal(deriveOtherBody(Buffer.from('a=1'), 'application/x-www-form-urlencoded').body.toString(), 'a=1&oncely_check_other=1');
    assert.equal(deriveOtherBody(Buffer.from('hello'), 'text/plain').body.toString(), 'hello\noncely_check_other');
    assert.equal(deriveOtherBody(Buffer.alloc(0), undefined).body.toString(), 'oncely_check_other');
  });
});
