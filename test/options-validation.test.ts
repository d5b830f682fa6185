/**
 * Every option of `idempotency()` (each adapter) and `idempotent()` is checked when the
 * middleware or wrapper is made: a mistake is an `InvalidOptionError` naming the option, at
 * start-up, never a failure at the first request.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import Fastify from 'fastify';
import { InvalidOptionError } from '../src/core/errors.js';
import { idempotent } from '../src/core/idempotent.js';
import { idempotency as expressIdempotency } from '../src/http/express/index.js';
import oncelyFastify from '../src/http/fastify/index.js';
import { withIdempotency } from '../src/http/fetch/index.js';
import { idempotency as honoIdempotency } from '../src/http/hono/index.js';
import { MemoryStore } from '../src/stores/memory/index.js';

const store = new MemoryStore();

/** Bad option values, each with the option it must be blamed on. */
const BAD_HTTP_OPTIONS: [string, Record<string, unknown>][] = [
  ['store', {}],
  ['store', { store: 'postgres://localhost/db' }],
  ['store', { store: { claim: () => undefined } }],
  ['onThrow', { store, onThrow: 'relase' }],
  ['storeIf', { store, storeIf: 'yes' }],
  ['storeIf', { store, storeIf: [200, 201] }],
  ['scope', { store, scope: 'tenant-1' }],
  ['fingerprint', { store, fingerprint: true }],
  ['observer', { store, observer: {} }],
  ['required', { store, required: 'true' }],
  ['failOpen', { store, failOpen: 1 }],
  ['methods', { store, methods: 'POST' }],
  ['fingerprintHeaders', { store, fingerprintHeaders: [1] }],
  ['namespace', { store, namespace: '' }],
  ['maxKeyLength', { store, maxKeyLength: 0 }],
  ['maxBodyBytes', { store, maxBodyBytes: 1.5 }],
  ['leaseMs', { store, leaseMs: -1 }],
  ['wait', { store, wait: -5 }],
  ['requried', { store, requried: true }],
];

const makers: Record<string, (options: Record<string, unknown>) => unknown> = {
  express: (options) => expressIdempotency(options as never),
  hono: (options) => honoIdempotency(options as never),
  fetch: (options) => withIdempotency(() => new Response(), options as never),
  fastify: async (options) => {
    const app = Fastify();
    try {
      await app.register(oncelyFastify, options as never);
      await app.ready();
    } finally {
      await app.close();
    }
  },
};

for (const [adapter, make] of Object.entries(makers)) {
  describe(`idempotency() options: ${adapter}`, () => {
    for (const [option, options] of BAD_HTTP_OPTIONS) {
      it(`refuses a bad \`${option}\` (${JSON.stringify(options[option]) ?? 'missing'}) naming it`, async () => {
        await assert.rejects(async () => make(options), (error: unknown) => {
          assert.ok(error instanceof InvalidOptionError, String(error));
          assert.equal(error.option, option);
          assert.match(error.message, new RegExp(`\`${option}\``));
          return true;
        });
      });
    }
    it('accepts good options', async () => {
      await make({ store, onThrow: 'store500', storeIf: (status: number) => status < 500, wait: 0, required: true });
    });
  });
}

describe('idempotent() options', () => {
  const fn = async function charge(id: string) {
    return id;
  };
  const key = (id: string) => id;
  for (const [option, options] of [
    ['store', { key }],
    ['store', { store: 'sqlite://a.db', key }],
    ['key', { store }],
    ['key', { store, key: 'order-1' }],
    ['onError', { store, key, onError: 'stor' }],
    ['onInProgress', { store, key, onInProgress: 'wait' }],
    ['onInProgress', { store, key, onInProgress: { waitMs: 0 } }],
    ['heartbeat', { store, key, heartbeat: 'no' }],
    ['scope', { store, key, scope: 'tenant' }],
    ['fingerprint', { store, key, fingerprint: 1 }],
    ['retentionMs', { store, key, retentionMs: Infinity }],
    ['onErorr', { store, key, onErorr: 'store' }],
  ] as [string, Record<string, unknown>][]) {
    it(`refuses a bad \`${option}\` naming it`, () => {
      assert.throws(() => idempotent(fn, options as never), (error: unknown) => error instanceof InvalidOptionError && error.option === option);
    });
  }
  it('refuses a first argument that is not a function', () => {
    assert.throws(() => idempotent('charge' as never, { store, key }), InvalidOptionError);
  });
});
