/**
 * Verdicts: pure functions from what the server answered to PASS / WARN / FAIL / SKIP. Only what
 * the draft requires decides a FAIL: a duplicate execution, a replay that differs, a key reused
 * with another body that is not refused. Other departures from the draft are warnings; what
 * could not be observed is skipped.
 */
import { EXPECTATIONS } from './expectations.js';
import { countExecutions, describeBodyDifference, isSuccess, resourceLabel, type Executions } from './resources.js';
import type { ProbeId, ProbeResult, Reply, RequestSummary, Verdict } from './types.js';

export function summarize(label: string, reply: Reply): RequestSummary {
  const summary: RequestSummary = { label, status: reply.status, ms: Math.round(reply.ms) };
  const resource = isSuccess(reply) ? resourceLabel(reply) : undefined;
  if (resource !== undefined) summary.resource = resource;
  if (reply.headers['idempotent-replayed'] !== undefined) summary.replayed = reply.headers['idempotent-replayed'];
  if (reply.error !== undefined) summary.error = reply.error;
  return summary;
}

function result(id: ProbeId, verdict: Verdict, observed: string, details: string[], requests: RequestSummary[], executions: number): ProbeResult {
  const { title, expected, source } = EXPECTATIONS[id];
  return { id, title, verdict, observed, details, expected, source, executions, requests };
}

/** `201`, or `no answer (timeout after 10000 ms)`. */
export const statusOf = (reply: Reply): string => (reply.status === 0 ? `no answer (${reply.error ?? 'no response'})` : String(reply.status));

/** Statuses that say the request never reached the idempotency logic: credentials, URL, method. */
const SETUP_STATUSES = new Set([401, 403, 404, 405, 407]);

/** No answer, rate limited, unavailable: says nothing about the key. */
const TRANSIENT = new Set([0, 429, 503]);

/** Why a probe could not run, with what to change. */
export function setupHint(reply: Reply): string {
  if (reply.status === 0) return `no answer: ${reply.error ?? 'no response'}`;
  if ([401, 403, 407].includes(reply.status)) return `${reply.status}: pass credentials with -H 'Authorization: ...'`;
  if ([404, 405].includes(reply.status)) return `${reply.status}: check the URL and the method (-X)`;
  if ([400, 415, 422].includes(reply.status)) return `${reply.status}: check the body (-d) and its Content-Type (-H)`;
  return `${reply.status}: the endpoint did not accept the request`;
}

/** SKIP result for a probe whose first keyed request was not accepted. */
function notAccepted(id: ProbeId, reply: Reply, requests: RequestSummary[]): ProbeResult {
  return result(id, 'skip', `Not checked: the first keyed request got ${statusOf(reply)}.`, [`why: ${setupHint(reply)}`], requests, 0);
}

export function judgeMissingKey(reply: Reply): ProbeResult {
  const requests = [summarize('no key', reply)];
  const executions = countExecutions([reply]).count;
  const kind = reply.headers['content-type']?.split(';')[0];
  const details = kind ? [`content-type: ${kind}`] : [];
  if (reply.status === 400) return result('missing-key', 'pass', 'Refused the request without a key: 400.', details, requests, 0);
  if (isSuccess(reply)) {
    return result('missing-key', 'warn', `Key optional: ran the request without a key (${reply.status}).`,
      ['a client that forgets the key is not protected from duplicates', ...details], requests, executions);
  }
  if (reply.status === 0 || SETUP_STATUSES.has(reply.status)) return result('missing-key', 'skip', `Not checked: ${setupHint(reply)}.`, details, requests, 0);
  const what = reply.status >= 500 ? 'a server error' : 'another status';
  return result('missing-key', 'warn', `Answered ${reply.status} (${what}); the draft expects 400.`, details, requests, 0);
}

export interface MalformedCase {
  /** What was wrong with the key: `empty value`, `10,000 characters`. */
  name: string;
  reply: Reply;
}

export function judgeMalformedKeys(cases: readonly MalformedCase[]): ProbeResult {
  const requests = cases.map(({ name, reply }) => summarize(name, reply));
  const executions = countExecutions(cases.map(({ reply }) => reply)).count;
  const judged = cases.filter(({ reply }) => !SETUP_STATUSES.has(reply.status));
  const line = cases.map(({ name, reply }) => `${name} → ${statusOf(reply)}`).join(', ');
  if (judged.length === 0) return result('malformed-key', 'skip', `Not checked: ${setupHint(cases[0]!.reply)}.`, [line], requests, 0);
  // 431 Request Header Fields Too Large refuses the 10,000-character key as well as a 400 does.
  const refused = (reply: Reply): boolean => reply.status === 400 || reply.status === 431;
  const accepted = judged.filter(({ reply }) => isSuccess(reply)).map(({ name }) => name);
  const errored = judged.filter(({ reply }) => reply.status >= 500 || reply.status === 0).map(({ name }) => name);
  const other = judged.filter(({ reply }) => !refused(reply) && !isSuccess(reply) && reply.status < 500 && reply.status !== 0).map(({ name }) => name);
  const details = [line];
  // A list that names every case says no more than the line above.
  const some = (names: string[]): boolean => names.length > 0 && names.length < cases.length;
  if (some(accepted)) details.push(`accepted (ran as a valid key or as no key): ${accepted.join(', ')}`);
  if (some(errored)) details.push(`server error or no answer: ${errored.join(', ')}`);
  if (some(other)) details.push(`refused with a status other than 400: ${other.join(', ')}`);
  if (accepted.length + errored.length + other.length === 0) return result('malformed-key', 'pass', `Refused every malformed key (${judged.length} of ${cases.length} judged).`, details, requests, 0);
  const observed = accepted.length > 0 ? `Accepted ${accepted.length} malformed key${accepted.length > 1 ? 's' : ''}.`
    : errored.length > 0 ? `Did not refuse ${errored.length} malformed key${errored.length > 1 ? 's' : ''} cleanly (5xx or no answer).`
      : 'Refused every malformed key, not always with 400.';
  return result('malformed-key', 'warn', observed, details, requests, executions);
}

/** The same key and body twice, one after the other. */
export function judgeReplay(first: Reply, second: Reply): ProbeResult {
  const requests = [summarize('first', first), summarize('retry', second)];
  if (!isSuccess(first)) return notAccepted('replay', first, requests);
  const executions = countExecutions([first, second]);
  const details = [`first: ${first.status} in ${Math.round(first.ms)} ms${named(first)}; retry: ${statusOf(second)} in ${Math.round(second.ms)} ms${named(second)}`];
  const marker = second.headers['idempotent-replayed'];
  if (marker !== undefined) details.push(`the retry carries Idempotent-Replayed: ${marker}`);
  details.push(...inferenceNote(executions));
  if (executions.count > 1) {
    return result('replay', 'fail', `Duplicate execution: the retry ran again (${executions.labels.join(', ')}).`, details, requests, executions.count);
  }
  if (TRANSIENT.has(second.status)) {
    return result('replay', 'warn', `The retry got ${statusOf(second)}, a transient answer, so no replay could be compared.`, details, requests, executions.count);
  }
  const differences: string[] = [];
  if (second.status !== first.status) differences.push(`status ${first.status} then ${statusOf(second)}`);
  if (isSuccess(second) || second.status === first.status) {
    if (!second.body.equals(first.body)) differences.push(describeBodyDifference(first.body, second.body));
    const [was, now] = [first.headers.location, second.headers.location];
    if (was !== undefined && now !== undefined && was !== now) differences.push(`Location ${was} then ${now}`);
  }
  if (differences.length > 0) {
    const no = isSuccess(second) ? 'The replay differs' : 'No replay';
    return result('replay', 'fail', `${no}: ${differences.join('; ')}.`, details, requests, executions.count);
  }
  const warnings: string[] = [];
  if (first.headers.location !== undefined && second.headers.location === undefined) warnings.push('the replay has no Location header');
  if (first.headers['content-type'] !== second.headers['content-type']) warnings.push(`Content-Type ${first.headers['content-type'] ?? '(none)'} then ${second.headers['content-type'] ?? '(none)'}`);
  if (warnings.length > 0) return result('replay', 'warn', `Replayed the status and body, but ${warnings.join(' and ')}.`, details, requests, 1);
  if (executions.from === 'bodies') return result('replay', 'warn', `Same status and body twice, but ${UNTELLABLE}.`, details, requests, 1);
  return result('replay', 'pass', `Replayed the first response: same status, same ${first.body.length} body bytes${first.headers.location ? ', same Location' : ''}.`, details, requests, 1);
}

/** The same key with the body, then with another body. */
export function judgeOtherBody(first: Reply, other: Reply, derived: string): ProbeResult {
  const requests = [summarize('first', first), summarize('other body', other)];
  if (!isSuccess(first)) return notAccepted('other-body', first, requests);
  const executions = countExecutions([first, other]);
  const details = [`other body: ${derived}`, `first: ${first.status}${named(first)}; other body: ${statusOf(other)}${named(other)}`, ...inferenceNote(executions)];
  if (other.status === 422) return result('other-body', 'pass', 'Refused the reused key with 422.', details, requests, executions.count);
  if (isSuccess(other)) {
    const observed = executions.count > 1 ? `Not refused: ran the other body as a new request (${executions.labels[1]}).`
      : 'Not refused: answered the other body with the same response as the first, as if it were the same request.';
    return result('other-body', 'fail', observed, details, requests, executions.count);
  }
  if (other.status === 0) return result('other-body', 'warn', `No answer to the other body: ${other.error ?? 'no response'}.`, details, requests, executions.count);
  const what = other.status >= 500 ? 'a server error, not a refusal the client can act on' : 'refused, not with 422';
  return result('other-body', 'warn', `Answered ${other.status}: ${what}.`, details, requests, executions.count);
}

/** N requests with one key and one body, sent at once. */
export function judgeConcurrent(replies: readonly Reply[]): ProbeResult {
  const requests = replies.map((reply, index) => summarize(`#${index + 1}`, reply));
  const histogram = statusHistogram(replies);
  const executions = countExecutions(replies);
  const details = [`statuses: ${histogram}`, ...inferenceNote(executions)];
  if (executions.count > 1) {
    details.push(`resources: ${executions.labels.join(', ')}`);
    return result('concurrent', 'fail', `Duplicate execution: ${replies.length} requests with one key ran ${executions.count} times.`, details, requests, executions.count);
  }
  const winner = replies.find(isSuccess);
  if (winner === undefined) return result('concurrent', 'skip', `Not checked: no request was accepted (${histogram}).`, [`why: ${setupHint(replies[0]!)}`], requests, 0);
  details.push(`resource: ${executions.labels[0]}`);
  const replays = replies.filter((reply) => isSuccess(reply) && reply !== winner);
  const conflicts = replies.filter((reply) => reply.status === 409).length;
  const others = replies.filter((reply) => !isSuccess(reply) && reply.status !== 409);
  const differing = replays.filter((reply) => !reply.body.equals(winner.body) || reply.status !== winner.status);
  const observed = `One execution; ${conflicts} got 409, ${replays.length} got the first result${others.length > 0 ? `, ${others.length} got another answer` : ''}.`;
  if (differing.length > 0) return result('concurrent', 'fail', `${observed} But ${differing.length} replay${differing.length > 1 ? 's differ' : ' differs'} from the first response.`, details, requests, 1);
  if (others.length > 0) return result('concurrent', 'warn', observed, [...details, 'the draft expects 409 (or the first result) for a duplicate in progress'], requests, 1);
  if (replays.length > 0 && executions.from === 'bodies') return result('concurrent', 'warn', `${replays.length + 1} got the same 2xx response, but ${UNTELLABLE}.`, details, requests, 1);
  return result('concurrent', 'pass', observed, details, requests, 1);
}

/** A request, and its retry sent while the first had not answered yet. */
export function judgeInFlight(first: Reply, retry: Reply): ProbeResult {
  const requests = [summarize('first', first), summarize('retry', retry)];
  const sentAfter = Math.max(0, Math.round(retry.at - first.at));
  const answeredAfter = Math.round(first.headMs);
  const details = [`retry sent ${sentAfter} ms after the first; the first answered after ${answeredAfter} ms`,
    `first: ${statusOf(first)}${named(first)}; retry: ${statusOf(retry)}${named(retry)}`];
  const executions = countExecutions([first, retry]);
  details.push(...inferenceNote(executions));
  if (executions.count > 1) return result('in-flight', 'fail', `Duplicate execution: the retry ran again (${executions.labels.join(', ')}).`, details, requests, executions.count);
  // Whichever of the two the server took first, the other one was the duplicate.
  const [winner, duplicate] = isSuccess(first) ? [first, retry] : [retry, first];
  if (!isSuccess(winner)) return notAccepted('in-flight', first, requests);
  if (retry.at >= first.at + first.headMs) {
    return result('in-flight', 'skip', `Not observed: the endpoint answered in ${answeredAfter} ms, before the retry was sent.`, details, requests, executions.count);
  }
  if (duplicate.status === 409) return result('in-flight', 'pass', 'Refused the duplicate in flight with 409.', details, requests, 1);
  if (isSuccess(duplicate)) {
    if (duplicate.status === winner.status && duplicate.body.equals(winner.body)) {
      if (executions.from === 'bodies') return result('in-flight', 'warn', `The same 2xx response twice, but ${UNTELLABLE}.`, details, requests, 1);
      return result('in-flight', 'pass', 'Answered the duplicate with the first result (it waited, or the first had just finished).', details, requests, 1);
    }
    return result('in-flight', 'fail', `The replay differs: ${describeBodyDifference(winner.body, duplicate.body)}.`, details, requests, 1);
  }
  return result('in-flight', 'warn', `Answered the duplicate ${statusOf(duplicate)}; the draft expects 409.`, details, requests, 1);
}

/** `1×201, 9×409`, most frequent first. */
export function statusHistogram(replies: readonly Reply[]): string {
  const counts = new Map<string, number>();
  for (const reply of replies) {
    const status = reply.status === 0 ? 'no answer' : String(reply.status);
    counts.set(status, (counts.get(status) ?? 0) + 1);
  }
  return [...counts].sort((a, b) => b[1] - a[1]).map(([status, count]) => `${count}×${status}`).join(', ');
}

/** Why identical responses that name no resource prove nothing. */
const UNTELLABLE = 'it names no resource, so a second execution would look the same';

/** Said when no response named a resource, so only body bytes told executions apart. */
const BODIES_ONLY = 'no resource id in the 2xx responses: executions told apart by body bytes only (identical bodies count as one)';
const inferenceNote = (executions: Executions): string[] => (executions.from === 'bodies' ? [BODIES_ONLY] : []);

const named = (reply: Reply): string => {
  const label = isSuccess(reply) ? resourceLabel(reply) : undefined;
  return label === undefined ? '' : ` (${label})`;
};
