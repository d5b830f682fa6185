/**
 * The SQL of the SQLite store, for one table name. Every statement that decides on expiry
 * reads SQLite's own clock (`NOW_MS`), so processes with skewed or patched clocks agree.
 */

/**
 * SQLite's clock in epoch ms. `julianday('now')` is kept in whole milliseconds internally and
 * is fixed for the duration of one statement; ROUND undoes the floating-point conversion.
 */
export const NOW_MS = "CAST(ROUND((julianday('now') - 2440587.5) * 86400000) AS INTEGER)";

/** The columns a record is read back from, in the shape of `RecordRow`. */
const RECORD_COLUMNS = ['state', 'fingerprint', 'created_at', 'expires_at', 'outcome', 'namespace', 'scope', '"key"'];

/** Only the `state = 'in_progress'` row of the current holder may be changed by its token. */
const HELD = "id = @id AND token = @token AND state = 'in_progress'";

export function schemaSql(table: string): string {
  // A rowid table rather than WITHOUT ROWID: outcomes reach 1 MiB, and SQLite advises
  // WITHOUT ROWID only for rows well under a page. The CHECKs make a completed record
  // without an outcome (or an in-progress one with) impossible, whatever wrote the file.
  return `
    CREATE TABLE IF NOT EXISTS "${table}" (
      id TEXT NOT NULL PRIMARY KEY,
      state TEXT NOT NULL CHECK (state IN ('in_progress', 'completed')),
      fingerprint TEXT NOT NULL,
      token TEXT NOT NULL,
      created_at INTEGER NOT NULL,
      expires_at INTEGER NOT NULL,
      outcome BLOB CHECK ((state = 'completed') = (outcome IS NOT NULL)),
      namespace TEXT,
      scope TEXT,
      "key" TEXT
    );
    CREATE INDEX IF NOT EXISTS "${table}_expires_at" ON "${table}" (expires_at);`;
}

export function statementsSql(table: string) {
  const t = `"${table}"`;
  return {
    /** Always one row: the clock, and the existing record's columns (NULL when absent). */
    readForClaim: `SELECT n.now, ${RECORD_COLUMNS.map((column) => `r.${column}`).join(', ')} FROM (SELECT ${NOW_MS} AS now) AS n LEFT JOIN ${t} AS r ON r.id = ?`,
    /** Creates the record, or takes over a lapsed one (the caller checked it lapsed). */
    takeOver: `INSERT INTO ${t} (id, state, fingerprint, token, created_at, expires_at, outcome, namespace, scope, "key")
      VALUES (@id, 'in_progress', @fingerprint, @token, @now, @now + @leaseMs, NULL, @namespace, @scope, @key)
      ON CONFLICT (id) DO UPDATE SET state = excluded.state, fingerprint = excluded.fingerprint, token = excluded.token,
        created_at = excluded.created_at, expires_at = excluded.expires_at, outcome = NULL,
        namespace = excluded.namespace, scope = excluded.scope, "key" = excluded."key"`,
    complete: `UPDATE ${t} SET state = 'completed', outcome = @outcome, expires_at = ${NOW_MS} + @retentionMs WHERE ${HELD}`,
    extend: `UPDATE ${t} SET expires_at = ${NOW_MS} + @leaseMs WHERE ${HELD}`,
    release: `DELETE FROM ${t} WHERE ${HELD}`,
    get: `SELECT ${RECORD_COLUMNS.join(', ')} FROM ${t} WHERE id = ? AND expires_at > ${NOW_MS}`,
    delete: `DELETE FROM ${t} WHERE id = ?`,
    /** Operator statements: they scan the table. NOW_MS is fixed for one statement, so the counts agree. */
    stats: `SELECT now AS now_ms,
        COUNT(*) FILTER (WHERE state = 'in_progress' AND expires_at > now) AS in_progress,
        COUNT(*) FILTER (WHERE state = 'completed' AND expires_at > now) AS completed,
        COUNT(*) FILTER (WHERE expires_at <= now) AS lapsed,
        MIN(created_at) FILTER (WHERE state = 'in_progress' AND expires_at > now) AS oldest_in_progress_ms
      FROM (SELECT ${NOW_MS} AS now) LEFT JOIN ${t} ON true`,
    findByKey: `SELECT id, ${RECORD_COLUMNS.join(', ')} FROM ${t}
      WHERE "key" = @key AND (@namespace IS NULL OR namespace = @namespace) AND (@scope IS NULL OR scope = @scope) AND expires_at > ${NOW_MS}
      ORDER BY created_at DESC LIMIT @limit`,
    forceRelease: `DELETE FROM ${t} WHERE id = ? AND state = 'in_progress' AND expires_at > ${NOW_MS}`,
    // One bounded batch, oldest first along the expires_at index.
    purge: `DELETE FROM ${t} WHERE id IN (SELECT id FROM ${t} WHERE expires_at <= ${NOW_MS} ORDER BY expires_at LIMIT ?)`,
  };
}
