/**
 * What `oncely check` observes and concludes. Observations (`Reply`) come from the sender
 * (`http.ts`); verdicts (`verdicts.ts`) turn them into `ProbeResult`s; `report.ts` prints them.
 */

/** PASS: does what the draft asks. WARN: works, but not as the draft or Stripe would. FAIL: a
 * duplicate execution, a replay that differs, or a reused key not refused. SKIP: not observed. */
export type Verdict = 'pass' | 'warn' | 'fail' | 'skip';

/** One response as the client saw it, read to the end. */
export interface Reply {
  /** HTTP status; 0 when no response arrived (then `error` says why). */
  status: number;
  /** Response headers, names in lower case; repeated ones joined with ", ". */
  headers: Record<string, string>;
  body: Buffer;
  /** `performance.now()` when the request was started. */
  at: number;
  /** Milliseconds from `at` until the response head arrived (or the error). */
  headMs: number;
  /** Milliseconds from `at` until the response ended (or the error). */
  ms: number;
  /** Why no response arrived: `timeout after 10000 ms`, `connect ECONNREFUSED 127.0.0.1:3000`. */
  error?: string;
}

export type ProbeId = 'missing-key' | 'malformed-key' | 'replay' | 'other-body' | 'concurrent' | 'in-flight';

/** One request of a probe, as the report shows it. */
export interface RequestSummary {
  /** What this request was: `first`, `retry`, `other body`, `empty key`, `#3`. */
  label: string;
  status: number;
  ms: number;
  /** The resource the response names (an id or a Location), when it names one. */
  resource?: string;
  /** The value of an `Idempotent-Replayed` response header, when present. */
  replayed?: string;
  error?: string;
}

export interface ProbeResult {
  id: ProbeId;
  title: string;
  verdict: Verdict;
  /** One sentence: what the server did. */
  observed: string;
  /** Further facts, one per line (statuses, ids, the derived body, timings). */
  details: string[];
  /** What the IETF draft (or Stripe, where the draft is silent) expects. */
  expected: string;
  /** Where `expected` comes from. */
  source: string;
  /** Executions inferred from the responses (see `resources.ts`). */
  executions: number;
  requests: RequestSummary[];
}

export interface CheckTarget {
  url: string;
  method: string;
  headerName: string;
  /** `quoted`: keys sent as sf-strings (`"…"`); `bare`: as tokens. */
  keyStyle: 'quoted' | 'bare';
  concurrency: number;
}

export type Outcome = 'pass' | 'warn' | 'fail' | 'inconclusive';

export interface CheckReport {
  target: CheckTarget;
  probes: ProbeResult[];
  /** `fail` when a probe failed; `inconclusive` when no probe that sends a key could be checked. */
  outcome: Outcome;
  exitCode: 0 | 1 | 2;
  summary: { passed: number; warnings: number; failed: number; skipped: number; executions: number };
  /** The one-line statement of how executions were inferred. */
  inference: string;
}
