/**
 * Guarantee 6 for cookie-session apps, on every adapter: with no `scope` option, two users who
 * send only cookies (no Authorization) must never share a record. oncely refuses such a keyed
 * request with 500 `scope-required` (nothing runs) until the app says whose key it is.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MemoryStore } from '../src/stores/memory/index.js';
import { adapters, type AnyOptions } from './support/adapters.js';

/** The cookie header from whichever request object the adapter passes to `scope`. */
function cookieOf(request: unknown): string {
  const r = request as { headers?: Headers | Record<string, string>; req?: { header(name: string): string | undefined } };
  if (r.req) return r.req.header('cookie') ?? '';
  if (r.headers instanceof Headers) return r.headers.get('cookie') ?? '';
  return String(r.headers?.cookie ?? '');
}

for (const [name, start] of Object.entries(adapters)) {
  describe(`cookie sessions: ${name}`, () => {
    it('without `scope`, a keyed request with cookies and no Authorization is refused, and nothing runs', async () => {
      let runs = 0;
      const server = await start({ store: new MemoryStore() }, () => (runs++, { status: 201, body: { for: 'alice' } }));
      try {
        for (const sid of ['alice', 'bob']) {
          const response = await server.send({ headers: { cookie: `sid=${sid}` } });
          assert.equal(response.status, 500);
          assert.equal(((await response.json()) as { type: string }).type, 'https://oncely.dev/problems/scope-required');
        }
        assert.equal(runs, 0);
        assert.equal((await server.send({ key: null, headers: { cookie: 'sid=alice' } })).status, 201, 'a request without a key is not protected, so not refused');
      } finally {
        await server.close();
      }
    });

    it('with `scope` from the session, Alice and Bob each run once and each get their own replay', async () => {
      let runs = 0;
      const options = { store: new MemoryStore(), scope: cookieOf } as AnyOptions;
      const server = await start(options, () => ({ status: 201, body: { run: ++runs } }));
      try {
        const alice = await (await server.send({ headers: { cookie: 'sid=alice' } })).json();
        const bob = await (await server.send({ headers: { cookie: 'sid=bob' } })).json();
        assert.notDeepEqual(alice, bob);
        const aliceRetry = await server.send({ headers: { cookie: 'sid=alice' } });
        assert.equal(aliceRetry.headers.get('idempotent-replayed'), 'true');
        assert.deepEqual(await aliceRetry.json(), alice);
        assert.equal(runs, 2);
      } finally {
        await server.close();
      }
    });

    it('with an Authorization header, cookies do not matter: the credential scopes the key', async () => {
      let runs = 0;
      const server = await start({ store: new MemoryStore() }, () => ({ status: 201, body: { run: ++runs } }));
      try {
        assert.equal((await server.send({ headers: { authorization: 'Bearer a', cookie: 'lb=1' } })).status, 201);
        assert.equal((await server.send({ headers: { authorization: 'Bearer a', cookie: 'lb=2' } })).headers.get('idempotent-replayed'), 'true');
        assert.equal((await server.send({ headers: { authorization: 'Bearer b' } })).headers.get('idempotent-replayed'), 'false');
        assert.equal(runs, 2);
      } finally {
        await server.close();
      }
    });
  });
}
