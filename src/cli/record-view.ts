/**
 * What operators see of a record: times as dates and ages, and the stored outcome described
 * (an HTTP response's status, a function's result or error) rather than dumped as bytes.
 */
import { readFunctionOutcome, type FunctionOutcome } from '../core/function-outcome.js';
import type { IdempotencyRecord, StoreStats } from '../core/types.js';
import { decodeStoredResponse } from '../http/stored-response.js';
import type { Colors } from './color.js';

export type OutcomeView =
  | { kind: 'http-response'; status: number; bodyBytes: number | null; contentType?: string }
  | { kind: 'function-result' }
  | { kind: 'function-error'; error: string }
  | { kind: 'bytes'; size: number };

export interface RecordView {
  id: string;
  state: IdempotencyRecord['state'];
  namespace?: string;
  scope?: string;
  key?: string;
  fingerprint: string;
  createdAt: string;
  ageMs: number;
  /** Lease end while in progress, retention end once completed. */
  expiresAt: string;
  expiresInMs: number;
  outcome?: OutcomeView;
}

/** Recognises the two outcome layouts oncely writes: the HTTP one (`stored-response.ts`) and `idempotent()`'s JSON. */
export function describeOutcome(bytes: Uint8Array): OutcomeView {
  try {
    const response = decodeStoredResponse(bytes);
    if (Number.isInteger(response.status) && response.status >= 100 && response.status <= 599) {
      const contentType = response.headers.find(([name]) => name === 'content-type')?.[1];
      return { kind: 'http-response', status: response.status, bodyBytes: response.body?.byteLength ?? null, ...(contentType ? { contentType } : {}) };
    }
  } catch {
    // not an HTTP response
  }
  try {
    // Any JSON parses; only idempotent()'s shape counts.
    const parsed: Partial<FunctionOutcome> | null = readFunctionOutcome(bytes);
    if (parsed?.ok === true) return { kind: 'function-result' };
    if (parsed?.ok === false) return { kind: 'function-error', error: `${String(parsed.error?.name)}: ${String(parsed.error?.message)}` };
  } catch {
    // not idempotent()'s JSON either
  }
  return { kind: 'bytes', size: bytes.byteLength };
}

/** `now` is the local clock: the store's clock is not read for a single record. */
export function recordView(record: IdempotencyRecord, now = Date.now()): RecordView {
  return {
    id: record.id,
    state: record.state,
    ...record.meta,
    fingerprint: record.fingerprint,
    createdAt: new Date(record.createdAt).toISOString(),
    ageMs: now - record.createdAt,
    expiresAt: new Date(record.expiresAt).toISOString(),
    expiresInMs: record.expiresAt - now,
    ...(record.state === 'completed' ? { outcome: describeOutcome(record.outcome) } : {}),
  };
}

/** `1h 4m`, `3m 12s`, `850 ms`. */
export function duration(ms: number): string {
  const abs = Math.abs(ms);
  if (abs < 1000) return `${Math.round(abs)} ms`;
  const units: [string, number][] = [['d', 86_400_000], ['h', 3_600_000], ['m', 60_000], ['s', 1000]];
  const parts: string[] = [];
  let rest = abs;
  for (const [unit, size] of units) {
    if (rest >= size && parts.length < 2) {
      parts.push(`${Math.floor(rest / size)}${unit}`);
      rest %= size;
    } else if (parts.length > 0) break;
  }
  return parts.join(' ');
}

function outcomeText(outcome: OutcomeView): string {
  switch (outcome.kind) {
    case 'http-response':
      return `HTTP ${outcome.status}, ${outcome.bodyBytes === null ? 'body not stored (over maxStoredBytes)' : `${outcome.bodyBytes}-byte body`}${outcome.contentType ? ` (${outcome.contentType})` : ''}`;
    case 'function-result':
      return 'a function result (idempotent())';
    case 'function-error':
      return `a stored error (idempotent()): ${outcome.error}`;
    case 'bytes':
      return `${outcome.size} bytes`;
  }
}

export function formatRecord(view: RecordView, pc: Colors): string {
  const state = view.state === 'in_progress' ? pc.yellow('in progress') : pc.green('completed');
  const ending = view.state === 'in_progress' ? 'lease ends' : 'kept until';
  const rows: [string, string][] = [
    ['state', state],
    ['key', view.key ?? pc.dim('(not stored)')],
    ['namespace', view.namespace ?? pc.dim('(none)')],
    ['scope', view.scope ?? pc.dim('(none)')],
    ['id', view.id],
    ['fingerprint', view.fingerprint],
    ['created', `${view.createdAt} (${duration(view.ageMs)} ago)`],
    [ending, `${view.expiresAt} (${view.expiresInMs >= 0 ? `in ${duration(view.expiresInMs)}` : `${duration(view.expiresInMs)} ago`})`],
  ];
  if (view.outcome) rows.push(['stored', outcomeText(view.outcome)]);
  return rows.map(([label, value]) => `  ${pc.dim(label.padEnd(12))}${value}`).join('\n');
}

export function formatStats(stats: StoreStats, where: string, pc: Colors): string {
  const oldest = stats.oldestInProgressAt === undefined
    ? pc.dim('none')
    : `${new Date(stats.oldestInProgressAt).toISOString()} (${duration(stats.now - stats.oldestInProgressAt)} ago)`;
  return [
    pc.bold(where),
    `  ${pc.dim('in progress'.padEnd(20))}${stats.inProgress}`,
    `  ${pc.dim('completed'.padEnd(20))}${stats.completed}`,
    `  ${pc.dim('lapsed, not purged'.padEnd(20))}${stats.lapsed}`,
    `  ${pc.dim('oldest in progress'.padEnd(20))}${oldest}`,
  ].join('\n');
}
