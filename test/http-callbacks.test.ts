/**
 * Every user callback that throws or returns a bad value becomes a defined outcome for that one
 * request, on every adapter, and never crashes the process: `scope` / `fingerprint` → 500
 * `callback-failed` with nothing claimed or run; `storeIf` → the default policy decides (the
 * handler ran: its response is kept, so a retry replays it); `observer` → ignored.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { IdempotencyEvent } from '../src/http/protocol.js';
import { MemoryStore } from '../src/stores/memory/index.js';
import { adapters, type AnyOptions } from './support/adapters.js';

const problemType = async (response: Response) => ((await response.json()) as { type: string }).type;

for (const [name, start] of Object.entries(adapters)) {
  describe(`callbacks that fail: ${name}`, () => {
    for (const [callback, options] of [
      ['scope', { scope: () => { throw new TypeError('req.user is undefined'); } }],
      ['scope', { scope: () => 42 as unknown as string }],
      ['scope', { scope: () => 'x'.repeat(2000) }],
      ['fingerprint', { fingerprint: async () => { throw new Error('no body'); } }],
    ] as const) {
      it(`${callback} (${String(options[callback as keyof typeof options]).slice(0, 40)}): 500 callback-failed, nothing claimed or run`, async () => {
        let runs = 0;
        const store = new MemoryStore();
        const events: IdempotencyEvent[] = [];
        const server = await start({ store, ...(options as Partial<AnyOptions>), observer: (event) => events.push(event) } as AnyOptions, () => (runs++, { status: 201, body: {} }));
        try {
          const response = await server.send();
          assert.equal(response.status, 500);
          assert.equal(await problemType(response), 'https://oncely.dev/problems/callback-failed');
          assert.equal(runs, 0);
          assert.equal((await store.stats()).inProgress, 0, 'nothing claimed');
          assert.deepEqual(events.map((event) => event.type === 'callback_error' && event.callback), [callback]);
        } finally {
          await server.close();
        }
      });
    }

    it('storeIf that throws: the response is sent, stored by the default policy, replayed on retry', async () => {
      let runs = 0;
      const events: IdempotencyEvent[] = [];
      const storeIf = () => { throw new TypeError('status.startsWith is not a function'); };
      const server = await start({ store: new MemoryStore(), storeIf, observer: (event) => events.push(event) } as AnyOptions, () => (runs++, { status: 201, body: { id: runs } }));
      try {
        const first = await server.send();
        assert.equal(first.status, 201);
        assert.deepEqual(await first.json(), { id: 1 });
        const retry = await server.send();
        assert.equal(retry.status, 201);
        assert.equal(retry.headers.get('idempotent-replayed'), 'true');
        assert.deepEqual(await retry.json(), { id: 1 });
        assert.equal(runs, 1);
        assert.ok(events.some((event) => event.type === 'callback_error' && event.callback === 'storeIf'));
      } finally {
        await server.close();
      }
    });

    it('observer that throws changes nothing', async () => {
      let runs = 0;
      const server = await start({ store: new MemoryStore(), observer: () => { throw new Error('metrics down'); } }, () => (runs++, { status: 201, body: {} }));
      try {
        assert.equal((await server.send()).status, 201);
        assert.equal((await server.send()).headers.get('idempotent-replayed'), 'true');
        assert.equal(runs, 1);
      } finally {
        await server.close();
      }
    });
  });
}
