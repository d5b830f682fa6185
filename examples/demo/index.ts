/**
 * One checkout, five ways it gets sent more than once.
 *
 * Users double-click, clients time out and retry, load balancers retry, networks drop
 * responses. A checkout must still create one order, charge the card once and send one email.
 * This demo starts a shop (Express + SQLite in a temp dir, no servers to install) with an
 * unprotected `POST /orders-unsafe` and an oncely-protected `POST /orders`, plays each scenario
 * against both with the same well-behaved retrying client, and counts what the shop's database
 * holds afterwards. It exits 0 only if oncely made exactly one order, charge and email every time.
 *
 * Run: npm run demo
 */
import { createColors } from 'picocolors';
import { scenarios, type AttemptResult } from './chaos-client.js';
import { startShop, type ShopCounts } from './shop.js';

const color = createColors(process.stdout.isTTY === true && !process.env.NO_COLOR);

interface Row {
  scenario: string;
  unprotected: ShopCounts;
  oncely: ShopCounts;
  unprotectedAttempts: AttemptResult[];
  oncelyAttempts: AttemptResult[];
}

const started = performance.now();
const shop = await startShop();
console.log('oncely demo: one checkout sent more than once, five ways, to two routes of one shop.');
console.log('POST /orders-unsafe has no protection; POST /orders has idempotency({ store, required: true }).');
console.log("Counts are rows in the shop's SQLite database (in a temp dir), read after each scenario.\n");

const rows: Row[] = [];
try {
  for (const scenario of scenarios) {
    const before = { unprotected: shop.counts('unsafe'), oncely: shop.counts('safe') };
    // Routes are counted apart, so both can be played at once.
    const [unprotectedAttempts, oncelyAttempts] = await Promise.all([scenario.play(shop.url, '/orders-unsafe'), scenario.play(shop.url, '/orders')]);
    // A client that timed out has stopped waiting; the handlers it started may still be running.
    await shop.settled();
    rows.push({
      scenario: scenario.name,
      unprotected: difference(shop.counts('unsafe'), before.unprotected),
      oncely: difference(shop.counts('safe'), before.oncely),
      unprotectedAttempts,
      oncelyAttempts,
    });
  }
} finally {
  await shop.close();
}

const exactlyOnce = (counts: ShopCounts) => counts.orders === 1 && counts.charges === 1 && counts.emails === 1;
const failed = rows.filter((row) => !exactlyOnce(row.oncely));

printTable(['scenario', 'unprotected (orders/charges/emails)', 'oncely (orders/charges/emails)'], rows.map((row) => [row.scenario, triple(row.unprotected), `${triple(row.oncely)}  ${exactlyOnce(row.oncely) ? color.green('✓') : color.red('✗')}`]));
console.log();
printTable(['what the attempts got back', 'unprotected', 'oncely'], rows.map((row) => [row.scenario, summarize(row.unprotectedAttempts), summarize(row.oncelyAttempts)]));
console.log('(409: the first attempt was still running; replay: its 201, sent again with Idempotent-Replayed: true)\n');

const seconds = ((performance.now() - started) / 1_000).toFixed(1);
if (failed.length === 0) {
  console.log(color.green(`oncely: every scenario created exactly one order, one charge and one email. (${seconds} s)`));
} else {
  for (const row of failed) console.log(color.red(`oncely: ${row.scenario} made ${triple(row.oncely)} orders/charges/emails, expected 1 / 1 / 1`));
  process.exitCode = 1;
}

function difference(after: ShopCounts, before: ShopCounts): ShopCounts {
  return { orders: after.orders - before.orders, charges: after.charges - before.charges, emails: after.emails - before.emails };
}

function triple(counts: ShopCounts): string {
  return `${counts.orders} / ${counts.charges} / ${counts.emails}`;
}

function label(result: AttemptResult): string {
  switch (result.kind) {
    case 'created':
      return '201';
    case 'replayed':
      return 'replay';
    case 'in-progress':
      return '409';
    case 'refused':
      return String(result.status);
    case 'timeout':
      return 'timeout';
    case 'network-error':
      return 'connection lost';
  }
}

/** Attempts as "201, 46 × 409, 46 × replay", in the order each answer first appeared. */
function summarize(attempts: AttemptResult[]): string {
  const tally = new Map<string, number>();
  for (const result of attempts) {
    tally.set(label(result), (tally.get(label(result)) ?? 0) + 1);
  }
  return [...tally].map(([label, count]) => (count === 1 ? label : `${count} × ${label}`)).join(', ');
}

/** Left-aligned columns three spaces apart; colour codes take no width. */
function printTable(header: string[], body: string[][]): void {
  const visible = (text: string) => text.replace(/\x1b\[[0-9;]*m/g, ''); // eslint-disable-line no-control-regex
  const widths = header.map((title, column) => Math.max(title.length, ...body.map((cells) => visible(cells[column]!).length)) + 3);
  const line = (cells: string[]) => cells.map((cell, column) => (column === cells.length - 1 ? cell : cell + ' '.repeat(widths[column]! - visible(cell).length))).join('');
  console.log(color.bold(line(header)));
  for (const cells of body) console.log(line(cells));
}
