/**
 * The two ends agree on keys: every key `oncely/client` accepts reaches the server's header
 * parser as the same key, after passing through Web `Headers` as `fetch` sends it (property).
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import fc from 'fast-check';
import { checkKey, headerValue, MAX_KEY_LENGTH } from '../src/client/key.js';
import { parseIdempotencyKey } from '../src/http/key.js';

/** Any printable-ASCII text, `"` and `\` included, so the client's refusals are exercised too. */
const printable = fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((code) => String.fromCharCode(code)), minLength: 1, maxLength: MAX_KEY_LENGTH + 5 });

it('every key the client accepts is read back by the server as the same key (property)', () => {
  fc.assert(
    fc.property(printable, (candidate) => {
      let key: string;
      try {
        key = checkKey(candidate, 'key');
      } catch {
        // Refused by the client: only for what the sf-string form would need to escape, or length.
        assert.ok(/["\\]/.test(candidate) || candidate.length > MAX_KEY_LENGTH, `refused ${JSON.stringify(candidate)}`);
        return;
      }
      const sent = new Headers({ 'idempotency-key': headerValue(key, true) }).get('idempotency-key')!;
      assert.deepEqual(parseIdempotencyKey([sent], MAX_KEY_LENGTH), { status: 'key', key });
    }),
    { numRuns: 2000 },
  );
});
