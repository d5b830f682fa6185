/**
 * The package as a user gets it: `npm pack`, then `npm install <tarball>` into a scratch app in
 * the OS temp dir (outside this repository, so nothing resolves from its src/ or node_modules by
 * accident), then plain `node` (no tsx), `node --test` and `tsc` in that app. The app links
 * only the peers a user would add (better-sqlite3, Hono, type packages) from this repository's
 * node_modules, after npm has shown it installs none of them itself. Needs dist/ (npm test
 * builds first).
 */
import assert from 'node:assert/strict';
import { execFile, type ExecFileOptions } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { isBuiltin } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const REPO = fileURLToPath(new URL('..', import.meta.url)).replace(/\/$/, '');
const FIXTURE = join(REPO, 'test/fixtures/consumer');
const manifest = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as {
  version: string;
  peerDependencies: Record<string, string>;
  peerDependenciesMeta?: Record<string, { optional?: boolean }>;
};

const SUBPATHS: Record<string, string[]> = {
  oncely: ['idempotent', 'executionContext', 'MemoryStore', 'StoreUnavailableError', 'sweepExpired', 'identityId'],
  'oncely/sqlite': ['SqliteStore'],
  'oncely/postgres': ['PostgresStore', 'postgresMigrationSql'],
  'oncely/redis': ['RedisStore'],
  'oncely/express': ['idempotency', 'idempotencyErrors'],
  'oncely/fastify': ['oncely', 'default'],
  'oncely/fetch': ['withIdempotency'],
  'oncely/hono': ['idempotency'],
  'oncely/messages': ['idempotentConsumer'],
  'oncely/sqs': ['sqsMessageHandler', 'consumeIdempotently'],
  'oncely/bullmq': ['idempotentProcessor'],
  'oncely/mqtt': ['consumeIdempotently'],
  'oncely/rabbitmq': ['consumeIdempotently'],
  'oncely/nats': ['consumeIdempotently'],
  'oncely/testing': ['storeContract', 'randomId', 'httpConformance', 'conformanceHandler'],
  'oncely/client': ['createIdempotentFetch', 'sessionStorageKeyStore', 'memoryKeyStore', 'IdempotentFetchError'],
};
const DRIVERS = ['pg', 'redis', '@redis/client', 'ioredis', 'better-sqlite3', 'hono', 'express', 'fastify', '@aws-sdk/client-sqs', 'amqplib', '@nats-io/jetstream', '@nats-io/transport-node', '@nats-io/nats-core', 'bullmq', 'mqtt'];
/** What the scratch app adds next to oncely, as its user would: the drivers and frameworks it uses, and their types. */
const LINKED = ['better-sqlite3', 'hono', '@hono/node-server', 'fastify', '@types/node', '@types/better-sqlite3', '@types/express', '@types/pg'];

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a program to its end; never rejects, so the assertion can show its output. */
function run(file: string, args: string[], options: ExecFileOptions = {}): Promise<Run> {
  // Plain node: no loader from NODE_OPTIONS; and a nested `node --test` reports as a run of its
  // own, not to this one (NODE_TEST_CONTEXT).
  const { NODE_TEST_CONTEXT: _context, NODE_OPTIONS: _options, ...env } = process.env;
  return new Promise((resolve) => {
    execFile(file, args, { env, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, ...options }, (error, stdout, stderr) => {
      resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

function shown(result: Run): string {
  return `exit ${result.code}\n--- stdout\n${result.stdout.slice(-8000)}\n--- stderr\n${result.stderr.slice(-8000)}`;
}

/** The packages directly in a node_modules folder (`name` or `@scope/name`). */
function packagesIn(nodeModules: string): string[] {
  return readdirSync(nodeModules)
    .filter((name) => !name.startsWith('.'))
    .flatMap((name) => (name.startsWith('@') ? readdirSync(join(nodeModules, name)).map((inner) => `${name}/${inner}`) : [name]));
}

/** Every file under `dir`, as paths relative to it. */
function filesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true }).filter((entry) => entry.isFile()).map((entry) => relative(dir, join(entry.parentPath, entry.name)));
}

/** Counts from a `--test-reporter=tap` run. */
function tapCounts(output: string): { pass: number; fail: number } {
  const count = (name: string): number => Number(new RegExp(`^# ${name} (\\d+)$`, 'm').exec(output)?.[1] ?? Number.NaN);
  return { pass: count('pass'), fail: count('fail') };
}

describe('the packed package, installed into a scratch app', { skip: existsSync(join(REPO, 'dist/index.js')) ? false : 'dist/ is missing: run npm run build' }, () => {
  let scratch = '';
  let app = '';
  let pkg = '';
  let install: Run;
  /** What `npm install <tarball>` put in node_modules, before the app links its own peers. */
  let installedByNpm: string[] = [];

  const node = (args: string[]): Promise<Run> => run(process.execPath, args, { cwd: app });

  before(async () => {
    scratch = realpathSync(mkdtempSync(join(tmpdir(), 'oncely-packaging-')));
    const pack = await run('npm', ['pack', '--json', '--pack-destination', scratch], { cwd: REPO });
    assert.equal(pack.code, 0, shown(pack));
    const tarball = join(scratch, (JSON.parse(pack.stdout) as { filename: string }[])[0]!.filename);
    app = join(scratch, 'app');
    mkdirSync(app);
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'scratch-app', private: true }));
    install = await run('npm', ['install', tarball, '--prefer-offline', '--no-audit', '--no-fund'], { cwd: app });
    assert.equal(install.code, 0, shown(install));
    pkg = join(app, 'node_modules/oncely');
    installedByNpm = packagesIn(join(app, 'node_modules'));
    for (const name of LINKED) {
      mkdirSync(dirname(join(app, 'node_modules', name)), { recursive: true });
      symlinkSync(join(REPO, 'node_modules', name), join(app, 'node_modules', name), 'dir');
    }
    cpSync(FIXTURE, app, { recursive: true });
  });
  after(() => rmSync(scratch, { recursive: true, force: true }));

  it('installs with its own dependencies only: every framework and driver peer is optional (npm adds none)', () => {
    const installed = JSON.parse(readFileSync(join(pkg, 'package.json'), 'utf8')) as typeof manifest;
    const peers = Object.keys(installed.peerDependencies);
    assert.ok(peers.includes('express') && peers.includes('better-sqlite3'));
    for (const peer of peers) assert.equal(installed.peerDependenciesMeta?.[peer]?.optional, true, `peer ${peer} is not optional`);
    assert.deepEqual(installedByNpm.filter((name) => peers.includes(name) || name.startsWith('@fastify/')), [], `npm installed ${installedByNpm.join(', ')}`);
    assert.doesNotMatch(install.stderr, /EBADENGINE/);
  });

  it('loads every subpath with its exports from ESM (.mjs) and CJS (.cjs), resolved from the installed package', async () => {
    for (const loader of ['load.mjs', 'load.cjs']) {
      const result = await node([loader, JSON.stringify(Object.keys(SUBPATHS))]);
      assert.equal(result.code, 0, shown(result));
      const { resolved, exports } = JSON.parse(result.stdout) as { resolved: string; exports: Record<string, Record<string, string>> };
      assert.ok((resolved.startsWith('file:') ? fileURLToPath(resolved) : resolved).startsWith(`${pkg}/`), `${loader}: oncely resolved to ${resolved}`);
      for (const [subpath, names] of Object.entries(SUBPATHS)) {
        for (const name of names) assert.equal(exports[subpath]?.[name], 'function', `${loader}: ${subpath} lacks ${name}`);
      }
    }
  });

  it('imports every Node built-in with the node: prefix (node:test has no other name)', () => {
    const code = filesUnder(join(pkg, 'dist')).filter((file) => /\.c?js$/.test(file));
    assert.ok(code.length > 10);
    for (const file of code) {
      const source = readFileSync(join(pkg, 'dist', file), 'utf8');
      for (const [, specifier] of source.matchAll(/(?:\bfrom\s*|\bimport\s*\(\s*|\brequire\s*\(\s*|^import\s*)["']([^"']+)["']/gm)) {
        assert.ok(specifier!.startsWith('node:') || !isBuiltin(`node:${specifier}`), `${file} imports "${specifier}" without node:`);
      }
    }
  });

  it('loads no database driver or framework from the root entry, and only its own driver from a store entry', async () => {
    const driversLoadedBy = async (subpath: string): Promise<string[]> => {
      const script = `require(${JSON.stringify(subpath)});
        const loaded = Object.keys(require.cache).map((p) => p.match(/node_modules\\/((?:@[^/]+\\/)?[^/]+)\\//)?.[1]).filter(Boolean);
        console.log(JSON.stringify([...new Set(loaded)].filter((m) => ${JSON.stringify(DRIVERS)}.includes(m))));`;
      const result = await node(['-e', script]);
      assert.equal(result.code, 0, shown(result));
      return JSON.parse(result.stdout) as string[];
    };
    assert.deepEqual(await driversLoadedBy('oncely'), []);
    assert.deepEqual(await driversLoadedBy('oncely/postgres'), []);
    assert.deepEqual(await driversLoadedBy('oncely/redis'), []);
    assert.deepEqual(await driversLoadedBy('oncely/sqlite'), ['better-sqlite3']);
    assert.deepEqual(await driversLoadedBy('oncely/fetch'), []);
    assert.deepEqual(await driversLoadedBy('oncely/express'), [], 'adapters load no framework: the app passes its own');
    assert.deepEqual(await driversLoadedBy('oncely/fastify'), []);
    assert.deepEqual(await driversLoadedBy('oncely/hono'), [], 'the Hono adapter only needs Hono types');
    assert.deepEqual(await driversLoadedBy('oncely/client'), []);
    assert.deepEqual(await driversLoadedBy('oncely/sqs'), [], 'the SQS adapter loads @aws-sdk/client-sqs on first use, from the app');
    assert.deepEqual(await driversLoadedBy('oncely/mqtt'), [], 'the MQTT adapter takes your client: it needs only mqtt types');
  });

  it('oncely/client imports no Node module, so it runs in browsers, Bun and Deno', () => {
    const seen = new Set<string>();
    const visit = (file: string): void => {
      if (seen.has(file)) return;
      seen.add(file);
      const source = readFileSync(file, 'utf8');
      assert.doesNotMatch(source, /from ['"]node:|require\(|\bprocess\.|\bBuffer\./, `${file} uses a Node API`);
      for (const [, relativePath] of source.matchAll(/from ['"](\.[^'"]+)['"]/g)) visit(join(dirname(file), relativePath!));
    };
    visit(join(pkg, 'dist/client.js'));
    assert.ok(seen.size >= 1);
  });

  it('installs the oncely command, which runs as a program and reaches a store through the installed package', async () => {
    const bin = join(app, 'node_modules/.bin/oncely');
    const version = await run(bin, ['--version'], { cwd: app });
    assert.equal(version.code, 0, shown(version));
    assert.equal(version.stdout.trim(), manifest.version);
    const help = await run(bin, ['--help'], { cwd: app });
    for (const command of ['check', 'inspect', 'release', 'purge', 'stats']) assert.match(help.stdout, new RegExp(`\\n  ${command} `));
    const created = await node(['--input-type=module', '-e', "import { SqliteStore } from 'oncely/sqlite'; await new SqliteStore({ path: 'cli.db' }).close();"]);
    assert.equal(created.code, 0, shown(created));
    const stats = await run(bin, ['stats', '--store', 'sqlite:cli.db', '--json'], { cwd: app });
    assert.equal(stats.code, 0, shown(stats));
    assert.deepEqual(JSON.parse(stats.stdout), { store: 'sqlite:cli.db (table oncely_records)', inProgress: 0, completed: 0, lapsed: 0 });
  });

  it('runs the store contract from oncely/testing on plain node --test (SqliteStore, across processes)', async () => {
    const result = await node(['--test', '--test-reporter=tap', 'store-contract.test.mjs']);
    assert.equal(result.code, 0, shown(result));
    const counts = tapCounts(result.stdout);
    assert.equal(counts.fail, 0, shown(result));
    assert.ok(counts.pass >= 10, shown(result));
    assert.match(result.stdout, /^\s*ok \d+ - .*across 2 processes/m, 'the child processes loaded processModule under plain node');
  });

  it('runs the HTTP conformance suite from oncely/testing on plain node --test (Hono on a real port)', async () => {
    const result = await node(['--test', '--test-reporter=tap', 'http-conformance.test.mjs']);
    assert.equal(result.code, 0, shown(result));
    const counts = tapCounts(result.stdout);
    assert.equal(counts.fail, 0, shown(result));
    assert.ok(counts.pass >= 10, shown(result));
  });

  // This repository's TypeScript, with skipLibCheck off so oncely's own declarations are checked too.
  describe('tsc', { concurrency: true }, () => {
    const tsc = (project: string): Promise<Run> => node([join(REPO, 'node_modules/typescript/bin/tsc'), '-p', project]);

    it('type-checks a consumer with module nodenext, from ESM (.mts) and CJS (.cts)', async () => {
      const result = await tsc('tsconfig.json');
      assert.equal(result.code, 0, shown(result));
    });

    it('type-checks a consumer with module commonjs and moduleResolution node10 (typesVersions)', async () => {
      const result = await tsc('tsconfig.node10.json');
      assert.equal(result.code, 0, shown(result));
    });
  });

  it('ships its MIT LICENSE', () => {
    assert.match(readFileSync(join(pkg, 'LICENSE'), 'utf8'), /^MIT License\n\nCopyright \(c\) 2026 oncely contributors\n/);
  });

  it('ships no file that names the build machine’s directories (source maps included)', () => {
    const files = filesUnder(pkg);
    assert.ok(files.some((file) => file.endsWith('.cjs.map')) && files.some((file) => file.endsWith('.js.map')));
    for (const file of files) assert.ok(!readFileSync(join(pkg, file), 'utf8').includes(REPO), `${file} contains ${REPO}`);
  });

  it('links from its README and docs only to files it ships or to absolute URLs', () => {
    const documents = filesUnder(pkg).filter((file) => file.endsWith('.md'));
    assert.ok(documents.includes('README.md'));
    for (const document of documents) {
      const text = readFileSync(join(pkg, document), 'utf8');
      for (const [, target] of text.matchAll(/\]\(([^)\s]+)\)/g)) {
        if (/^(?:[a-z]+:|#)/i.test(target!)) continue;
        const path = join(dirname(join(pkg, document)), target!.replace(/#.*$/, ''));
        assert.ok(existsSync(path), `${document} links ${target}, which the package does not contain`);
      }
    }
  });

  it('names its repository, homepage, issue tracker and keywords', () => {
    const installed = JSON.parse(readFileSync(join(pkg, 'package.json'), 'utf8')) as Record<string, unknown>;
    assert.deepEqual(installed.repository, { type: 'git', url: 'git+https://github.com/oncely/oncely.git' });
    assert.equal(installed.homepage, 'https://github.com/oncely/oncely#readme');
    assert.deepEqual(installed.bugs, { url: 'https://github.com/oncely/oncely/issues' });
    assert.ok(Array.isArray(installed.keywords) && installed.keywords.includes('idempotency'));
    assert.equal(installed.license, 'MIT');
  });
});
