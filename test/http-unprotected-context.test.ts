/**
 * Handlers behind any adapter may call `executionContext()` whether or not the request is
 * protected: a request without a key on a route where the key is optional runs in an
 * unprotected context (random downstreamKey, a signal that never aborts), never a 500.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { executionContext, findExecutionContext } from '../src/core/execution-context.js';
import { MemoryStore } from '../src/stores/memory/index.js';
import { adapters } from './support/adapters.js';

describe('findExecutionContext()', () => {
  it('is undefined outside an execution, where executionContext() throws NO_EXECUTION_CONTEXT', () => {
    assert.equal(findExecutionContext(), undefined);
    assert.throws(() => executionContext(), { code: 'NO_EXECUTION_CONTEXT' });
  });
});

for (const [name, start] of Object.entries(adapters)) {
  describe(`executionContext() without a key: ${name}`, () => {
    it('works in the handler of an optional route, unprotected, a new downstreamKey each request', async () => {
      const server = await start({ store: new MemoryStore() }, () => {
        const context = executionContext();
        return { status: 201, body: { downstreamKey: context.downstreamKey, protected: context.protected, aborted: context.signal.aborted, key: context.key } };
      });
      try {
        const first = await server.send({ key: null });
        assert.equal(first.status, 201);
        const body = (await first.json()) as { downstreamKey: string; protected: boolean; aborted: boolean; key: string };
        assert.deepEqual({ protected: body.protected, aborted: body.aborted, key: body.key }, { protected: false, aborted: false, key: '' });
        assert.match(body.downstreamKey, /^[0-9a-f-]{36}$/);
        const second = (await (await server.send({ key: null })).json()) as { downstreamKey: string };
        assert.notEqual(second.downstreamKey, body.downstreamKey, 'two keyless requests are two operations');
        const keyed = (await (await server.send()).json()) as { protected: boolean };
        assert.equal(keyed.protected, true);
      } finally {
        await server.close();
      }
    });
  });
}
