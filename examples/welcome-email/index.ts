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
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect, headers } from '@nats-io/transport-node';
import Database from 'better-sqlite3';
import { FakeEmailProvider } from './email-provider.js';

const NATS_URL = process.env.NATS_URL ?? 'nats://127.0.0.1:4222';
const WORKER = fileURLToPath(new URL('./worker.ts', import.meta.url));
const MSG_ID = 'welcome-email:user-42';
const BODY = JSON.stringify({ userId: 42, task: 'send welcome email to user 42' });
const RECIPIENT = 'user-42@example.com';

interface WorkerLine {
  worker: string;
  event: string;
  [field: string]: unknown;
}

const started = performance.now();
const elapsed = () => `${((performance.now() - started) / 1_000).toFixed(1).padStart(4)} s`;
const tell = (text: string) => console.log(`${elapsed()}  ${text}`);

const directory = mkdtempSync(join(tmpdir(), 'oncely-welcome-email-'));
const workerDb = join(directory, 'worker.db');
const providerDb = join(directory, 'email-provider.db');
const stream = `welcome_email_${randomUUID().slice(0, 8)}`;
const durable = 'welcome-emails';
const children = new Set<ChildProcess>();

const nc = await connect({ servers: NATS_URL });
const jsm = await jetstreamManager(nc);
const js = jetstream(nc);

console.log('oncely example: a welcome-email worker killed after the send, before the ack.');
console.log(`JetStream stream ${stream} (a work queue), consumer ${durable}; SQLite files in ${directory}\n`);

try {
  // A 100 ms dedupe window stands in for a producer that retries its publish later than
  // JetStream's window (2 min by default): the same message is then stored twice.
  await jsm.streams.add({ name: stream, subjects: [`${stream}.>`], retention: 'workqueue' as never, duplicate_window: 100_000_000 });
  // AckWait 1 s: a killed worker's message comes back quickly (it must be at least leaseMs / 2).
  await jsm.consumers.add(stream, { durable_name: durable, ack_policy: 'explicit' as never, ack_wait: 1_000_000_000, max_deliver: -1 });

  let sent!: () => void;
  const firstSend = new Promise<void>((resolve) => (sent = resolve));
  const worker1 = await startWorker('worker 1', 'crash-after-send', (line) => line.event === 'sent' && sent());
  const seq1 = await publish();
  tell(`producer: published "${MSG_ID}" (stream message ${seq1})`);
  await firstSend;
  worker1.kill('SIGKILL');
  await once(worker1, 'exit');
  tell('worker 1: SIGKILLed after the email went out, before its ack');

  const seq2 = await publish();
  tell(`producer: published "${MSG_ID}" again, same Nats-Msg-Id, after the dedupe window (stream message ${seq2})`);
  const worker2 = await startWorker('worker 2', 'run');
  await waitFor('both stream messages acked', async () => {
    const info = await jsm.consumers.info(stream, durable);
    return info.num_pending === 0 && info.num_ack_pending === 0 && info.ack_floor.stream_seq >= seq2;
  });
  const stopped = once(worker2, 'exit');
  worker2.kill('SIGTERM');
  await stopped;

  // What the databases and JetStream hold.
  const log = new Database(workerDb, { readonly: true });
  const runs = log.prepare<[], { worker: string; downstream_key: string }>('SELECT worker, downstream_key FROM handler_runs ORDER BY rowid').all();
  const record = log.prepare<[string], { state: string }>('SELECT state FROM oncely_records WHERE key = ?').get(MSG_ID);
  log.close();
  const provider = new FakeEmailProvider(providerDb);
  const emails = provider.sentTo(RECIPIENT);
  provider.close();
  const info = await jsm.consumers.info(stream, durable);
  const acked = info.num_ack_pending === 0 && info.num_pending === 0 ? info.ack_floor.stream_seq : 0;
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
  console.log(ok ? `\nok: one welcome email, every message acked (${elapsed().trim()})` : '\nFAILED: the counts above are not what oncely promises');
  if (!ok) process.exitCode = 1;
} catch (error) {
  console.error('FAILED:', error);
  process.exitCode = 1;
} finally {
  for (const child of children) child.kill('SIGKILL');
  await jsm.streams.delete(stream).catch(() => undefined);
  await nc.close();
  rmSync(directory, { recursive: true, force: true });
}

/** Publishes the task until JetStream stores it as a message of its own; returns its stream sequence. */
async function publish(): Promise<number> {
  const h = headers();
  h.set('Nats-Msg-Id', MSG_ID);
  for (;;) {
    const ack = await js.publish(`${stream}.welcome`, BODY, { headers: h });
    if (!ack.duplicate) return ack.seq;
    await sleep(50); // within the dedupe window: JetStream dropped it
  }
}

/** Starts a worker process; resolves once it consumes. Its lines are told as they come. */
async function startWorker(name: string, mode: 'crash-after-send' | 'run', onLine: (line: WorkerLine) => void = () => undefined): Promise<ChildProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', WORKER, stream, durable, workerDb, providerDb, name, mode], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.add(child);
  child.once('exit', () => children.delete(child));
  let ready!: () => void;
  const isReady = new Promise<void>((resolve) => (ready = resolve));
  let pending = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    pending += chunk;
    const lines = pending.split('\n');
    pending = lines.pop()!;
    for (const text of lines.filter(Boolean)) {
      const line = JSON.parse(text) as WorkerLine;
      if (line.event === 'ready') {
        tell(`${name}: started (pid ${String(line.pid)}, ${mode === 'run' ? 'handles messages' : 'will be killed after its first send'})`);
        ready();
      } else tell(`${name}: ${describe(line)}`);
      onLine(line);
    }
  });
  await Promise.race([isReady, once(child, 'exit').then(() => Promise.reject(new Error(`${name} exited before it was ready`)))]);
  return child;
}

function describe(line: WorkerLine): string {
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

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(100);
  }
}

function printTable(rows: [string, string, string, boolean][]): void {
  const header = ['counted after the run', 'count', 'expected'];
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => String(row[column]).length)) + 3);
  const line = (cells: string[]) => cells.map((cell, column) => cell.padEnd(widths[column]!)).join('');
  console.log(line(header).trimEnd());
  for (const [what, count, expected, ok] of rows) console.log(`${line([what, count, expected])}${ok ? '✓' : '✗'}`);
}
