/**
 * The welcome-email worker that crashes after the send and before the ack.
 *
 * A JetStream work queue carries "send welcome email to user 42" (`Nats-Msg-Id:
 * welcome-email:user-42`). Worker 1, a child process running `oncely/nats` on a SqliteStore
 * file, calls the email provider with `context.downstreamKey` as its idempotency key; the
 * provider sends; worker 1 is SIGKILLed before its ack. The producer also publishes the same
 * message a second time. JetStream redelivers to worker 2, another process: oncely runs the
 * handler once more after worker 1's lease (the documented at-least-once case), with the same
 * downstreamKey, so the provider sends nothing the second time; the second copy is acked
 * without running. Counts are read afterwards from the SQLite files and JetStream, and the
 * program exits 1 unless one email went out and every message ended acked.
 *
 * Needs nats-server with JetStream on nats://127.0.0.1:4222 (NATS_URL to change it).
 * Run: npm run example:welcome-email
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { conclude, fail, killChildren, startChild, tell, waitFor, type ChildLine } from '../support/child-consumers.js';
import { JetStreamQueue } from '../support/jetstream.js';
import { FakeEmailProvider } from './email-provider.js';

const WORKER = fileURLToPath(new URL('./worker.ts', import.meta.url));
const MSG_ID = 'welcome-email:user-42';
const BODY = JSON.stringify({ userId: 42, task: 'send welcome email to user 42' });
const RECIPIENT = 'user-42@example.com';

const directory = mkdtempSync(join(tmpdir(), 'oncely-welcome-email-'));
const workerDb = join(directory, 'worker.db');
const providerDb = join(directory, 'email-provider.db');
const stream = `welcome_email_${randomUUID().slice(0, 8)}`;
const durable = 'welcome-emails';

const queue = await JetStreamQueue.connect(stream, durable);

console.log('oncely example: a welcome-email worker killed after the send, before the ack.');
console.log(`JetStream stream ${stream} (a work queue), consumer ${durable}; SQLite files in ${directory}\n`);

try {
  // A work queue with a 100 ms dedupe window: it stands in for a producer that retries later than
  // JetStream's window (2 min by default), so the same message is stored twice. AckWait 1 s.
  await queue.create({ workQueue: true });

  const worker1 = await startWorker('worker 1', 'crash-after-send');
  const seq1 = await publish();
  tell(`producer: published "${MSG_ID}" (stream message ${seq1})`);
  await worker1.line('sent');
  await worker1.kill();
  tell('worker 1: SIGKILLed after the email went out, before its ack');

  const seq2 = await publish();
  tell(`producer: published "${MSG_ID}" again, same Nats-Msg-Id, after the dedupe window (stream message ${seq2})`);
  const worker2 = await startWorker('worker 2', 'run');
  await waitFor('both stream messages acked', async () => (await queue.ackedThrough()) >= seq2);
  await worker2.stop();

  // What the databases and JetStream hold.
  const log = new Database(workerDb, { readonly: true });
  const runs = log.prepare<[], { worker: string; downstream_key: string }>('SELECT worker, downstream_key FROM handler_runs ORDER BY rowid').all();
  const record = log.prepare<[string], { state: string }>('SELECT state FROM oncely_records WHERE key = ?').get(MSG_ID);
  log.close();
  const provider = new FakeEmailProvider(providerDb);
  const emails = provider.sentTo(RECIPIENT);
  provider.close();
  const acked = await queue.ackedThrough();
  const keys = new Set(runs.map((run) => run.downstream_key));

  console.log();
  const rows: [string, string, string, boolean][] = [
    ['handler runs (table handler_runs)', String(runs.length), '2', runs.length === 2],
    ['emails sent (the provider\'s table emails)', String(emails), '1', emails === 1],
    ['messages acked (JetStream ack floor)', `${acked} of ${seq2}`, `${seq2} of ${seq2}`, acked === seq2],
  ];
  printTable(rows);
  console.log(`\nhandler runs: ${runs.map((run) => run.worker).join(', ')}, with ${keys.size === 1 ? 'one downstreamKey' : `${keys.size} different downstreamKeys`} (${[...keys].map((key) => `${key.slice(0, 16)}…`).join(', ')})`);
  console.log(`oncely record ${MSG_ID}: ${record?.state ?? 'missing'}`);

  const ok = rows.every((row) => row[3]) && keys.size === 1 && record?.state === 'completed';
  if (ok) {
    console.log('Two runs is the documented at-least-once on a crash: worker 1 died after the send and before storing');
    console.log('its outcome. The provider deduplicated the repeat by its idempotency key, context.downstreamKey.');
  }
  conclude(ok, 'one welcome email, every message acked');
} catch (error) {
  fail(error);
} finally {
  killChildren();
  await queue.destroy();
  rmSync(directory, { recursive: true, force: true });
}

/** Publishes the task until JetStream stores it as a message of its own; returns its stream sequence. */
function publish(): Promise<number> {
  return queue.publish('welcome', BODY, MSG_ID);
}

/** Starts a worker process; resolves once it consumes. Its lines are told as they come. */
function startWorker(name: string, mode: 'crash-after-send' | 'run') {
  const role = mode === 'run' ? 'handles messages' : 'will be killed after its first send';
  return startChild({ name, file: WORKER, args: [stream, durable, workerDb, providerDb, name, mode], role, describe });
}

function describe(line: ChildLine): string {
  switch (line.event) {
    case 'sent':
      return line.sent
        ? `stream message ${String(line.seq)}, delivery ${String(line.delivery)}: handler ran, the provider sent email #${String(line.emailId)} (idempotency key ${String(line.downstreamKey).slice(0, 16)}…)`
        : `stream message ${String(line.seq)}, delivery ${String(line.delivery)}: handler ran again; the provider had sent email #${String(line.emailId)} for that key and sent nothing`;
    case 'processed':
      return `${String(line.key)} (delivery ${String(line.delivery)}): outcome stored, acked`;
    case 'duplicate':
      return `${String(line.key)} (delivery ${String(line.delivery)}): already processed, acked without running`;
    case 'in_progress':
      return `${String(line.key)} (delivery ${String(line.delivery)}): claimed by worker 1 until its lease lapses, handed back for 1.5 s`;
    default:
      return `${String(line.key)} (delivery ${String(line.delivery)}): ${line.event}`;
  }
}

function printTable(rows: [string, string, string, boolean][]): void {
  const header = ['counted after the run', 'count', 'expected'];
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => String(row[column]).length)) + 3);
  const line = (cells: string[]) => cells.map((cell, column) => cell.padEnd(widths[column]!)).join('');
  console.log(line(header).trimEnd());
  for (const [what, count, expected, ok] of rows) console.log(`${line([what, count, expected])}${ok ? '✓' : '✗'}`);
}
