/**
 * The human report (readable at 100 columns, colour only when asked) and the JSON document.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { useColor } from '../color.js';
import { EXPECTATIONS, INFERENCE_NOTE } from './expectations.js';
import { formatReport, REPORT_WIDTH, summaryLine, toJson, wrap } from './report.js';
import type { CheckReport, ProbeId, ProbeResult, Verdict } from './types.js';

function probe(id: ProbeId, verdict: Verdict, observed: string, details: string[] = []): ProbeResult {
  const { title, expected, source } = EXPECTATIONS[id];
  return { id, title, verdict, observed, details, expected, source, executions: verdict === 'fail' ? 2 : 1, requests: [{ label: 'first', status: 201, ms: 3 }] };
}

const report: CheckReport = {
  target: { url: 'http://localhost:3000/orders', method: 'POST', headerName: 'Idempotency-Key', keyStyle: 'quoted', concurrency: 10 },
  probes: [
    probe('missing-key', 'warn', 'Key optional: ran the request without a key (201).'),
    probe('replay', 'fail', 'Duplicate execution: the retry ran again (/orders/1, /orders/2).', ['first: 201 in 60 ms (/orders/1); retry: 201 in 61 ms (/orders/2)']),
    probe('in-flight', 'skip', 'Not observed: the endpoint answered in 3 ms, before the retry was sent.'),
    probe('other-body', 'pass', 'Refused the reused key with 422.', ['other body: changed "amount" from 1 to 2 '.repeat(6)]),
  ],
  outcome: 'fail',
  exitCode: 1,
  summary: { passed: 1, warnings: 1, failed: 1, skipped: 1, executions: 5 },
  inference: INFERENCE_NOTE,
};

describe('formatReport', () => {
  const text = formatReport(report, { color: false });

  it('shows the target, each probe with its verdict, what the server did and what is expected', () => {
    assert.match(text, /^oncely check: POST http:\/\/localhost:3000\/orders\n/);
    assert.match(text, /^ WARN {2}1\. Missing key$/m);
    assert.match(text, /^ FAIL {2}2\. Replay fidelity$/m);
    assert.match(text, /^ SKIP {2}3\. Retry while in flight$/m);
    assert.match(text, /^ {7}server {3}Duplicate execution: the retry ran again/m);
    assert.match(text, /^ {7}expects {2}The result of the first request again/m);
    assert.match(text, /IETF draft, "Idempotency Enforcement"; Stripe\]/);
  });

  it('ends with the outcome, the summary line and the inference note', () => {
    assert.match(text, /FAIL: retries are not safe on this endpoint\n1 passed, 1 warning, 1 failed, 1 skipped; 5 executions inferred\.\nExecutions are inferred, not counted/);
  });

  it('keeps every line within 100 columns, and has no colour codes when colour is off', () => {
    for (const line of text.split('\n')) assert.ok(line.length <= REPORT_WIDTH, `too long (${line.length}): ${line}`);
    assert.ok(!text.includes('\x1b['), 'no escape codes');
  });

  it('colours the verdicts when colour is on', () => {
    assert.ok(formatReport(report, { color: true }).includes('\x1b[31m FAIL \x1b[39m'));
  });
});

it('summaryLine leaves out "skipped" when nothing was skipped', () => {
  assert.equal(summaryLine({ ...report, summary: { passed: 6, warnings: 0, failed: 0, skipped: 0, executions: 4 } }), '6 passed, 0 warnings, 0 failed');
});

it('wrap breaks on words and indents continuation lines', () => {
  assert.deepEqual(wrap('aaa bbb ccc ddd', 8, 2), ['aaa bbb', '  ccc', '  ddd']);
});

it('toJson has a stable, versioned shape', () => {
  const document = JSON.parse(toJson(report)) as Record<string, unknown>;
  assert.deepEqual(Object.keys(document), ['tool', 'version', 'draft', 'target', 'outcome', 'exitCode', 'summary', 'probes', 'inference']);
  assert.equal(document.version, 1);
  const [first] = document.probes as Record<string, unknown>[];
  assert.deepEqual(Object.keys(first!), ['id', 'title', 'verdict', 'observed', 'details', 'expected', 'source', 'executions', 'requests']);
});

it('useColor: --no-color and NO_COLOR win, FORCE_COLOR forces, else only on a terminal', () => {
  assert.equal(useColor({ isTTY: true }, true, {}), true);
  assert.equal(useColor({ isTTY: false }, true, {}), false);
  assert.equal(useColor({ isTTY: true }, false, {}), false);
  assert.equal(useColor({ isTTY: true }, true, { NO_COLOR: '1' }), false);
  assert.equal(useColor({ isTTY: false }, true, { FORCE_COLOR: '1' }), true);
  assert.equal(useColor({ isTTY: true }, true, { TERM: 'dumb' }), false);
});
