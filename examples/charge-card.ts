/**
 * Five retries of one "charge card" call, one charge.
 *
 * The checkout page retries: a double click, a timeout, a load balancer. Every retry carries the
 * same checkout id, so `idempotent()` runs `chargeCard` once and hands every retry the first
 * result. The charges are counted from the card ledger, not assumed.
 *
 * Run: npm run example
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { executionContext, idempotent } from 'oncely';
import { SqliteStore } from 'oncely/sqlite';

const database = new Database(join(mkdtempSync(join(tmpdir(), 'oncely-example-')), 'shop.db'));
database.exec('CREATE TABLE card_ledger (charge_id INTEGER PRIMARY KEY, checkout_id TEXT, amount_cents INTEGER, provider_key TEXT)');
const store = new SqliteStore({ database });

interface Checkout {
  checkoutId: string;
  amountCents: number;
}

/** The side effect: a row in the card ledger (think: a call to the payment provider). */
async function chargeCard(checkout: Checkout): Promise<{ chargeId: number; chargedAt: Date }> {
  // The provider gets a key that is the same on every retry, so it could dedupe too.
  const providerKey = executionContext().downstreamKey;
  await new Promise((resolve) => setTimeout(resolve, 50)); // the provider is slow
  const { lastInsertRowid } = database
    .prepare('INSERT INTO card_ledger (checkout_id, amount_cents, provider_key) VALUES (?, ?, ?)')
    .run(checkout.checkoutId, checkout.amountCents, providerKey);
  return { chargeId: Number(lastInsertRowid), chargedAt: new Date() };
}

const charge = idempotent(chargeCard, {
  store,
  key: (checkout) => checkout.checkoutId,
  onInProgress: { waitMs: 5_000 }, // a concurrent retry waits for the first result
});

const checkout: Checkout = { checkoutId: 'checkout-7f3a', amountCents: 4_999 };

// Two at once (a double click), then three more retries one after another.
const doubleClick = await Promise.all([charge(checkout), charge(checkout)]);
const later = [await charge(checkout), await charge(checkout), await charge(checkout)];
[...doubleClick, ...later].forEach((result, attempt) => console.log(`attempt ${attempt + 1}: charge #${result.chargeId} at ${result.chargedAt.toISOString()}`));

const { charges } = database.prepare('SELECT count(*) AS charges FROM card_ledger').get() as { charges: number };
console.log(`\n5 attempts, ${charges} charge${charges === 1 ? '' : 's'} in the card ledger`);
await store.close();
database.close();
process.exit(charges === 1 ? 0 : 1);
