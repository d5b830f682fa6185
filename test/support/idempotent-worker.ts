/**
 * A child process for the cross-process tests of `idempotent()`. Builds the store named by
 * ONCELY_WORKER_STORE on the same server/file as the parent, then, on "go" from stdin, calls
 * a wrapped function that appends one line to ONCELY_WORKER_EFFECTS per execution.
 *
 * argv: <mode> <key>. Modes:
 *   race  — 10 concurrent calls, waiting for the first result; prints the results as JSON.
 *   hang  — one call whose work never ends (the parent SIGKILLs this process mid-work).
 */
import { appendFileSync } from 'node:fs';
import { idempotent } from '../../src/core/idempotent.js';
import { storeFromEnv } from './store-from-env.js';

const env = process.env as Record<string, string>;
const [mode, key] = process.argv.slice(-2) as [string, string];

const store = storeFromEnv();
const placeOrder = idempotent(
  async (orderKey: string) => {
    appendFileSync(env.ONCELY_WORKER_EFFECTS!, `${process.pid} ${orderKey}\n`);
    if (mode === 'hang') {
      process.stdout.write('working\n');
      await new Promise(() => setInterval(() => undefined, 1000));
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
    return { orderId: `order-${process.pid}`, at: new Date() };
  },
  { store, namespace: 'orders', key: (orderKey) => orderKey, leaseMs: Number(env.ONCELY_WORKER_LEASE_MS ?? 30_000), onInProgress: { waitMs: 10_000 } },
);

process.stdout.write('ready\n');
await new Promise((resolve) => process.stdin.once('data', resolve));
const calls = mode === 'race' ? 10 : 1;
const results = await Promise.all(Array.from({ length: calls }, () => placeOrder(key)));
process.stdout.write(`${JSON.stringify(results.map((r) => ({ orderId: r.orderId, at: r.at.toISOString(), isDate: r.at instanceof Date })))}\n`);
process.exit(0);
