/**
 * Opens a built-in store from a URL for the operator commands: `sqlite:<path>`,
 * `postgres://…` (or `postgresql://`), `redis://…` (or `rediss://`).
 *
 * The stores and their drivers are loaded on demand through the package's own subpaths, so
 * `oncely check` and an operator on SQLite never need pg or a Redis client installed.
 * Nothing here creates or changes a schema: a missing file or table is an error, not an
 * empty store.
 */
import { existsSync } from 'node:fs';
import type BetterSqlite3 from 'better-sqlite3';
import type pg from 'pg';
import type * as NodeRedis from 'redis';
import type { RedisClient } from 'oncely/redis';
import type { OperableStore } from '../core/types.js';
import { CliError } from './cli-error.js';

/** Where the records are. The command line supplies every part, its defaults included. */
export interface StoreLocation {
  /** The store URL. */
  url: string;
  /** Table of records (SQLite, PostgreSQL). */
  table: string;
  /** PostgreSQL schema. */
  schema: string;
  /** Redis key prefix. */
  prefix: string;
}

export interface OpenedStore {
  store: OperableStore;
  /** Where the records are, for headings: `sqlite:./oncely.db (table oncely_records)`. */
  describe: string;
  close(): Promise<void>;
}

/** Imports an optional peer; a missing one becomes an install hint. */
async function load<T>(specifier: string, purpose: string): Promise<T> {
  try {
    return (await import(specifier)) as T;
  } catch (error) {
    if ((error as { code?: unknown }).code === 'ERR_MODULE_NOT_FOUND' && String((error as Error).message).includes(`'${specifier}'`)) {
      throw new CliError(`${purpose} needs the ${specifier} package: npm install ${specifier}`);
    }
    throw error;
  }
}

/**
 * Makes the store on a client already made, and whatever else `open` does; if any of it fails,
 * `abandon` closes the client, so a store that refuses its options (a bad --prefix or
 * --table) or a server that refuses the connection never leaves it keeping the process alive.
 */
async function closingOnFailure<T>(open: () => Promise<T>, abandon: () => unknown): Promise<T> {
  try {
    return await open();
  } catch (error) {
    try {
      await abandon();
    } catch {
      // Closed already: the error that matters is the one that made us give up.
    }
    throw error;
  }
}

async function openSqlite(location: StoreLocation, path: string): Promise<OpenedStore> {
  if (path === '' || path === ':memory:') throw new CliError('sqlite: needs a file path, e.g. sqlite:./oncely.db');
  if (!existsSync(path)) throw new CliError(`no SQLite file at ${path}`);
  const { default: Database } = await load<{ default: typeof BetterSqlite3 }>('better-sqlite3', 'a sqlite: store');
  const { SqliteStore } = await import('oncely/sqlite');
  const { table } = location;
  // Our own connection, so the store leaves the file's journal mode alone.
  const database = new Database(path, { fileMustExist: true });
  return closingOnFailure(async () => {
    const found = database.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?").get(table);
    if (found === undefined) throw new CliError(`${path} has no table ${table}; name the table with --table`);
    const store = new SqliteStore({ database, table });
    return { store, describe: `sqlite:${path} (table ${table})`, close: async () => { database.close(); } };
  }, () => database.close());
}

async function openPostgres(location: StoreLocation): Promise<OpenedStore> {
  const { default: driver } = await load<{ default: typeof pg }>('pg', 'a postgres:// store');
  const { PostgresStore } = await import('oncely/postgres');
  const pool = new driver.Pool({ connectionString: location.url, max: 2, connectionTimeoutMillis: 5_000 });
  pool.on('error', () => undefined); // an idle connection dropped by the server; the next query reports it
  const { table, schema } = location;
  return closingOnFailure(async () => {
    const store = new PostgresStore({ pool, table, schema });
    return {
      store,
      describe: `${redactPassword(location.url)} (table ${schema}.${table})`,
      close: async () => {
        await store.close();
        await pool.end();
      },
    };
  }, () => pool.end());
}

/**
 * Splits a redis:// URL into the server (the URL without its path) and the database its path
 * names, 0 when it has none. Anything else in the path is refused, as is `?db=` (which ioredis
 * reads and node-redis does not), so that the commands never act on another database.
 */
function redisTarget(url: string): { server: string; database: number } {
  const parsed = new URL(url);
  if (parsed.searchParams.has('db')) throw new CliError("name the Redis database in the URL's path (redis://host:6379/2), not with ?db=");
  const { pathname } = parsed;
  const database = pathname === '' || pathname === '/' ? 0 : /^\/\d+$/.test(pathname) ? Number(pathname.slice(1)) : Number.NaN;
  if (!Number.isSafeInteger(database)) throw new CliError(`the path of a Redis URL is the database number, e.g. redis://host:6379/0; got ${pathname}`);
  parsed.pathname = '';
  return { server: parsed.toString(), database };
}

/** What the Redis commands need from either client library. */
interface RedisConnection {
  client: RedisClient;
  connect(): Promise<unknown>;
  /** SELECT, answered by the server. */
  select(database: number): Promise<unknown>;
  close(): void;
}

async function openRedis(location: StoreLocation): Promise<OpenedStore> {
  const { RedisStore } = await import('oncely/redis');
  const { prefix } = location;
  const describe = `${redactPassword(location.url)} (prefix ${prefix})`;
  const { server, database } = redisTarget(location.url);
  const connection = await redisConnection(server);
  return closingOnFailure(async () => {
    // Before connecting: a prefix the store refuses needs no server.
    const store = new RedisStore({ client: connection.client, prefix });
    try {
      await connection.connect();
    } catch (error) {
      throw new CliError(`cannot reach ${describe}: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
    }
    // Selected here, not by the client from the URL: ioredis reports a refused SELECT only as an
    // 'error' event, and then runs every command on database 0.
    try {
      await connection.select(database);
    } catch (error) {
      throw new CliError(`cannot use database ${database} of ${describe}: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
    }
    return { store, describe, close: async () => { await store.close(); connection.close(); } };
  }, () => connection.close());
}

/** A client for the server at `url` (no database in it), not yet connected: ioredis if installed, else node-redis. */
async function redisConnection(url: string): Promise<RedisConnection> {
  const ioredis = await import('ioredis').catch(() => undefined);
  if (ioredis) {
    // One attempt, no reconnecting: a command-line tool reports an unreachable server and exits.
    const client = new ioredis.Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, connectTimeout: 5_000, retryStrategy: () => null });
    // ioredis rejects connect() with "Connection is closed."; the error event has the cause.
    let lastError: unknown;
    client.on('error', (error) => { lastError = error; });
    return {
      client,
      connect: () => client.connect().catch((error: unknown) => { throw lastError ?? error; }),
      select: (database) => client.select(database),
      close: () => {
        if (client.status !== 'end') client.disconnect();
      },
    };
  }
  const { createClient } = await load<typeof NodeRedis>('redis', 'a redis:// store (or install ioredis)');
  const client = createClient({ url, socket: { connectTimeout: 5_000, reconnectStrategy: false } });
  client.on('error', () => undefined);
  return {
    client,
    connect: () => client.connect(),
    select: (database) => client.select(database),
    // Throws when the client is closed already (a failed connect closes it).
    close: () => client.destroy(),
  };
}

function redactPassword(url: string): string {
  const parsed = new URL(url);
  if (parsed.password) parsed.password = '***';
  return parsed.toString();
}

export async function openStore(location: StoreLocation): Promise<OpenedStore> {
  const { url } = location;
  // sqlite:./a.db, sqlite:/abs/a.db, and the URL-looking sqlite://./a.db, sqlite:///abs/a.db.
  if (url.startsWith('sqlite:')) return openSqlite(location, url.slice('sqlite:'.length).replace(/^\/\//, ''));
  let protocol: string;
  try {
    protocol = new URL(url).protocol;
  } catch {
    throw new CliError(`not a store URL: ${url} (expected sqlite:<path>, postgres://… or redis://…)`);
  }
  if (protocol === 'postgres:' || protocol === 'postgresql:') return openPostgres(location);
  if (protocol === 'redis:' || protocol === 'rediss:') return openRedis(location);
  throw new CliError(`unsupported store URL scheme ${protocol} (expected sqlite:, postgres:, postgresql:, redis: or rediss:)`);
}
