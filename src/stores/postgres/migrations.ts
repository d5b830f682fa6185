/**
 * The PostgreSQL schema as append-only, named migrations. `store.migrate()` applies the ones
 * a database lacks; `postgresMigrationSql()` gives the same SQL to users who run their own
 * migration tool (`migrations/postgres/*.sql` is that output for the default names).
 *
 * Never edit a shipped migration: add the next one. Every statement is `IF NOT EXISTS` so
 * SQL applied by hand is not re-created when `migrate()` runs later.
 */
import { createHash } from 'node:crypto';
import { InvalidOptionError } from '../../core/errors.js';

/** Where the records live. */
export interface TableOptions {
  /** Table of records. Default `'oncely_records'`. */
  table?: string;
  /** Schema holding the table; it must already exist. Default `'public'`. */
  schema?: string;
}

/** Quoted, validated names of everything the schema creates. */
export interface TableNames {
  /** Schema-qualified records table, quoted. */
  records: string;
  /** Schema-qualified migration bookkeeping table (`<table>_migrations`), quoted. */
  migrations: string;
  /** Unquoted `schema.table`, used to key the migration advisory lock. */
  lockName: string;
  /** Quoted name of the index on `expires_at` (indexes live in the table's schema). */
  expiresIndex: string;
  /**
   * Unquoted LISTEN/NOTIFY channel announcing settled records (see `settleChannel`). Quote
   * it for `LISTEN`; pass it as is to `pg_notify()`, which takes a string and keeps the case.
   */
  channel: string;
}

export interface Migration {
  /** Stable name recorded in `<table>_migrations`; also the shipped file's base name. */
  name: string;
  sql(names: TableNames): string;
}

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** PostgreSQL truncates identifiers past 63 bytes. */
const MAX_IDENTIFIER = 63;
const INDEX_SUFFIX = '_expires_at_idx';

function identifier(what: string, value: unknown, maxLength: number): string {
  if (typeof value !== 'string' || !IDENTIFIER.test(value) || value.length > maxLength) {
    throw new InvalidOptionError(`${what} must match ${String(IDENTIFIER)} and be at most ${maxLength} characters, got ${JSON.stringify(value)}`);
  }
  return value;
}

/** Validates the names, then quotes them; quoting keeps their case as written. */
export function tableNames(options: TableOptions = {}): TableNames {
  const schema = identifier('schema', options.schema ?? 'public', MAX_IDENTIFIER);
  // Room for the longest derived name, so PostgreSQL never truncates one into a collision.
  const table = identifier('table', options.table ?? 'oncely_records', MAX_IDENTIFIER - INDEX_SUFFIX.length);
  return {
    records: `"${schema}"."${table}"`,
    migrations: `"${schema}"."${table}_migrations"`,
    lockName: `${schema}.${table}`,
    expiresIndex: `"${table}${INDEX_SUFFIX}"`,
    channel: settleChannel(schema, table),
  };
}

const CHANNEL_PREFIX = 'oncely_settled_';

/**
 * `oncely_settled_<table>` in the `public` schema, `oncely_settled_<schema>.<table>` in
 * another; past 63 characters (where PostgreSQL would truncate LISTEN's identifier but
 * `pg_notify()` refuses the name) the end is replaced by a hash of the whole name. Two
 * tables that shared a channel would only wake each other's waiters early, which is harmless.
 */
function settleChannel(schema: string, table: string): string {
  const name = `${CHANNEL_PREFIX}${schema === 'public' ? table : `${schema}.${table}`}`;
  if (name.length <= MAX_IDENTIFIER) return name;
  const hash = createHash('sha256').update(`${schema}.${table}`).digest('hex').slice(0, 16);
  return `${name.slice(0, MAX_IDENTIFIER - hash.length - 1)}_${hash}`;
}

export const MIGRATIONS: readonly Migration[] = [
  {
    name: '0001_oncely_records',
    sql: (n) => `-- oncely: idempotency records (migration 0001_oncely_records)
CREATE TABLE IF NOT EXISTS ${n.records} (
  id text PRIMARY KEY,
  state text NOT NULL CHECK (state IN ('in_progress', 'completed')),
  fingerprint text NOT NULL,
  token text NOT NULL,
  created_at timestamptz NOT NULL,
  expires_at timestamptz NOT NULL,
  outcome bytea,
  namespace text,
  scope text,
  key text,
  CHECK ((state = 'completed') = (outcome IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS ${n.expiresIndex} ON ${n.records} (expires_at);
`,
  },
  {
    name: '0002_settle_waiters',
    sql: (n) => `-- oncely: records someone waits on (migration 0002_settle_waiters)
-- Only their settles send a NOTIFY: PostgreSQL serialises the commits of notifying transactions.
ALTER TABLE ${n.records} ADD COLUMN IF NOT EXISTS waited boolean NOT NULL DEFAULT false;
`,
  },
];

/**
 * The whole schema as plain SQL, every migration in order, for your own migration tool.
 * For the default names it equals the files in `migrations/postgres/`.
 *
 * @example
 * ```ts
 * fs.writeFileSync('migrations/0042_oncely.sql', postgresMigrationSql({ schema: 'app' }));
 * ```
 */
export function postgresMigrationSql(options: TableOptions = {}): string {
  const names = tableNames(options);
  return MIGRATIONS.map((migration) => migration.sql(names)).join('\n');
}
