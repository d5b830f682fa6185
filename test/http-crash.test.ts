/**
 * HTTP crash safety and heartbeats, with real server processes on every shared store:
 * - a server SIGKILLed mid-handler leaves a claim: a retry gets 409 until the lease lapses,
 *   then runs the handler (at-least-once on crash, DESIGN guarantee 3);
 * - a handler running three times longer than the lease keeps its claim: a concurrent retry
 *   gets 409, never a second execution.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { PostgresStore } from '../src/stores/postgres/index.js';
import { POSTGRES_URL, REDIS_URL, skipUnlessReachable } from './support/services.js';

const SERVER = fileURLToPath(new URL('./support/http-server.ts', import.meta.url));
const directory = mkdtempSync(join(tmpdir(), 'oncely-http-crash-'));
const table = `oncely_http_crash_${process.pid}`;
const postgresSkip = await skipUnlessReachable('PostgreSQL', POSTGRES_URL);
const redisSkip = await skipUnlessReachable('Redis', REDIS_URL);
const pool = new pg.Pool({ connectionString: POSTGRES_URL, max: 2 });
if (!postgresSkip) await new PostgresStore({ pool, table }).migrate();
const children = new Set<ChildProcess>();

after(async () => {
  for (const child of children) child.kill('SIGKILL');
  if (!postgresSkip) await pool.query(`DROP TABLE IF EXISTS "${table}", "${table}_migrations"`);
  await pool.end();
  rmSync(directory, { recursive: true, force: true });
});

const targets: { name: string; skip: string | false; env: Record<string, string> }[] = [
  { name: 'sqlite', skip: false, env: { ONCELY_WORKER_SQLITE: join(directory, 'records.db') } },
  { name: 'postgres', skip: postgresSkip ?? false, env: { ONCELY_WORKER_POSTGRES: POSTGRES_URL, ONCELY_WORKER_TABLE: table } },
  { name: 'redis', skip: redisSkip ?? false, env: { ONCELY_WORKER_REDIS: REDIS_URL, ONCELY_WORKER_PREFIX: `oncely-http-crash-${randomUUID()}` } },
];

async function startServer(name: string, env: Record<string, string>, effects: string, leaseMs: number): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', SERVER], {
    env: { ...process.env, ...env, ONCELY_WORKER_STORE: name, ONCELY_WORKER_EFFECTS: effects, ONCELY_WORKER_LEASE_MS: String(leaseMs) },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.add(child);
  child.once('exit', () => children.delete(child));
  const port = await new Promise<string>((resolve, reject) => {
    let output = '';
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (chunk: string) => {
      output += chunk;
      const match = /listening (\d+)/.exec(output);
      if (match) resolve(match[1]!);
    });
    child.once('exit', (code) => reject(new Error(`server exited with ${code}: ${output}`)));
  });
  return { child, url: `http://127.0.0.1:${port}/orders` };
}

const order = (url: string, key: string, sleepMs = 0) =>
  fetch(url, { method: 'POST', body: JSON.stringify({ amount: 42 }), headers: { 'content-type': 'application/json', 'idempotency-key': key, 'x-sleep-ms': String(sleepMs) } });
const executions = (effects: string) => readFileSync(effects, 'utf8').split('\n').filter(Boolean).length;

for (const target of targets) {
  describe(`HTTP crash safety: ${target.name}`, { skip: target.skip }, () => {
    it('a server killed mid-handler: 409 until the lease lapses, then the retry runs the handler', async () => {
      const effects = join(directory, `effects-${randomUUID()}`);
      writeFileSync(effects, '');
      const leaseMs = 1_500;
      const doomed = await startServer(target.name, target.env, effects, leaseMs);
      const survivor = await startServer(target.name, target.env, effects, leaseMs);
      const key = randomUUID();
      const inFlight = order(doomed.url, key, 60_000).catch(() => 'connection lost');
      while (executions(effects) === 0) await sleep(10);
      doomed.child.kill('SIGKILL');
      const killedAt = Date.now();
      assert.equal(await inFlight, 'connection lost');

      const early = await order(survivor.url, key);
      assert.equal(early.status, 409, 'the dead server still holds the lease');
      assert.ok(early.headers.get('retry-after'));
      await sleep(Math.max(0, killedAt + leaseMs + 300 - Date.now()));
      const retry = await order(survivor.url, key);
      assert.equal(retry.status, 201);
      assert.equal(retry.headers.get('idempotent-replayed'), 'false');
      assert.equal(executions(effects), 2, 'at-least-once on crash: the handler ran again after the lease lapsed');
      const replay = await order(survivor.url, key);
      assert.equal(replay.headers.get('idempotent-replayed'), 'true');
      assert.equal(executions(effects), 2);
      survivor.child.kill('SIGTERM');
    });

    it('a handler running three times the lease keeps its claim across servers', async () => {
      const effects = join(directory, `effects-${randomUUID()}`);
      writeFileSync(effects, '');
      const leaseMs = 400;
      const [first, second] = await Promise.all([startServer(target.name, target.env, effects, leaseMs), startServer(target.name, target.env, effects, leaseMs)]);
      const key = randomUUID();
      const slow = order(first.url, key, 3 * leaseMs);
      await sleep(2 * leaseMs);
      const concurrent = await order(second.url, key);
      assert.equal(concurrent.status, 409, 'the heartbeat kept the lease past its first expiry');
      assert.equal((await slow).status, 201);
      assert.equal((await order(second.url, key)).headers.get('idempotent-replayed'), 'true');
      assert.equal(executions(effects), 1);
      first.child.kill('SIGTERM');
      second.child.kill('SIGTERM');
    });
  });
}
