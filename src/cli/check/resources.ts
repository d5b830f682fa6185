/**
 * Inferring executions from responses. A black-box check cannot count what the server ran, so
 * it looks at what each 2xx response names:
 *
 * 1. the `Location` header;
 * 2. the ids in a JSON body: at the top level, the fields named `id`, or ending in `_id` or
 *    `Id` (`order_id`, `orderId`), whose value is a string or a number; if there are none at
 *    the top level, the same fields one level down (`{"order": {"id": …}}`, `{"data": {"id": …}}`).
 *    Correlation fields (`request_id`, `trace_id`, `span_id`, `correlation_id` and their
 *    camelCase forms) are not resource ids and are ignored.
 *
 * Two 2xx responses come from the same execution when they share a Location or the same body
 * ids; a response that names neither joins one with the same body bytes. The number of
 * executions is the number of groups so linked. When no response names a resource, only
 * identical bodies link, so each distinct 2xx body counts as one execution (and identical
 * bodies from two executions would count as one).
 */
import type { Reply } from './types.js';

const ID_FIELD = /^(?:id|.+_id|.*[a-z0-9]Id)$/;
const NOT_A_RESOURCE = /^(?:request|trace|span|correlation)(?:_id|Id)$/i;

/** `true` for a 2xx status. */
export const isSuccess = (reply: Reply): boolean => reply.status >= 200 && reply.status < 300;

/** The id fields of one JSON object level, as sorted `name=value` pairs. */
function idsOf(value: unknown, prefix = ''): string[] {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return [];
  const ids: string[] = [];
  for (const [name, field] of Object.entries(value)) {
    if (!ID_FIELD.test(name) || NOT_A_RESOURCE.test(name)) continue;
    if (typeof field === 'string' || typeof field === 'number') ids.push(`${prefix}${name}=${String(field)}`);
  }
  return ids.sort();
}

/** The resource ids a JSON body names (rule 2 above), or `[]`. */
export function bodyIds(body: Buffer): string[] {
  if (body.length === 0 || body.length > 1024 * 1024) return [];
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString('utf8'));
  } catch {
    return [];
  }
  const top = idsOf(parsed);
  if (top.length > 0 || parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) return top;
  return Object.entries(parsed).flatMap(([name, nested]) => idsOf(nested, `${name}.`)).sort();
}

/** A short name for the resource a response names, for the report: its Location, else its
 * body `id` (`id=42`), else all its body ids (`order.id=42 order.customer_id=7`). */
export function resourceLabel(reply: Reply): string | undefined {
  if (reply.headers.location !== undefined) return reply.headers.location;
  const ids = bodyIds(reply.body);
  if (ids.length === 0) return undefined;
  return ids.find((pair) => pair.startsWith('id=')) ?? ids.join(' ');
}

/** Whether any 2xx reply names a resource (a Location or a body id). */
export function namesResources(replies: readonly Reply[]): boolean {
  return replies.some((reply) => isSuccess(reply) && (reply.headers.location !== undefined || bodyIds(reply.body).length > 0));
}

export interface Executions {
  /** How many executions the 2xx replies show. */
  count: number;
  /** One label per execution (its resource, or `body <n bytes>` when none is named). */
  labels: string[];
  /** What linked them: `ids` when some reply named a resource, `bodies` when only bytes could. */
  from: 'ids' | 'bodies' | 'none';
}

const bytesOf = (reply: Reply): string => `bytes:${reply.body.toString('base64')}`;

/** Groups the 2xx replies into executions (see the module comment). */
export function countExecutions(replies: readonly Reply[]): Executions {
  const successes = replies.filter(isSuccess);
  const parent = successes.map((_, index) => index);
  const find = (index: number): number => (parent[index] === index ? index : (parent[index] = find(parent[index]!)));
  const firstWith = new Map<string, number>();
  const link = (index: number, name: string): void => {
    const seen = firstWith.get(name);
    if (seen === undefined) firstWith.set(name, index);
    else parent[find(index)] = find(seen);
  };
  const names = successes.map((reply) => {
    const ids = bodyIds(reply.body);
    return [...(ids.length > 0 ? [`ids:${ids.join('&')}`] : []), ...(reply.headers.location !== undefined ? [`location:${reply.headers.location}`] : [])];
  });
  // Replies that name a resource link by name only: identical bytes under two Locations are two
  // executions. A reply that names none links by its bytes, to a named reply or another unnamed one.
  successes.forEach((reply, index) => {
    for (const name of names[index]!) link(index, name);
    if (names[index]!.length > 0 && !firstWith.has(bytesOf(reply))) firstWith.set(bytesOf(reply), index);
  });
  successes.forEach((reply, index) => {
    if (names[index]!.length === 0) link(index, bytesOf(reply));
  });
  const roots = [...new Set(successes.map((_, index) => find(index)))];
  const labels = roots.map((root) => resourceLabel(successes[root]!) ?? `body of ${successes[root]!.body.length} bytes`);
  return { count: roots.length, labels, from: successes.length === 0 ? 'none' : namesResources(successes) ? 'ids' : 'bodies' };
}

/** The first difference between two bodies, for the report: `bodies differ at byte 12 ("a" vs "b")`. */
export function describeBodyDifference(first: Buffer, second: Buffer): string {
  const length = Math.min(first.length, second.length);
  let at = 0;
  while (at < length && first[at] === second[at]) at++;
  if (at === length && first.length === second.length) return 'bodies are identical';
  const excerpt = (body: Buffer): string => JSON.stringify(body.subarray(at, at + 24).toString('utf8'));
  return `bodies differ from byte ${at} (${first.length} vs ${second.length} bytes: ${excerpt(first)} vs ${excerpt(second)})`;
}
