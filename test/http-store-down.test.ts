/**
 * DESIGN §3.9 on every adapter: when the store cannot be reached, nothing runs and the client
 * gets 503 `store-unavailable` (fail closed); with `failOpen` the handler runs unprotected, the
 * observer hears about it, and `executionContext()` still works in the handler. The store is a
 * real RedisStore whose server is unreachable.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { executionContext } from '../src/core/execution-context.js';
import type { IdempotencyEvent } from '../src/http/protocol.js';
import { RedisStore } from '../src/stores/redis/index.js';
import { adapters } from './support/adapters.js';

const deadClient = new Redis('redis://127.0.0.1:1', { lazyConnect: true });
deadClient.on('error', () => undefined);
const store = new RedisStore({ client: deadClient, timeoutMs: 300 });
after(() => deadClient.disconnect());

for (const [name, start] of Object.entries(adapters)) {
  describe(`store unreachable: ${name}`, () => {
    it('answers 503 store-unavailable with Retry-After and runs nothing', async () => {
      let runs = 0;
      const events: IdempotencyEvent[] = [];
      const server = await start({ store, observer: (event) => events.push(event) }, () => (runs++, { status: 201, body: {} }));
      try {
        const response = await server.send();
        assert.equal(response.status, 503);
        assert.equal(response.headers.get('retry-after'), '1');
        assert.equal(((await response.json()) as { type: string }).type, 'https://oncely.dev/problems/store-unavailable');
        assert.equal(runs, 0);
        assert.deepEqual(events.map((event) => event.type), ['store_error']);
      } finally {
        await server.close();
      }
    });

    it('with failOpen runs the handler unprotected, in a working executionContext(), and tells the observer', async () => {
      let runs = 0;
      const events: IdempotencyEvent[] = [];
      const server = await start({ store, failOpen: true, observer: (event) => events.push(event) }, () => {
        runs++;
        const context = executionContext();
        return { status: 201, body: { downstreamKey: context.downstreamKey, protected: context.protected, aborted: context.signal.aborted, key: context.key } };
      });
      try {
        const first = await server.send();
        assert.equal(first.status, 201);
        assert.equal(first.headers.get('idempotent-replayed'), null, 'not protected, so not marked');
        const firstBody = (await first.json()) as { downstreamKey: string; protected: boolean; aborted: boolean; key: string };
        assert.deepEqual({ ...firstBody, downstreamKey: typeof firstBody.downstreamKey }, { downstreamKey: 'string', protected: false, aborted: false, key: 'k-1' });
        const again = (await (await server.send()).json()) as { downstreamKey: string };
        assert.equal(again.downstreamKey, firstBody.downstreamKey, 'a retry of the same key passes on the same downstreamKey');
        const other = (await (await server.send({ key: 'k-2' })).json()) as { downstreamKey: string };
        assert.notEqual(other.downstreamKey, firstBody.downstreamKey);
        assert.equal(runs, 3);
        assert.deepEqual(events.map((event) => event.type === 'store_error' && event.failOpen), [true, true, true]);
      } finally {
        await server.close();
      }
    });
  });
}
