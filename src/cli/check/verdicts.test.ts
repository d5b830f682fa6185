/**
 * Verdicts from canned observations: what each probe concludes from what a server answered.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Reply } from './types.js';
import { judgeConcurrent, judgeInFlight, judgeMalformedKeys, judgeMissingKey, judgeOtherBody, judgeReplay, statusHistogram } from './verdicts.js';

interface Canned {
  headers?: Record<string, string>;
  at?: number;
  headMs?: number;
  error?: string;
}

/** A response: JSON when `body` is an object, bytes as given when a string. */
function reply(status: number, body: unknown = '', { headers = {}, at = 0, headMs = 5, error }: Canned = {}): Reply {
  const bytes = Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
  return { status, headers, body: bytes, at, headMs, ms: headMs + 1, ...(error === undefined ? {} : { error }) };
}

/** A 201 for order `id`, as an oncely-protected or a plain route answers it. */
const created = (id: number, extra: Canned = {}): Reply =>
  reply(201, { id, status: 'confirmed' }, { ...extra, headers: { 'content-type': 'application/json', location: `/orders/${id}`, ...extra.headers } });

describe('missing key', () => {
  it('passes a 400 and warns when the key is optional (2xx)', () => {
    assert.equal(judgeMissingKey(reply(400, { type: 'x' }, { headers: { 'content-type': 'application/problem+json' } })).verdict, 'pass');
    const optional = judgeMissingKey(created(1));
    assert.equal(optional.verdict, 'warn');
    assert.match(optional.observed, /Key optional/);
    assert.equal(optional.executions, 1, 'the keyless request ran once');
  });

  it('skips what says nothing about the key (401, 404) and warns on other statuses', () => {
    assert.equal(judgeMissingKey(reply(401)).verdict, 'skip');
    assert.equal(judgeMissingKey(reply(404)).verdict, 'skip');
    assert.equal(judgeMissingKey(reply(428)).verdict, 'warn');
    assert.match(judgeMissingKey(reply(500)).observed, /server error/);
  });
});

describe('malformed keys', () => {
  const names = ['empty value', '10,000 characters', 'control character (TAB)'];

  it('passes when every malformed key is refused with 400 (or 431 for the long one)', () => {
    const result = judgeMalformedKeys([{ name: names[0]!, reply: reply(400) }, { name: names[1]!, reply: reply(431) }, { name: names[2]!, reply: reply(400) }]);
    assert.equal(result.verdict, 'pass');
    assert.equal(result.executions, 0);
  });

  it('warns, never fails, when one is accepted or answered 5xx, and says which', () => {
    const result = judgeMalformedKeys([{ name: names[0]!, reply: created(1) }, { name: names[1]!, reply: reply(500) }, { name: names[2]!, reply: reply(400) }]);
    assert.equal(result.verdict, 'warn');
    assert.match(result.details.join('\n'), /accepted .*: empty value/);
    assert.match(result.details.join('\n'), /server error or no answer: 10,000 characters/);
    assert.equal(result.executions, 1);
  });

  it('skips when every answer is about credentials or the URL', () => {
    assert.equal(judgeMalformedKeys(names.map((name) => ({ name, reply: reply(401) }))).verdict, 'skip');
  });
});

describe('replay fidelity', () => {
  it('passes an exact replay, and notes the Idempotent-Replayed marker', () => {
    const first = created(7);
    const result = judgeReplay(first, created(7, { headers: { 'idempotent-replayed': 'true' } }));
    assert.equal(result.verdict, 'pass');
    assert.equal(result.executions, 1);
    assert.ok(result.details.some((line) => line.includes('Idempotent-Replayed: true')));
  });

  it('fails a second resource as a duplicate execution', () => {
    const result = judgeReplay(created(7), created(8));
    assert.equal(result.verdict, 'fail');
    assert.match(result.observed, /Duplicate execution/);
    assert.equal(result.executions, 2);
  });

  it('fails a replay whose body bytes differ even when it names the same resource', () => {
    const first = reply(201, '{"id":7,"at":"12:00:00"}', { headers: { location: '/orders/7' } });
    const second = reply(201, '{"id":7,"at":"12:00:01"}', { headers: { location: '/orders/7' } });
    const result = judgeReplay(first, second);
    assert.equal(result.verdict, 'fail');
    assert.match(result.observed, /replay differs: bodies differ from byte 21/);
    assert.equal(result.executions, 1);
  });

  it('fails another status (no replay), even with the same body', () => {
    const result = judgeReplay(created(7), reply(409, { error: 'in use' }));
    assert.equal(result.verdict, 'fail');
    assert.match(result.observed, /No replay: status 201 then 409/);
  });

  it('warns when the replay drops the Location header but keeps status and body', () => {
    const first = created(7);
    const second = reply(201, first.body.toString(), { headers: { 'content-type': 'application/json' } });
    assert.equal(judgeReplay(first, second).verdict, 'warn');
  });

  it('infers executions from differing bodies when no resource is named', () => {
    const result = judgeReplay(reply(200, 'ok 1'), reply(200, 'ok 2'));
    assert.equal(result.verdict, 'fail');
    assert.equal(result.executions, 2);
  });

  it('skips when the first request was not accepted, with a hint', () => {
    const result = judgeReplay(reply(401), reply(401));
    assert.equal(result.verdict, 'skip');
    assert.match(result.details[0]!, /Authorization/);
  });
});

describe('same key, other body', () => {
  it('passes 422, warns on another 4xx or a 5xx', () => {
    assert.equal(judgeOtherBody(created(1), reply(422), 'changed').verdict, 'pass');
    assert.equal(judgeOtherBody(created(1), reply(400), 'changed').verdict, 'warn');
    assert.equal(judgeOtherBody(created(1), reply(409), 'changed').verdict, 'warn');
    assert.equal(judgeOtherBody(created(1), reply(500), 'changed').verdict, 'warn');
  });

  it('fails a 2xx: a new resource (ran again) or the first result (not refused)', () => {
    const ranAgain = judgeOtherBody(created(1), created(2), 'changed');
    assert.equal(ranAgain.verdict, 'fail');
    assert.match(ranAgain.observed, /ran the other body as a new request/);
    assert.equal(ranAgain.executions, 2);
    const replayed = judgeOtherBody(created(1), created(1), 'changed');
    assert.equal(replayed.verdict, 'fail');
    assert.match(replayed.observed, /same response as the first/);
  });
});

describe('concurrent duplicates', () => {
  it('passes one execution with 409s and identical replays', () => {
    const result = judgeConcurrent([reply(409), created(3), created(3), reply(409)]);
    assert.equal(result.verdict, 'pass');
    assert.equal(result.executions, 1);
    assert.equal(result.details[0], 'statuses: 2×409, 2×201');
  });

  it('fails more than one resource and names them', () => {
    const result = judgeConcurrent([created(1), created(2), created(3), reply(409)]);
    assert.equal(result.verdict, 'fail');
    assert.equal(result.executions, 3);
    assert.match(result.details.join('\n'), /\/orders\/1, \/orders\/2, \/orders\/3/);
  });

  it('warns on other answers (a 500 from a unique constraint), skips when none was accepted', () => {
    assert.equal(judgeConcurrent([created(1), reply(500), reply(409)]).verdict, 'warn');
    assert.equal(judgeConcurrent([reply(401), reply(401)]).verdict, 'skip');
  });
});

describe('retry while in flight', () => {
  it('passes a 409 sent while the first was still running', () => {
    const result = judgeInFlight(created(1, { at: 0, headMs: 300 }), reply(409, '', { at: 100 }));
    assert.equal(result.verdict, 'pass');
    assert.match(result.details[0]!, /retry sent 100 ms after the first; the first answered after 300 ms/);
  });

  it('passes a wait-then-replay, fails a second execution', () => {
    assert.equal(judgeInFlight(created(1, { at: 0, headMs: 300 }), created(1, { at: 100, headMs: 200 })).verdict, 'pass');
    const twice = judgeInFlight(created(1, { at: 0, headMs: 300 }), created(2, { at: 100 }));
    assert.equal(twice.verdict, 'fail');
    assert.equal(twice.executions, 2);
  });

  it('accepts the server taking the retry first', () => {
    assert.equal(judgeInFlight(reply(409, '', { at: 0, headMs: 50 }), created(1, { at: 10, headMs: 40 })).verdict, 'pass');
  });

  it('skips, not passes, when the first answered before the retry was sent', () => {
    const result = judgeInFlight(created(1, { at: 0, headMs: 3 }), created(1, { at: 10 }));
    assert.equal(result.verdict, 'skip');
    assert.match(result.observed, /Not observed: the endpoint answered in 3 ms/);
  });

  it('still fails a second execution that was not in flight', () => {
    assert.equal(judgeInFlight(created(1, { at: 0, headMs: 3 }), created(2, { at: 10 })).verdict, 'fail');
  });
});

it('statusHistogram counts statuses, most frequent first', () => {
  assert.equal(statusHistogram([reply(201), reply(409), reply(409), reply(0, '', { error: 'timeout' })]), '2×409, 1×201, 1×no answer');
});

describe('responses that name no resource', () => {
  it('warn instead of pass: identical bodies cannot tell one execution from two', () => {
    assert.equal(judgeReplay(reply(200, 'ok'), reply(200, 'ok')).verdict, 'warn');
    assert.equal(judgeConcurrent([reply(200, 'ok'), reply(200, 'ok')]).verdict, 'warn');
    assert.equal(judgeInFlight(reply(200, 'ok', { at: 0, headMs: 50 }), reply(200, 'ok', { at: 10 })).verdict, 'warn');
    assert.match(judgeReplay(reply(200, 'ok'), reply(200, 'ok')).details.join('\n'), /told apart by body bytes only/);
  });

  it('still pass when only one request ran (the others got 409)', () => {
    assert.equal(judgeConcurrent([reply(200, 'ok'), reply(409)]).verdict, 'pass');
    assert.equal(judgeInFlight(reply(200, 'ok', { at: 0, headMs: 50 }), reply(409, '', { at: 10 })).verdict, 'pass');
  });
});

it('replay: a retry that got no answer, 429 or 503 is a warning, not a differing replay', () => {
  assert.equal(judgeReplay(created(1), reply(0, '', { error: 'timeout after 10000 ms' })).verdict, 'warn');
  assert.equal(judgeReplay(created(1), reply(429)).verdict, 'warn');
});
