/**
 * Model-based property test of the record state machine (DESIGN §1): random sequences of
 * claim / complete / release / extend / get / delete on a few ids, with current and stale
 * tokens, checked step by step against a model, on every store against its real server.
 * Leases are long here; lapse and takeover are covered by the contract suite.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import fc from 'fast-check';
import { sha256Hex } from '../src/core/identity.js';
import type { IdempotencyStore } from '../src/core/types.js';
import { randomId } from '../src/testing/index.js';
import { closeStoresUnderTest, storesUnderTest } from './support/stores.js';

type ModelRecord = { state: 'in_progress'; fp: number; token: string } | { state: 'completed'; fp: number; outcome: number };
interface Model {
  records: (ModelRecord | undefined)[];
  tokens: string[][]; // every token issued per id, newest last
}
interface Real {
  store: IdempotencyStore;
  ids: string[];
}

const FINGERPRINTS = [sha256Hex('fp0'), sha256Hex('fp1')];
const LEASE = 60_000;
const RETENTION = 3_600_000;

/** Picks the newest token of an id (`pick` 0) or an older / unknown one. */
function tokenFor(model: Model, id: number, pick: number): string {
  const tokens = model.tokens[id]!;
  return tokens[tokens.length - 1 - pick] ?? `never-issued-${pick}`;
}

function holds(model: Model, id: number, token: string): boolean {
  const record = model.records[id];
  return record?.state === 'in_progress' && record.token === token;
}

class Claim implements fc.AsyncCommand<Model, Real> {
  constructor(readonly id: number, readonly fp: number) {}
  check = () => true;
  async run(model: Model, real: Real) {
    const claim = await real.store.claim({ id: real.ids[this.id]!, fingerprint: FINGERPRINTS[this.fp]!, leaseMs: LEASE });
    const current = model.records[this.id];
    if (!current) {
      assert.equal(claim.status, 'acquired');
      assert.ok(claim.status === 'acquired');
      model.records[this.id] = { state: 'in_progress', fp: this.fp, token: claim.token };
      model.tokens[this.id]!.push(claim.token);
      return;
    }
    const expected = current.fp !== this.fp ? 'mismatch' : current.state;
    assert.equal(claim.status, expected);
    if (claim.status === 'completed' && current.state === 'completed') assert.deepEqual([...claim.record.outcome], [current.outcome]);
  }
  toString = () => `claim(${this.id}, fp${this.fp})`;
}

class Complete implements fc.AsyncCommand<Model, Real> {
  constructor(readonly id: number, readonly pick: number, readonly outcome: number) {}
  check = () => true;
  async run(model: Model, real: Real) {
    const token = tokenFor(model, this.id, this.pick);
    const result = await real.store.complete(real.ids[this.id]!, token, new Uint8Array([this.outcome]), RETENTION);
    const ok = holds(model, this.id, token);
    assert.equal(result, ok ? 'ok' : 'lost');
    if (ok) model.records[this.id] = { state: 'completed', fp: model.records[this.id]!.fp, outcome: this.outcome };
  }
  toString = () => `complete(${this.id}, token-${this.pick}, ${this.outcome})`;
}

class Release implements fc.AsyncCommand<Model, Real> {
  constructor(readonly id: number, readonly pick: number) {}
  check = () => true;
  async run(model: Model, real: Real) {
    const token = tokenFor(model, this.id, this.pick);
    const ok = holds(model, this.id, token);
    assert.equal(await real.store.release(real.ids[this.id]!, token), ok ? 'ok' : 'lost');
    if (ok) model.records[this.id] = undefined;
  }
  toString = () => `release(${this.id}, token-${this.pick})`;
}

class Extend implements fc.AsyncCommand<Model, Real> {
  constructor(readonly id: number, readonly pick: number) {}
  check = () => true;
  async run(model: Model, real: Real) {
    const token = tokenFor(model, this.id, this.pick);
    assert.equal(await real.store.extend(real.ids[this.id]!, token, LEASE), holds(model, this.id, token) ? 'ok' : 'lost');
  }
  toString = () => `extend(${this.id}, token-${this.pick})`;
}

class Get implements fc.AsyncCommand<Model, Real> {
  constructor(readonly id: number) {}
  check = () => true;
  async run(model: Model, real: Real) {
    const record = await real.store.get(real.ids[this.id]!);
    const expected = model.records[this.id];
    assert.equal(record?.state, expected?.state);
    if (expected) assert.equal(record?.fingerprint, FINGERPRINTS[expected.fp]);
  }
  toString = () => `get(${this.id})`;
}

class Delete implements fc.AsyncCommand<Model, Real> {
  constructor(readonly id: number) {}
  check = () => true;
  async run(model: Model, real: Real) {
    assert.equal(await real.store.delete(real.ids[this.id]!), model.records[this.id] !== undefined);
    model.records[this.id] = undefined;
  }
  toString = () => `delete(${this.id})`;
}

const IDS = 3;
const id = fc.nat(IDS - 1);
const pick = fc.nat(2);
const commands = fc.commands(
  [
    fc.tuple(id, fc.nat(1)).map(([i, fp]) => new Claim(i, fp)),
    fc.tuple(id, pick, fc.nat(255)).map(([i, p, o]) => new Complete(i, p, o)),
    fc.tuple(id, pick).map(([i, p]) => new Release(i, p)),
    fc.tuple(id, pick).map(([i, p]) => new Extend(i, p)),
    id.map((i) => new Get(i)),
    id.map((i) => new Delete(i)),
  ],
  { maxCommands: 40 },
);

after(closeStoresUnderTest);

for (const { name, make, skip } of await storesUnderTest()) {
  describe(`state machine property: ${name}`, { skip }, () => {
    it('matches the model for random command sequences', async () => {
      const store = await make();
      try {
        await fc.assert(
          fc.asyncProperty(commands, async (cmds) => {
            const model: Model = { records: Array(IDS).fill(undefined), tokens: Array.from({ length: IDS }, () => []) };
            await fc.asyncModelRun(() => ({ model, real: { store, ids: Array.from({ length: IDS }, randomId) } }), cmds);
          }),
          { numRuns: name === 'memory' ? 500 : 150 },
        );
      } finally {
        await store.close();
      }
    });
  });
}
