/**
 * Inferring executions from what responses name: Location, JSON ids, else body bytes.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { bodyIds, countExecutions, describeBodyDifference, resourceLabel } from './resources.js';
import type { Reply } from './types.js';

function reply(status: number, body: unknown, headers: Record<string, string> = {}): Reply {
  return { status, headers, body: Buffer.from(typeof body === 'string' ? body : JSON.stringify(body)), at: 0, headMs: 1, ms: 1 };
}

describe('bodyIds', () => {
  it('reads id, *_id and *Id fields at the top level, strings and numbers only', () => {
    assert.deepEqual(bodyIds(Buffer.from('{"id":"ord_1","customer_id":7,"chargeId":"ch_1","amount":5,"valid":true,"identity":"x"}')), ['chargeId=ch_1', 'customer_id=7', 'id=ord_1']);
  });

  it('looks one level down only when the top level has none', () => {
    assert.deepEqual(bodyIds(Buffer.from('{"data":{"id":3,"owner":{"id":9}},"meta":{"page":1}}')), ['data.id=3']);
    assert.deepEqual(bodyIds(Buffer.from('{"id":1,"order":{"id":3}}')), ['id=1']);
  });

  it('ignores correlation fields, arrays, non-JSON and empty bodies', () => {
    assert.deepEqual(bodyIds(Buffer.from('{"request_id":"r1","traceId":"t1","correlation_id":"c"}')), []);
    assert.deepEqual(bodyIds(Buffer.from('[{"id":1}]')), []);
    assert.deepEqual(bodyIds(Buffer.from('created order 1')), []);
    assert.deepEqual(bodyIds(Buffer.alloc(0)), []);
  });
});

describe('countExecutions', () => {
  it('counts distinct resources among 2xx replies only', () => {
    const executions = countExecutions([reply(201, { id: 1 }), reply(201, { id: 1 }), reply(201, { id: 2 }), reply(409, { id: 3 })]);
    assert.equal(executions.count, 2);
    assert.deepEqual(executions.labels, ['id=1', 'id=2']);
    assert.equal(executions.from, 'ids');
  });

  it('links a replay that lost its Location to the first through the body id', () => {
    assert.equal(countExecutions([reply(201, { id: 1 }, { location: '/o/1' }), reply(201, { id: 1 })]).count, 1);
  });

  it('links through the Location when the body carries a per-response field', () => {
    assert.equal(countExecutions([reply(201, { id: 1, request_id: 'a' }, { location: '/o/1' }), reply(201, { id: 1, request_id: 'b' }, { location: '/o/1' })]).count, 1);
  });

  it('keeps identical bodies apart when they name two resources', () => {
    assert.equal(countExecutions([reply(201, { ok: true }, { location: '/o/1' }), reply(201, { ok: true }, { location: '/o/2' })]).count, 2);
  });

  it('links an unnamed reply to a named one with the same bytes', () => {
    assert.equal(countExecutions([reply(200, 'ok', { location: '/o/1' }), reply(200, 'ok')]).count, 1);
  });

  it('falls back to distinct bodies when nothing names a resource', () => {
    const executions = countExecutions([reply(200, 'done at 1'), reply(200, 'done at 1'), reply(200, 'done at 2')]);
    assert.equal(executions.count, 2);
    assert.equal(executions.from, 'bodies');
    assert.deepEqual(executions.labels, ['body of 9 bytes', 'body of 9 bytes']);
  });

  it('counts nothing without a 2xx', () => {
    assert.deepEqual(countExecutions([reply(400, {}), reply(500, {})]), { count: 0, labels: [], from: 'none' });
  });
});

it('resourceLabel prefers the Location, then the body id', () => {
  assert.equal(resourceLabel(reply(201, { id: 1 }, { location: '/o/1' })), '/o/1');
  assert.equal(resourceLabel(reply(201, { id: 1, user_id: 2 })), 'id=1');
  assert.equal(resourceLabel(reply(201, { order_id: 1, user_id: 2 })), 'order_id=1 user_id=2');
  assert.equal(resourceLabel(reply(201, 'plain')), undefined);
});

it('describeBodyDifference names the first differing byte', () => {
  assert.equal(describeBodyDifference(Buffer.from('abc'), Buffer.from('abc')), 'bodies are identical');
  assert.equal(describeBodyDifference(Buffer.from('{"n":1}'), Buffer.from('{"n":2}')), 'bodies differ from byte 5 (7 vs 7 bytes: "1}" vs "2}")');
});
