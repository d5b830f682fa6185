/**
 * A consumer process for cross-process.test.ts: consumes the durable consumer named by argv with
 * a SqliteStore shared with the other processes, and appends one JSON line per handler run to
 * the effects file.
 *
 * argv: <mode> <stream> <consumer> <sqlite path> <effects file> <leaseMs>. Modes:
 *   crash — after its first side effect, prints "effect" and never returns (the parent SIGKILLs it).
 *   run   — handles messages until SIGTERM, then closes gracefully and exits.
 */
import { appendFileSync } from 'node:fs';
import { jetstream } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { SqliteStore } from '../../stores/sqlite/index.js';
import { consumeIdempotently } from './index.js';

const [mode, stream, durable, database, effects, leaseMs] = process.argv.slice(-6) as [string, string, string, string, string, string];

const nc = await connect({ servers: 'nats://127.0.0.1:4222' });
const store = new SqliteStore({ path: database });
const consumer = await consumeIdempotently(
  await jetstream(nc).consumers.get(stream, durable),
  async (msg, { downstreamKey, key }) => {
    appendFileSync(effects, `${JSON.stringify({ pid: process.pid, key, body: msg.string(), downstreamKey })}\n`);
    if (mode === 'crash') {
      process.stdout.write('effect\n');
      await new Promise(() => setInterval(() => undefined, 1_000));
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  },
  { store, leaseMs: Number(leaseMs), concurrency: 2 },
);
process.once('SIGTERM', () => {
  void consumer
    .close()
    .then(() => nc.close())
    .then(() => process.exit(0));
});
process.stdout.write('ready\n');
