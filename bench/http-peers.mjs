#!/usr/bin/env node
// npm run bench:http [-- harness flags]: the peers harness (../shared/peers) with oncely's
// Express and Fastify contenders beside bare Express, bare Fastify and the other libraries.
// The harness folder is read-only, so it is copied to bench/.peers and installed there once.
// Needs Redis on 127.0.0.1:6379 (the harness uses DB 9). Default: --contenders express,fastify;
// pass e.g. `-- --contenders express,fastify,node-idempotency --rounds 3` to change it.
import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const bench = dirname(fileURLToPath(import.meta.url));
const root = resolve(bench, '..');
const source = resolve(process.env.ONCELY_PEERS_SOURCE ?? join(root, '..', 'shared', 'peers'));
const copy = join(bench, '.peers');

if (!existsSync(join(source, 'run.mjs'))) {
  console.error(`The peers harness is not at ${source}; set ONCELY_PEERS_SOURCE to its folder.`);
  process.exit(2);
}
if (!existsSync(join(copy, 'node_modules'))) {
  cpSync(source, copy, { recursive: true, filter: (path) => !path.includes('node_modules') && !path.endsWith('.logs') });
  execFileSync('npm', ['ci', '--no-audit', '--no-fund'], { cwd: copy, stdio: 'inherit' });
}
execFileSync('npm', ['run', 'build', '--silent'], { cwd: root, stdio: 'inherit' });

const extra = process.argv.slice(2);
const contenders = extra.includes('--contenders') ? [] : ['--contenders', 'express,fastify'];
const plugins = ['oncely-express.mjs', 'oncely-fastify.mjs'].flatMap((file) => ['--plugin', join(bench, 'peers', file)]);
const run = spawnSync(process.execPath, ['run.mjs', ...contenders, ...plugins, ...extra], { cwd: copy, stdio: 'inherit', env: { ...process.env, ONCELY_PEERS_DIR: copy } });
process.exit(run.status ?? 1);
