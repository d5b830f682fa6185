/**
 * `oncely inspect | release | purge | stats` as an operator runs them: the real CLI in a child
 * process against a real SQLite file, PostgreSQL table and Redis prefix, seeded through the
 * store API (an HTTP 201 stored by the fetch middleware, an `idempotent()` result, claims).
 * Checks what each command prints, its exit code, and what it did to the store.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import pg from 'pg';
import { idempotent, identityId, sha256Hex, type OperableStore } from 'oncely';
import { withIdempotency } from 'oncely/fetch';
import { PostgresStore } from 'oncely/postgres';
import { RedisStore } from 'oncely/redis';
import { SqliteStore } from 'oncely/sqlite';
import type { RecordView } from '../src/cli/record-view.js';
import { runCli, shown, type CliRun } from './support/cli.js';
import { POSTGRES_URL, REDIS_URL, skipUnlessReachable } from './support/services.js';

const postgresSkip = await skipUnlessReachable('PostgreSQL', POSTGRES_URL);
const redisSkip = await skipUnlessReachable('Redis', REDIS_URL);

/** A store the test seeds through the API and the CLI reaches by URL. */
interface Target {
  store: OperableStore;
  /** `--store` value. */
  url: string;
  /** Where in the store: `--table …` or `--prefix …`. */
  where: string[];
  /** Keeps lapsed records until `purge --expired` (SQL); Redis expires them itself. */
  sweeps: boolean;
  /** A `--table` that does not exist and what the CLI says about it (SQL stores). */
  missingTable?: { flags: string[]; message: RegExp };
  close(): Promise<void>;
}

interface StatsJson {
  store: string;
  inProgress: number;
  completed: number;
  lapsed: number;
  oldestInProgressAt?: string;
  oldestInProgressAgeMs?: number;
}

interface InspectJson {
  store: string;
  records: RecordView[];
}

/** What the seeding made, by scope. */
interface Seeded {
  alice: { id: string; token: string; createdAt: number };
  bob: string;
  /** HTTP 201 stored by the fetch middleware for scope carol. */
  carol: { id: string; outcome: Uint8Array };
  /** `idempotent()` result: namespace charge, scope '', key order-9. */
  charge: string;
  /** Completed without meta: only a lookup by id (namespace jobs, scope tenant-7) finds it. */
  bare: string;
}

const LEASE_MS = 60_000;
const ORDER_BODY = JSON.stringify({ id: 'ord_1', amountCents: 4999 });
const fingerprintOf = (namespace: string, scope: string, key: string): string => sha256Hex(`${namespace}|${scope}|${key}`);

async function hold(store: OperableStore, namespace: string, scope: string, key: string, leaseMs = LEASE_MS): Promise<{ id: string; token: string }> {
  const id = identityId(namespace, scope, key);
  const claim = await store.claim({ id, fingerprint: fingerprintOf(namespace, scope, key), leaseMs, meta: { namespace, scope, key } });
  if (claim.status !== 'acquired') throw new Error(`seeding ${namespace}/${scope}/${key}: claim was ${claim.status}`);
  return { id, token: claim.token };
}

async function seed(store: OperableStore): Promise<Seeded> {
  // Apart in time, so "newest first" has one right answer on a millisecond clock.
  const alice = await hold(store, 'http', 'alice', 'order-1');
  const aliceRecord = await store.get(alice.id);
  assert.ok(aliceRecord);
  await sleep(20);
  const bob = await hold(store, 'http', 'bob', 'order-1');
  await sleep(20);

  // The same raw key under a third scope, completed through the real HTTP path.
  const createOrder = withIdempotency(() => new Response(ORDER_BODY, { status: 201, headers: { 'content-type': 'application/json' } }), { store, scope: () => 'carol' });
  const response = await createOrder(new Request('http://shop.test/orders', { method: 'POST', headers: { 'idempotency-key': 'order-1', 'content-type': 'application/json' }, body: '{"amountCents":4999}' }));
  assert.equal(response.status, 201);
  assert.equal(await response.text(), ORDER_BODY);
  const carolId = identityId('http', 'carol', 'order-1');
  const carolRecord = await store.get(carolId);
  assert.equal(carolRecord?.state, 'completed');

  const charge = idempotent(async function charge(order: { id: string }) {
    return { charged: order.id };
  }, { store, key: (order) => order.id });
  assert.deepEqual(await charge({ id: 'order-9' }), { charged: 'order-9' });

  const bare = identityId('jobs', 'tenant-7', 'order-1');
  const bareClaim = await store.claim({ id: bare, fingerprint: 'f'.repeat(64), leaseMs: LEASE_MS });
  if (bareClaim.status !== 'acquired') throw new Error(`seeding the bare record: claim was ${bareClaim.status}`);
  assert.equal(await store.complete(bare, bareClaim.token, Uint8Array.from([0xde, 0xad, 0xbe, 0xef]), LEASE_MS), 'ok');

  return {
    alice: { ...alice, createdAt: aliceRecord.createdAt },
    bob: bob.id,
    carol: { id: carolId, outcome: Uint8Array.from(carolRecord.outcome) },
    charge: identityId('charge', '', 'order-9'),
    bare,
  };
}

function assertExit(run: CliRun, code: number): void {
  assert.equal(run.code, code, shown(run));
}

function parse<T>(run: CliRun): T {
  assert.ok(run.stdout.trim().startsWith('{'), `stdout holds only JSON\n${shown(run)}`);
  return JSON.parse(run.stdout) as T;
}

/** Node prints `    at …` frames for an uncaught error; an operator error never shows them. */
function assertNoStack(run: CliRun): void {
  assert.doesNotMatch(run.stderr, /^\s+at .+:\d+:\d+\)?$/m, shown(run));
}

/** The same cases on every store. */
function storeCommands(name: string, skip: string | undefined, open: () => Promise<Target>): void {
  describe(`oncely store commands on ${name}`, { skip, concurrency: 1, timeout: 60_000 }, () => {
    let target: Target;
    let seeded: Seeded;
    const cli = (command: string, ...args: string[]): Promise<CliRun> => runCli([command, '--store', target.url, ...target.where, ...args]);
    const inspect = async (...args: string[]): Promise<RecordView[]> => {
      const run = await cli('inspect', ...args, '--json');
      assertExit(run, 0);
      return parse<InspectJson>(run).records;
    };

    before(async () => {
      target = await open();
      seeded = await seed(target.store);
    });
    after(() => target?.close());

    it('stats counts the records by state, as JSON and as text (store from ONCELY_STORE)', async () => {
      const [json, text] = await Promise.all([cli('stats', '--json'), runCli(['stats', ...target.where], { env: { ONCELY_STORE: target.url } })]);
      assertExit(json, 0);
      const stats = parse<StatsJson>(json);
      assert.deepEqual([stats.inProgress, stats.completed, stats.lapsed], [2, 3, 0]);
      assert.equal(stats.oldestInProgressAt, new Date(seeded.alice.createdAt).toISOString());
      assert.ok(typeof stats.oldestInProgressAgeMs === 'number' && stats.oldestInProgressAgeMs >= 0 && stats.oldestInProgressAgeMs < LEASE_MS, json.stdout);
      assert.ok(stats.store.includes(target.where[1]!), `the heading names the table or prefix: ${stats.store}`);

      assertExit(text, 0);
      assert.match(text.stdout, /^ {2}in progress +2$/m);
      assert.match(text.stdout, /^ {2}completed +3$/m);
      assert.match(text.stdout, /^ {2}lapsed, not purged +0$/m);
      assert.ok(text.stdout.includes(new Date(seeded.alice.createdAt).toISOString()), text.stdout);
    });

    it('inspect lists every scope\'s record of a key, newest first, up to --limit', async () => {
      const [records, text] = await Promise.all([inspect('order-1'), cli('inspect', 'order-1', '--limit', '2')]);
      assert.deepEqual(records.map((record) => record.scope), ['carol', 'bob', 'alice']);
      assert.deepEqual(records.map((record) => record.id), [seeded.carol.id, seeded.bob, seeded.alice.id]);
      assert.deepEqual(records.map((record) => record.state), ['completed', 'in_progress', 'in_progress']);
      for (const record of records) assert.deepEqual([record.namespace, record.key], ['http', 'order-1']);
      const created = records.map((record) => Date.parse(record.createdAt));
      assert.ok(created[0]! > created[1]! && created[1]! > created[2]!, `newest first: ${records.map((record) => record.createdAt).join(', ')}`);
      // The record with no stored meta cannot be found by key.
      assert.ok(!records.some((record) => record.id === seeded.bare));
      // The response the fetch middleware stored, described rather than dumped.
      assert.deepEqual(records[0]!.outcome, { kind: 'http-response', status: 201, bodyBytes: Buffer.byteLength(ORDER_BODY), contentType: 'application/json' });
      assert.ok(records[0]!.expiresInMs > LEASE_MS, 'kept for the retention (24 h), not the lease');

      assertExit(text, 0);
      assert.ok(text.stdout.includes(seeded.carol.id) && text.stdout.includes(seeded.bob), text.stdout);
      assert.ok(!text.stdout.includes(seeded.alice.id), `--limit 2 leaves out the oldest\n${text.stdout}`);
      assert.equal(text.stdout.match(/^ {2}state +in progress$/gm)?.length, 1, text.stdout);
      assert.ok(text.stdout.includes(`HTTP 201, ${Buffer.byteLength(ORDER_BODY)}-byte body (application/json)`), text.stdout);
    });

    it('inspect finds one record by --namespace and --scope (looked up by id) or by --id', async () => {
      const [alice, bare, byId, charge] = await Promise.all([
        inspect('order-1', '--namespace', 'http', '--scope', 'alice'),
        inspect('order-1', '--namespace', 'jobs', '--scope', 'tenant-7'),
        inspect('--id', seeded.bob),
        inspect('order-9', '--namespace', 'charge'),
      ]);
      assert.equal(alice.length, 1);
      assert.equal(alice[0]!.id, seeded.alice.id);
      assert.equal(alice[0]!.state, 'in_progress');
      assert.equal(alice[0]!.fingerprint, fingerprintOf('http', 'alice', 'order-1'));
      assert.ok(alice[0]!.expiresInMs > 0 && alice[0]!.expiresInMs <= LEASE_MS, `lease ends within ${LEASE_MS} ms: ${alice[0]!.expiresInMs}`);

      // No meta was stored, so only the id computed from the identity can have found it.
      assert.deepEqual(bare.map((record) => [record.id, record.namespace, record.scope, record.outcome]), [[seeded.bare, undefined, undefined, { kind: 'bytes', size: 4 }]]);

      assert.deepEqual(byId.map((record) => [record.id, record.scope, record.state]), [[seeded.bob, 'bob', 'in_progress']]);

      // idempotent()'s own record: namespace from the function name, scope ''.
      assert.deepEqual(charge.map((record) => [record.id, record.namespace, record.scope, record.key, record.outcome]), [[seeded.charge, 'charge', '', 'order-9', { kind: 'function-result' }]]);
    });

    it('inspect exits 1 when nothing matches and 2 on a malformed --id', async () => {
      const [unknown, badId] = await Promise.all([cli('inspect', 'no-such-order'), cli('inspect', '--id', 'not-a-digest')]);
      assertExit(unknown, 1);
      assert.equal(unknown.stdout, '');
      assert.ok(unknown.stderr.includes('no live record for key "no-such-order"'), shown(unknown));
      assertExit(badId, 2);
      assert.match(badId.stderr, /--id must be a SHA-256 hex digest/);
      assertNoStack(badId);
    });

    it('release asks for --yes when there is no terminal, and leaves the claim', async () => {
      const run = await cli('release', 'order-1', '--namespace', 'http', '--scope', 'alice');
      assertExit(run, 2);
      assert.match(run.stderr, /pass --yes/);
      assertNoStack(run);
      assert.equal((await target.store.get(seeded.alice.id))?.state, 'in_progress');
    });

    it('release refuses a key with two in-progress claims and lists both', async () => {
      const run = await cli('release', 'order-1', '--yes');
      assertExit(run, 1);
      assert.ok(run.stderr.includes(seeded.alice.id) && run.stderr.includes(seeded.bob), shown(run));
      assert.ok(!run.stderr.includes(seeded.carol.id), 'the completed record is not a candidate');
      assert.match(run.stderr, /narrow with --namespace and --scope, or --id/);
      const records = await Promise.all([seeded.alice.id, seeded.bob].map((id) => target.store.get(id)));
      assert.deepEqual(records.map((record) => record?.state), ['in_progress', 'in_progress']);
    });

    it('release never removes a stored outcome', async () => {
      const [byScope, byId] = await Promise.all([
        cli('release', 'order-1', '--namespace', 'http', '--scope', 'carol', '--yes'),
        cli('release', '--id', seeded.charge, '--yes', '--json'),
      ]);
      assertExit(byScope, 1);
      assert.match(byScope.stderr, /nothing to release: the record is completed/);
      assertExit(byId, 1);
      assert.equal(parse<{ released: boolean }>(byId).released, false);

      const carol = await target.store.get(seeded.carol.id);
      assert.equal(carol?.state, 'completed');
      assert.deepEqual(Buffer.from(carol.outcome), Buffer.from(seeded.carol.outcome));
      assert.equal((await target.store.get(seeded.charge))?.state, 'completed');
    });

    it('release --yes frees one claim: its holder is fenced out and the next claim acquires', async () => {
      const run = await cli('release', 'order-1', '--namespace', 'http', '--scope', 'alice', '--yes');
      assertExit(run, 0);
      assert.equal(run.stdout, `released ${seeded.alice.id}; the next retry runs the work\n`);
      assert.equal(await target.store.get(seeded.alice.id), undefined);
      assert.equal((await target.store.get(seeded.bob))?.state, 'in_progress', 'only the named claim is released');
      // The old holder's late completion is refused; a retry runs the work again.
      assert.equal(await target.store.complete(seeded.alice.id, seeded.alice.token, Uint8Array.from([1]), LEASE_MS), 'lost');
      const again = await target.store.claim({ id: seeded.alice.id, fingerprint: fingerprintOf('http', 'alice', 'order-1'), leaseMs: LEASE_MS, meta: { namespace: 'http', scope: 'alice', key: 'order-1' } });
      assert.equal(again.status, 'acquired');

      const json = await cli('release', '--id', seeded.bob, '--yes', '--json');
      assertExit(json, 0);
      const answer = parse<{ released: boolean; record: RecordView }>(json);
      assert.deepEqual([answer.released, answer.record.id, answer.record.state], [true, seeded.bob, 'in_progress']);
      assert.equal(await target.store.get(seeded.bob), undefined);
    });

    it(`purge --expired ${name === 'redis' ? 'has nothing to remove (Redis expires records itself)' : 'removes the lapsed records and reports how many'}`, async () => {
      await hold(target.store, 'http', 'alice', 'lapse-1', 1);
      await hold(target.store, 'http', 'alice', 'lapse-2', 1);
      const kept = await hold(target.store, 'http', 'alice', 'lapse-3');
      assert.equal(await target.store.complete(kept.id, kept.token, Uint8Array.from([7]), 1), 'ok');
      await sleep(50);
      const live = await target.store.stats();

      const expected = target.sweeps ? 3 : 0;
      const stats = parse<StatsJson>(await cli('stats', '--json'));
      assert.deepEqual([stats.inProgress, stats.completed, stats.lapsed], [live.inProgress, live.completed, expected]);

      const purge = await cli('purge', '--expired', '--json');
      assertExit(purge, 0);
      assert.deepEqual(parse<{ store: string; removed: number }>(purge), { store: stats.store, removed: expected });

      const again = await cli('purge', '--expired');
      assertExit(again, 0);
      assert.equal(again.stdout, `removed 0 lapsed records from ${stats.store}\n`);
      const afterwards = await target.store.stats();
      assert.deepEqual([afterwards.inProgress, afterwards.completed, afterwards.lapsed], [live.inProgress, live.completed, 0]);
      // Live records are untouched.
      assert.equal((await target.store.get(seeded.carol.id))?.state, 'completed');
      assert.equal((await target.store.get(seeded.alice.id))?.state, 'in_progress');
    });

    it('a store location that holds no records', async () => {
      if (target.missingTable) {
        const run = await runCli(['stats', '--store', target.url, ...target.missingTable.flags]);
        assertExit(run, 2);
        assert.match(run.stderr, target.missingTable.message);
        assertNoStack(run);
      } else {
        // Redis has no schema: an unused prefix is an empty store, not an error.
        const run = await runCli(['stats', '--store', target.url, '--prefix', `oncely-cli-empty-${randomUUID()}`, '--json']);
        assertExit(run, 0);
        assert.deepEqual([parse<StatsJson>(run).inProgress, parse<StatsJson>(run).completed], [0, 0]);
      }
    });
  });
}

async function sqliteTarget(): Promise<Target> {
  const directory = mkdtempSync(join(tmpdir(), 'oncely-cli-'));
  const path = join(directory, 'records.db');
  const table = 'cli_records';
  const store = new SqliteStore({ path, table });
  return {
    store,
    url: `sqlite:${path}`,
    where: ['--table', table],
    sweeps: true,
    missingTable: { flags: ['--table', 'missing_records'], message: /has no table missing_records; name the table with --table/ },
    close: async () => {
      await store.close();
      rmSync(directory, { recursive: true, force: true });
    },
  };
}

async function postgresTarget(): Promise<Target> {
  const pool = new pg.Pool({ connectionString: POSTGRES_URL, max: 4 });
  const table = `oncely_cli_${randomUUID().slice(0, 8)}`;
  const store = new PostgresStore({ pool, table });
  await store.migrate();
  return {
    store,
    url: POSTGRES_URL,
    where: ['--table', table],
    sweeps: true,
    missingTable: { flags: ['--table', `${table}_missing`], message: new RegExp(`table "public"\\."${table}_missing" does not exist`) },
    close: async () => {
      await store.close();
      await pool.query(`DROP TABLE IF EXISTS "${table}", "${table}_migrations"`);
      await pool.end();
    },
  };
}

async function redisTarget(): Promise<Target> {
  const client = new Redis(REDIS_URL);
  client.on('error', () => undefined);
  const prefix = `oncely-cli-${randomUUID()}`;
  const store = new RedisStore({ client, prefix });
  return {
    store,
    url: REDIS_URL,
    where: ['--prefix', prefix],
    sweeps: false,
    close: async () => {
      await store.close();
      for await (const keys of client.scanStream({ match: `${prefix}:*`, count: 1000 })) {
        if ((keys as string[]).length > 0) await client.unlink(...(keys as string[]));
      }
      client.disconnect();
    },
  };
}

describe('oncely inspect, release, purge and stats', { concurrency: true }, () => {
  storeCommands('sqlite', undefined, sqliteTarget);
  storeCommands('postgres', postgresSkip, postgresTarget);
  storeCommands('redis', redisSkip, redisTarget);

  describe('a store that cannot be opened: exit 2, one line, no stack trace', { concurrency: true, timeout: 60_000 }, () => {
    it('a SQLite path with no file', async () => {
      const run = await runCli(['stats', '--store', 'sqlite:/nonexistent.db']);
      assertExit(run, 2);
      assert.match(run.stderr, /no SQLite file at \/nonexistent\.db/);
      assert.equal(run.stdout, '');
      assertNoStack(run);
    });

    for (const [service, url, message] of [
      ['PostgreSQL', 'postgres://postgres@127.0.0.1:1/test', /PostgreSQL is unavailable: .*ECONNREFUSED/],
      ['Redis', 'redis://127.0.0.1:1', /cannot reach redis:\/\/127\.0\.0\.1:1/],
    ] as const) {
      it(`an unreachable ${service} server, within a few seconds`, async () => {
        const run = await runCli(['inspect', 'order-1', '--store', url], { timeoutMs: 15_000 });
        assertExit(run, 2);
        assert.match(run.stderr, message);
        assert.equal(run.stderr.trim().split('\n').length, 1, shown(run));
        assertNoStack(run);
        // Not the client's default of retrying forever (the run would be killed at 15 s).
        assert.ok(run.ms < 10_000, `took ${Math.round(run.ms)} ms`);
      });
    }

    it('a store that refuses its options exits at once: the client opened for it is closed (--prefix with a brace, a bad --table)', { skip: postgresSkip ?? redisSkip }, async () => {
      // One at a time, like every run below: the suites beside this one run child processes too.
      const prefix = await runCli(['stats', '--store', REDIS_URL, '--prefix', 'a{b}']);
      const table = await runCli(['stats', '--store', POSTGRES_URL, '--table', 'no-dashes']);
      assertExit(prefix, 2);
      assert.match(prefix.stderr, /prefix must be a string without \{ or \}/);
      assertExit(table, 2);
      assert.match(table.stderr, /table must match/);
      for (const run of [prefix, table]) {
        assertNoStack(run);
        // Not killed at 15 s, as a run was whose Redis client stayed open.
        assert.ok(run.ms < 10_000, `took ${Math.round(run.ms)} ms`);
      }
    });

    it('a Redis database the server refuses (or a path that is no database) is an error for every command, not database 0', { skip: redisSkip }, async () => {
      for (const command of [['stats'], ['inspect', 'order-1'], ['release', 'order-1', '--yes'], ['purge', '--expired']]) {
        const run = await runCli([...command, '--store', `${REDIS_URL}/999`]);
        assertExit(run, 2);
        assert.match(run.stderr, /cannot use database 999 of redis:\/\/.*: ERR .*out of range/, shown(run));
        assert.equal(run.stdout, '');
        assertNoStack(run);
      }
      const json = await runCli(['stats', '--store', `${REDIS_URL}/999`, '--json']);
      assertExit(json, 2);
      assert.match(parse<{ error: string }>(json).error, /cannot use database 999/);
      const notANumber = await runCli(['stats', '--store', `${REDIS_URL}/zero`]);
      assertExit(notANumber, 2);
      assert.match(notANumber.stderr, /the path of a Redis URL is the database number, e\.g\. redis:\/\/host:6379\/0; got \/zero/);
      const query = await runCli(['stats', '--store', `${REDIS_URL}?db=999`]);
      assertExit(query, 2);
      assert.match(query.stderr, /name the Redis database in the URL's path/);
    });

    it('the database a Redis URL names is the one used', { skip: redisSkip }, async () => {
      const client = new Redis(`${REDIS_URL}/1`);
      client.on('error', () => undefined);
      const prefix = `oncely-cli-db-${randomUUID()}`;
      const store = new RedisStore({ client, prefix });
      try {
        await hold(store, 'http', 'alice', 'order-1');
        const one = await runCli(['stats', '--store', `${REDIS_URL}/1`, '--prefix', prefix, '--json']);
        const zero = await runCli(['stats', '--store', `${REDIS_URL}/0`, '--prefix', prefix, '--json']);
        assertExit(one, 0);
        assert.equal(parse<StatsJson>(one).inProgress, 1);
        assertExit(zero, 0);
        assert.equal(parse<StatsJson>(zero).inProgress, 0);
      } finally {
        await store.close();
        const keys = await client.keys(`${prefix}:*`);
        if (keys.length > 0) await client.unlink(...keys);
        client.disconnect();
      }
    });

    it('an unsupported or malformed store URL, as text and as JSON', async () => {
      const [mysql, mysqlJson, garbage] = await Promise.all([
        runCli(['stats', '--store', 'mysql://x']),
        runCli(['stats', '--store', 'mysql://x', '--json']),
        runCli(['stats', '--store', 'not a url']),
      ]);
      assertExit(mysql, 2);
      assert.match(mysql.stderr, /unsupported store URL scheme mysql:/);
      assertNoStack(mysql);
      assertExit(mysqlJson, 2);
      assert.match(parse<{ error: string }>(mysqlJson).error, /unsupported store URL scheme mysql:/);
      assertExit(garbage, 2);
      assert.match(garbage.stderr, /not a store URL: not a url/);
    });

    it('no --store and no ONCELY_STORE', async () => {
      const run = await runCli(['stats']);
      assertExit(run, 2);
      assert.match(run.stderr, /required option '--store <url>' not specified/);
    });
  });

  describe('bad flags: exit 2 before the store is touched', { concurrency: true, timeout: 60_000 }, () => {
    it('purge without --expired', async () => {
      const run = await runCli(['purge', '--store', 'sqlite:/nonexistent.db']);
      assertExit(run, 2);
      assert.match(run.stderr, /purge removes only lapsed records: pass --expired/);
      assert.doesNotMatch(run.stderr, /no SQLite file/, 'refused before opening the store');
    });

    it('--limit 0, with no stack trace', async () => {
      const run = await runCli(['inspect', 'order-1', '--store', 'sqlite:/nonexistent.db', '--limit', '0']);
      assertExit(run, 2);
      assert.match(run.stderr, /option '--limit <n>' argument '0' is invalid. It must be a positive whole number/);
      assertNoStack(run);
    });
  });
});
