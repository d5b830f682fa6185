/**
 * `npm run example:welcome-email` and `npm run example:projection`, run as npm runs them, on
 * the real NATS JetStream and PostgreSQL: each exits 0, prints the counts the README promises
 * (read from its databases after a consumer process was SIGKILLed before its ack), and
 * finishes in under 15 s.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { POSTGRES_URL, skipUnlessReachable } from './support/services.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const NATS_URL = 'nats://127.0.0.1:4222';
const natsSkip = await skipUnlessReachable('NATS JetStream', NATS_URL);
const postgresSkip = await skipUnlessReachable('PostgreSQL', POSTGRES_URL);

function runExample(file: string): Promise<{ code: number | null; stdout: string; stderr: string; ms: number }> {
  const started = performance.now();
  // What `tsx examples/<name>/index.ts` does, without npm in between.
  const child = spawn(process.execPath, ['--import', 'tsx', file], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NATS_URL, DATABASE_URL: POSTGRES_URL } });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  return new Promise((resolve) => child.once('close', (code) => resolve({ code, stdout, stderr, ms: performance.now() - started })));
}

describe('npm run example:welcome-email', { skip: natsSkip }, () => {
  it('a worker killed after the send: 2 handler runs, 1 email, every message acked; exit 0 in under 15 s', { timeout: 60_000 }, async () => {
    const { code, stdout, stderr, ms } = await runExample('examples/welcome-email/index.ts');
    assert.equal(code, 0, `exit code ${code}\n${stdout}\n${stderr}`);
    assert.ok(ms < 15_000, `took ${Math.round(ms)} ms`);
    assert.match(stdout, /^handler runs \(table handler_runs\) +2 +2 +✓$/m);
    assert.match(stdout, /^emails sent \(the provider's table emails\) +1 +1 +✓$/m);
    assert.match(stdout, /^messages acked \(JetStream ack floor\) +2 of 2 +2 of 2 +✓$/m);
    assert.match(stdout, /^handler runs: worker 1, worker 2, with one downstreamKey/m);
    assert.match(stdout, /^oncely record welcome-email:user-42: completed$/m);
    assert.match(stdout, /^ok: one welcome email, every message acked/m);
  });
});

describe('npm run example:projection', { skip: natsSkip ?? postgresSkip }, () => {
  it('a consumer killed between the write and the ack: each balance the sum of its distinct events, 5 applied, 10 acked; exit 0 in under 15 s', { timeout: 60_000 }, async () => {
    const { code, stdout, stderr, ms } = await runExample('examples/projection/index.ts');
    assert.equal(code, 0, `exit code ${code}\n${stdout}\n${stderr}`);
    assert.ok(ms < 15_000, `took ${Math.round(ms)} ms`);
    assert.match(stdout, /alice's balance still reads 50\.00: the UPDATE is not committed/);
    const rows: [account: string, balance: string, events: string][] = [['alice', '75\\.00', 'pay-1, pay-3'], ['bob', '20\\.00', 'pay-2, pay-5'], ['carol', '9\\.99', 'pay-4']];
    for (const [account, balance, events] of rows) {
      assert.match(stdout, new RegExp(`^${account} +${balance} +${balance} +${events} +✓$`, 'm'), `balance row of ${account}`);
    }
    assert.match(stdout, /^events applied \(rows in projection_\w+_applied\): 5, 5 distinct, of 5 events {2}✓$/m);
    assert.match(stdout, /^ {2}by consumer 1: pay-1, pay-2; consumer 2: pay-3, pay-4, pay-5$/m);
    assert.match(stdout, /^messages acked \(JetStream ack floor\): 10 of 10 {2}✓$/m);
    assert.match(stdout, /^ok: every balance is the sum of its distinct events, each applied once/m);
  });
});
