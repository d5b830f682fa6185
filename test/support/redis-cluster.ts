/**
 * A throwaway Redis Cluster for tests: 3 masters, no replicas, `redis-server` child processes
 * on free loopback ports, joined with `redis-cli --cluster create`. `startRedisCluster()`
 * returns the ports once `CLUSTER INFO` says `cluster_state:ok` on every node; `stop()` kills
 * the servers and removes their directory.
 *
 * Without `redis-server` (or `redis-cli`) the caller skips outside CI and fails under CI, as
 * with the other services (see services.ts).
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface RedisCluster {
  ports: number[];
  stop(): Promise<void>;
}

/** `undefined` when redis-server and redis-cli are installed; otherwise the reason to skip (throws under CI). */
export async function skipUnlessRedisServer(): Promise<string | undefined> {
  const missing: string[] = [];
  for (const binary of ['redis-server', 'redis-cli']) {
    try {
      await run(binary, ['--version']);
    } catch {
      missing.push(binary);
    }
  }
  if (missing.length === 0) return undefined;
  const reason = `${missing.join(' and ')} not found on PATH, needed to start a Redis Cluster`;
  if (process.env.CI === 'true') throw new Error(`${reason}; CI requires it (see README "Running the tests")`);
  console.log(`# skipping Redis Cluster tests: ${reason}`);
  return reason;
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/** Three ports from a random high range, each with its cluster bus port (+10000) free too. */
async function freePorts(count: number): Promise<number[]> {
  const ports: number[] = [];
  for (let attempt = 0; ports.length < count && attempt < 200; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * 25_000);
    if (ports.includes(port) || ports.includes(port + 10_000) || ports.includes(port - 10_000)) continue;
    if ((await portFree(port)) && (await portFree(port + 10_000))) ports.push(port);
  }
  if (ports.length < count) throw new Error('no free loopback ports for a Redis Cluster');
  return ports;
}

async function cli(port: number, ...args: string[]): Promise<string> {
  const { stdout } = await run('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args], { timeout: 10_000 });
  return stdout;
}

async function until(what: string, deadline: number, check: () => Promise<boolean>): Promise<void> {
  for (;;) {
    if (await check().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`Redis Cluster: timed out waiting for ${what}`);
    await sleep(100);
  }
}

function killAll(children: ChildProcess[]): Promise<void> {
  return Promise.all(children.map((child) => new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill('SIGKILL');
  }))).then(() => undefined);
}

async function startOnce(directory: string): Promise<RedisCluster> {
  const ports = await freePorts(3);
  const children = ports.map((port) => spawn('redis-server', [
    '--port', String(port),
    '--cluster-enabled', 'yes',
    '--cluster-config-file', join(directory, `nodes-${port}.conf`),
    '--save', '',
    '--appendonly', 'no',
    '--daemonize', 'no',
    '--bind', '127.0.0.1',
    '--dir', directory,
  ], { stdio: 'ignore' }));
  const stop = () => killAll(children);
  try {
    const deadline = Date.now() + 15_000;
    for (const [index, port] of ports.entries()) {
      await until(`redis-server on ${port}`, deadline, async () => {
        if (children[index]!.exitCode !== null) throw new Error(`redis-server on ${port} exited`);
        return (await cli(port, 'PING')).trim() === 'PONG';
      });
    }
    await run('redis-cli', ['--cluster', 'create', ...ports.map((port) => `127.0.0.1:${port}`), '--cluster-replicas', '0', '--cluster-yes'], { timeout: 20_000 });
    for (const port of ports) {
      await until(`cluster_state:ok on ${port}`, deadline, async () => (await cli(port, 'CLUSTER', 'INFO')).includes('cluster_state:ok'));
    }
    return { ports, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** Starts the cluster, retrying on new ports when one was taken meanwhile. */
export async function startRedisCluster(): Promise<RedisCluster> {
  const directory = mkdtempSync(join(tmpdir(), 'oncely-redis-cluster-'));
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const cluster = await startOnce(directory);
      return {
        ports: cluster.ports,
        stop: async () => {
          await cluster.stop();
          rmSync(directory, { recursive: true, force: true });
        },
      };
    } catch (error) {
      lastError = error;
    }
  }
  rmSync(directory, { recursive: true, force: true });
  throw lastError;
}
