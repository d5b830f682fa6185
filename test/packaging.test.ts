/**
 * The built package as a user gets it: every subpath loads from ESM and CJS, the declaration
 * files type-check a consumer in both module systems, and a subpath loads only its own driver.
 * Runs against dist/ (npm test builds first).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createRequire } from 'node:module';
import { describe, it } from 'node:test';

const require = createRequire(import.meta.url);
const SUBPATHS: Record<string, string[]> = {
  oncely: ['idempotent', 'executionContext', 'MemoryStore', 'StoreUnavailableError', 'sweepExpired', 'identityId'],
  'oncely/sqlite': ['SqliteStore'],
  'oncely/postgres': ['PostgresStore', 'postgresMigrationSql'],
  'oncely/redis': ['RedisStore'],
  'oncely/express': ['idempotency', 'idempotencyErrors'],
  'oncely/fastify': ['oncely', 'default'],
  'oncely/fetch': ['withIdempotency'],
  'oncely/hono': ['idempotency'],
  'oncely/testing': ['storeContract', 'randomId', 'httpConformance', 'conformanceHandler'],
  'oncely/client': ['createIdempotentFetch', 'sessionStorageKeyStore', 'memoryKeyStore', 'IdempotentFetchError'],
};
const DRIVERS = ['pg', 'redis', '@redis/client', 'ioredis', 'better-sqlite3', 'hono', 'express', 'fastify'];

/** Drivers a fresh CommonJS process has loaded after requiring `subpath`. */
function driversLoadedBy(subpath: string): string[] {
  const script = `require(${JSON.stringify(subpath)});
    const loaded = Object.keys(require.cache).map((p) => p.match(/node_modules\\/((?:@[^/]+\\/)?[^/]+)\\//)?.[1]).filter(Boolean);
    console.log(JSON.stringify([...new Set(loaded)].filter((m) => ${JSON.stringify(DRIVERS)}.includes(m))));`;
  return JSON.parse(execFileSync(process.execPath, ['-e', script], { encoding: 'utf8' })) as string[];
}

describe('package', { skip: existsSync('dist/index.js') ? false : 'dist/ is missing: run npm run build' }, () => {
  for (const [subpath, names] of Object.entries(SUBPATHS)) {
    it(`${subpath} loads from ESM and CJS with its exports`, async () => {
      const esm = (await import(subpath)) as Record<string, unknown>;
      const cjs = require(subpath) as Record<string, unknown>;
      for (const name of names) {
        assert.equal(typeof esm[name], 'function', `ESM ${subpath} lacks ${name}`);
        assert.equal(typeof cjs[name], 'function', `CJS ${subpath} lacks ${name}`);
      }
    });
  }

  it('loads no database driver from the root entry, and only its own from a store entry', () => {
    assert.deepEqual(driversLoadedBy('oncely'), []);
    assert.deepEqual(driversLoadedBy('oncely/postgres'), []);
    assert.deepEqual(driversLoadedBy('oncely/redis'), []);
    assert.deepEqual(driversLoadedBy('oncely/sqlite'), ['better-sqlite3']);
    assert.deepEqual(driversLoadedBy('oncely/fetch'), []);
    assert.deepEqual(driversLoadedBy('oncely/express'), [], 'adapters load no framework: the app passes its own');
    assert.deepEqual(driversLoadedBy('oncely/fastify'), []);
    assert.deepEqual(driversLoadedBy('oncely/hono'), [], 'the Hono adapter only needs Hono types');
    assert.deepEqual(driversLoadedBy('oncely/client'), []);
  });

  it('oncely/client imports no Node module, so it runs in browsers, Bun and Deno', () => {
    const seen = new Set<string>();
    const visit = (file: string): void => {
      if (seen.has(file)) return;
      seen.add(file);
      const source = readFileSync(file, 'utf8');
      assert.doesNotMatch(source, /from ['"]node:|require\(|\bprocess\.|\bBuffer\./, `${file} uses a Node API`);
      for (const [, relative] of source.matchAll(/from ['"](\.[^'"]+)['"]/g)) visit(join(dirname(file), relative!));
    };
    visit('dist/client.js');
    assert.ok(seen.size >= 1);
  });

  it('installs the oncely command: dist/cli.js runs as a program', () => {
    const version = execFileSync(process.execPath, ['dist/cli.js', '--version'], { encoding: 'utf8' }).trim();
    assert.equal(version, (JSON.parse(readFileSync('package.json', 'utf8')) as { version: string }).version);
    assert.match(readFileSync('dist/cli.js', 'utf8'), /^#!\/usr\/bin\/env node\n/);
    const help = execFileSync(process.execPath, ['dist/cli.js', '--help'], { encoding: 'utf8' });
    for (const command of ['check', 'inspect', 'release', 'purge', 'stats']) assert.match(help, new RegExp(`\\n  ${command} `));
  });

  it('type-checks a consumer from ESM and CJS against the built declarations', () => {
    execFileSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', 'test/fixtures/consumer/tsconfig.json'], { encoding: 'utf8', stdio: 'pipe' });
  });
});
