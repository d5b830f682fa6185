/**
 * `oncely check` as a user runs it: the real CLI in a child process against the demo shop's
 * protected route (`POST /orders`, oncely with a required key) and its unprotected twin
 * (`POST /orders-unsafe`). Checks the exit codes, the reports, and that the executions the CLI
 * infers from responses match the orders the shop really created.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startShop, type Shop, type ShopRoute } from '../examples/demo/shop.js';
import { runCli, type CliRun } from './support/cli.js';

const ROOT = join(import.meta.dirname, '..');
const ORDER = '{"amountCents": 4999, "email": "ada@example.com"}';

/** Runs `oncely check …args` from the sources. */
const check = (...args: string[]): Promise<CliRun> => runCli(['check', ...args], { timeoutMs: 60_000 });

interface JsonProbe {
  id: string;
  verdict: string;
  observed: string;
  executions: number;
  requests: { label: string; status: number }[];
}

interface JsonReport {
  tool: string;
  version: number;
  target: { url: string; method: string; concurrency: number };
  outcome: string;
  exitCode: number;
  summary: { passed: number; warnings: number; failed: number; skipped: number; executions: number };
  probes: JsonProbe[];
  inference: string;
}

const verdicts = (report: JsonReport): Record<string, string> => Object.fromEntries(report.probes.map((probe) => [probe.id, probe.verdict]));

describe('oncely check against the demo shop', { timeout: 120_000 }, () => {
  let shop: Shop;
  // A 250 ms payment provider: the in-flight retry leaves a third of the replay probe's response
  // time after the first request, so it lands while the first runs even on a loaded machine.
  before(async () => (shop = await startShop({ handlerDelayMs: 250 })));
  after(() => shop.close());

  /** Runs the check with `--json` and returns the report with the orders the shop created meanwhile. */
  async function checkJson(route: ShopRoute, ...args: string[]): Promise<{ run: CliRun; report: JsonReport; created: number }> {
    const before = shop.counts(route).orders;
    const path = route === 'safe' ? '/orders' : '/orders-unsafe';
    const run = await check(`${shop.url}${path}`, '-d', ORDER, '--json', '-c', '8', ...args);
    await shop.settled();
    assert.ok(run.stdout.trim().startsWith('{'), `stdout holds only the JSON report, got: ${run.stdout.slice(0, 200)}\n${run.stderr}`);
    return { run, report: JSON.parse(run.stdout) as JsonReport, created: shop.counts(route).orders - before };
  }

  it('passes every probe on the oncely route, exit 0, and infers the real number of executions', async () => {
    const { run, report, created } = await checkJson('safe');
    assert.equal(run.code, 0, run.stderr);
    assert.deepEqual(verdicts(report), { 'missing-key': 'pass', 'malformed-key': 'pass', replay: 'pass', 'other-body': 'pass', concurrent: 'pass', 'in-flight': 'pass' });
    assert.equal(report.outcome, 'pass');
    assert.equal(report.exitCode, 0);
    const concurrent = report.probes.find((probe) => probe.id === 'concurrent')!;
    assert.equal(concurrent.requests.length, 8);
    assert.equal(concurrent.executions, 1);
    // replay, other body, concurrent and in flight each created one order; the shop agrees.
    assert.equal(report.summary.executions, 4);
    assert.equal(report.summary.executions, created, 'the inferred executions are the orders the shop created');
  });

  it('fails the unprotected route (duplicate executions), exit 1, and infers the real number of executions', async () => {
    const { run, report, created } = await checkJson('unsafe');
    assert.equal(run.code, 1, run.stderr);
    assert.equal(report.outcome, 'fail');
    assert.deepEqual(verdicts(report), { 'missing-key': 'warn', 'malformed-key': 'warn', replay: 'fail', 'other-body': 'fail', concurrent: 'fail', 'in-flight': 'fail' });
    const concurrent = report.probes.find((probe) => probe.id === 'concurrent')!;
    assert.equal(concurrent.executions, 8, 'every concurrent duplicate ran');
    assert.match(concurrent.observed, /Duplicate execution: 8 requests with one key ran 8 times/);
    // 1 without a key + 5 malformed keys + 2 + 2 + 8 + 2.
    assert.equal(report.summary.executions, 20);
    assert.equal(report.summary.executions, created, 'the inferred executions are the orders the shop created');
  });

  it('prints a readable report on stdout and progress on stderr', async () => {
    const run = await check(`${shop.url}/orders-unsafe`, '-d', ORDER, '--no-color');
    assert.equal(run.code, 1);
    assert.match(run.stdout, /^oncely check: POST http:\/\/127\.0\.0\.1:\d+\/orders-unsafe$/m);
    assert.match(run.stdout, /^ FAIL {2}5\. Concurrent duplicates\n {7}server {3}Duplicate execution: 10 requests with one key ran 10 times\.$/m);
    assert.match(run.stdout, /^ WARN {2}1\. Missing key$/m);
    assert.match(run.stdout, /^FAIL: retries are not safe on this endpoint\n0 passed, 2 warnings, 4 failed; \d+ executions inferred\.$/m);
    assert.match(run.stdout, /^Executions are inferred, not counted/m);
    assert.doesNotMatch(run.stdout, /\[\d\/6\]/, 'no progress on stdout');
    assert.ok(!run.stdout.includes('\x1b['), 'no colour with --no-color');
    assert.match(run.stderr, /\[1\/6\] Missing key…\n(.|\n)*\[6\/6\] Retry while in flight…/);
  });

  it('exits 2, saying what to change, when the endpoint accepts none of the keyed requests', async () => {
    // The shop refuses the default body ({"oncely_check": …}) with 400: nothing can be judged.
    const { run, report } = await checkJson('safe', '-d', '{"oncely_check": 1}');
    assert.equal(run.code, 2);
    assert.equal(report.outcome, 'inconclusive');
    assert.equal(verdicts(report).replay, 'skip');
    assert.match(run.stderr, /accepted none of the keyed requests/);
  });
});

describe('oncely check usage errors exit 2', { timeout: 60_000 }, () => {
  const cases: [string, string[], RegExp][] = [
    ['no URL', [], /missing required argument 'url'/],
    ['a bad URL', ['not-a-url'], /not a URL/],
    ['a bad concurrency', ['http://127.0.0.1:9/orders', '-c', '0'], /--concurrency must be a whole number/],
    ['an unknown option', ['http://127.0.0.1:9/orders', '--frobnicate'], /unknown option/],
    ['a malformed header', ['http://127.0.0.1:9/orders', '-H', 'Authorization'], /"Name: value"/],
    ['an unreadable @file', ['http://127.0.0.1:9/orders', '-d', '@/nonexistent/body.json'], /cannot read the --data file/],
    ['an unreachable URL', ['http://127.0.0.1:9/orders', '--timeout', '3000'], /cannot reach http:\/\/127\.0\.0\.1:9\/orders/],
  ];
  for (const [what, args, message] of cases) {
    it(what, async () => {
      const run = await check(...args);
      assert.equal(run.code, 2, `${run.stdout}\n${run.stderr}`);
      assert.match(run.stderr, message);
      assert.equal(run.stdout, '', 'nothing on stdout');
    });
  }
});

it('the check command loads no store and no database driver', () => {
  const dir = join(ROOT, 'src/cli/check');
  const sources = readdirSync(dir).filter((name) => name.endsWith('.ts') && !name.endsWith('.test.ts'));
  for (const name of sources) {
    const imports = [...readFileSync(join(dir, name), 'utf8').matchAll(/^import[^'"]*['"]([^'"]+)['"]/gm)].map((match) => match[1]!);
    for (const specifier of imports) assert.match(specifier, /^(node:|\.\/|\.\.\/(cli-error|color)\.js$|commander$|picocolors$)/, `${name} imports ${specifier}`);
  }
});
