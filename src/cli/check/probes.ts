/**
 * The probes: what `oncely check` sends. Each probe uses its own fresh keys (and, without
 * `--data`, its own body), so no probe sees another's record. The verdicts are in `verdicts.ts`.
 */
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { defaultBody, deriveOtherBody } from './bodies.js';
import type { CheckConfig } from './config.js';
import { EXPECTATIONS, INFERENCE_NOTE } from './expectations.js';
import { createSender, type Sender, type SendHooks } from './http.js';
import { judgeConcurrent, judgeInFlight, judgeMalformedKeys, judgeMissingKey, judgeOtherBody, judgeReplay, type MalformedCase } from './verdicts.js';
import type { CheckReport, ProbeId, ProbeResult, Reply } from './types.js';

/** No answer at all to the first request: the command exits 2. */
export class UnreachableError extends Error {
  override name = 'UnreachableError';
}

export interface ProgressHooks {
  start(index: number, total: number, title: string): void;
  end(result: ProbeResult): void;
}

/** A key value as sent: an sf-string (`"…"`, the draft) or a bare token (`--key-style bare`). */
type KeyValue = string | string[] | undefined;

class Probing {
  /** How long the replay probe's first request took: the in-flight probe times its retry from it. */
  latencyMs = 50;
  private readonly sender: Sender;

  constructor(readonly config: CheckConfig) {
    this.sender = createSender(config.url, config.timeoutMs);
  }

  newKey(): string {
    return `oncely-check-${randomUUID()}`;
  }

  format(key: string): string {
    return this.config.keyStyle === 'quoted' ? `"${key}"` : key;
  }

  body(): Buffer | undefined {
    if (!this.config.hasBody) return undefined;
    return this.config.data ?? defaultBody();
  }

  send(key: KeyValue, body: Buffer | undefined, hooks?: SendHooks): Promise<Reply> {
    const headers: Record<string, string | string[]> = {};
    for (const [name, value] of this.config.headers) headers[name] = value;
    if (this.config.contentType !== undefined && body !== undefined) headers['content-type'] = this.config.contentType;
    if (key !== undefined) headers[this.config.headerName] = key;
    return this.sender.send({ method: this.config.method, headers, body }, hooks);
  }

  close(): void {
    this.sender.close();
  }
}

async function missingKey(probing: Probing): Promise<ProbeResult> {
  const reply = await probing.send(undefined, probing.body());
  if (reply.status === 0) throw new UnreachableError(`cannot reach ${probing.config.url.href}: ${reply.error ?? 'no response'}`);
  return judgeMissingKey(reply);
}

async function malformedKeys(probing: Probing): Promise<ProbeResult> {
  const quotes = probing.config.keyStyle === 'quoted' ? 2 : 0;
  const variants: [string, KeyValue][] = [
    ['empty value', ''],
    ['10,000 characters', probing.format(probing.newKey().padEnd(10_000 - quotes, 'k'))],
    ['control character (TAB)', probing.format(`oncely-check\t${randomUUID()}`)],
    ['non-ASCII (é)', probing.format(`oncely-ch\u00e9ck-${randomUUID()}`)],
    ['two header fields', [probing.format(probing.newKey()), probing.format(probing.newKey())]],
  ];
  const cases: MalformedCase[] = [];
  for (const [name, key] of variants) cases.push({ name, reply: await probing.send(key, probing.body()) });
  return judgeMalformedKeys(cases);
}

async function replay(probing: Probing): Promise<ProbeResult> {
  const key = probing.format(probing.newKey());
  const body = probing.body();
  const first = await probing.send(key, body);
  if (first.status >= 200 && first.status < 300) probing.latencyMs = first.headMs;
  const second = await probing.send(key, body);
  return judgeReplay(first, second);
}

async function otherBody(probing: Probing): Promise<ProbeResult> {
  const body = probing.body();
  if (body === undefined) {
    const { title, expected, source } = EXPECTATIONS['other-body'];
    return { id: 'other-body', title, verdict: 'skip', observed: `Not checked: ${probing.config.method} requests carry no body.`, details: [], expected, source, executions: 0, requests: [] };
  }
  const key = probing.format(probing.newKey());
  const other = probing.config.otherData !== undefined
    ? { body: probing.config.otherData, description: 'the body given with --other-data' }
    : deriveOtherBody(body, probing.config.contentType);
  const first = await probing.send(key, body);
  return judgeOtherBody(first, await probing.send(key, other.body), other.description);
}

async function concurrent(probing: Probing): Promise<ProbeResult> {
  const key = probing.format(probing.newKey());
  const body = probing.body();
  const replies = await Promise.all(Array.from({ length: probing.config.concurrency }, () => probing.send(key, body)));
  return judgeConcurrent(replies);
}

/**
 * The retry leaves a third of the replay probe's response time after the first request was
 * written (at least 1 ms, at most 1 s): late enough for the server to have started the first,
 * early enough to arrive while it runs on an endpoint that takes a while.
 */
async function inFlight(probing: Probing): Promise<ProbeResult> {
  const key = probing.format(probing.newKey());
  const body = probing.body();
  let sent!: () => void;
  const written = new Promise<void>((resolve) => (sent = resolve));
  const first = probing.send(key, body, { onSent: () => sent() });
  await Promise.race([written, first]);
  await sleep(Math.min(1000, Math.max(1, Math.round(probing.latencyMs / 3))));
  const retry = probing.send(key, body);
  return judgeInFlight(await first, await retry);
}

const PROBES: [ProbeId, (probing: Probing) => Promise<ProbeResult>][] = [
  ['missing-key', missingKey],
  ['malformed-key', malformedKeys],
  ['replay', replay],
  ['other-body', otherBody],
  ['concurrent', concurrent],
  ['in-flight', inFlight],
];

/** The probes that send a key and need the endpoint to accept the request. */
const KEYED: readonly ProbeId[] = ['replay', 'other-body', 'concurrent', 'in-flight'];

/** Runs every probe, one after the other, and sums them up. Throws `UnreachableError`. */
export async function runCheck(config: CheckConfig, progress?: ProgressHooks): Promise<CheckReport> {
  const probing = new Probing(config);
  const probes: ProbeResult[] = [];
  try {
    for (const [index, [id, run]] of PROBES.entries()) {
      progress?.start(index + 1, PROBES.length, EXPECTATIONS[id].title);
      const result = await run(probing);
      progress?.end(result);
      probes.push(result);
    }
  } finally {
    probing.close();
  }
  const count = (verdict: ProbeResult['verdict']): number => probes.filter((probe) => probe.verdict === verdict).length;
  const summary = {
    passed: count('pass'),
    warnings: count('warn'),
    failed: count('fail'),
    skipped: count('skip'),
    executions: probes.reduce((sum, probe) => sum + probe.executions, 0),
  };
  const inconclusive = probes.every((probe) => !KEYED.includes(probe.id) || probe.verdict === 'skip');
  const outcome = summary.failed > 0 ? 'fail' : inconclusive ? 'inconclusive' : summary.warnings > 0 ? 'warn' : 'pass';
  const exitCode = outcome === 'fail' ? 1 : outcome === 'inconclusive' ? 2 : 0;
  const target = { url: config.url.href, method: config.method, headerName: config.headerName, keyStyle: config.keyStyle, concurrency: config.concurrency };
  return { target, probes, outcome, exitCode, summary, inference: INFERENCE_NOTE };
}
