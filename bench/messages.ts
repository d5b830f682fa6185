/**
 * Message consumers: messages/s through a bare consumer and through the same consumer wrapped
 * by oncely, on RabbitMQ (amqplib) and NATS JetStream, with the Redis and PostgreSQL stores.
 * Every trial pre-publishes N messages with unique ids to a fresh queue / stream, then times
 * consuming all of them with a trivial handler (from the consume call to the last ack sent).
 * Each row's ratio is taken against bare in the same round, because these machines are shared
 * and noisy: compare ratios, not absolute numbers. CPU is this client process's own
 * (process.cpuUsage), per message; the broker's and the store's servers are not in it.
 *
 * Each contender runs in a process of its own, kept for every round and warmed up first:
 * AsyncLocalStorage (which oncely uses) turns on promise hooks for the whole process on Node
 * 20, so a bare consumer sharing a process with oncely would be slowed too. Contenders
 * alternate within a round, in an order that rotates from round to round.
 *
 * The rows after the first three take oncely apart (`--no-profile` leaves them out):
 * oncely on a MemoryStore (everything but the store's round trips), bare plus the two store
 * calls a message costs (claim, complete) awaited in the handler, and bare plus
 * AsyncLocalStorage.run around the handler.
 *
 * Run: npm run bench:messages [-- --rounds 3 --messages 5000 --prefetch 50 --brokers rabbitmq,nats --handler-ms 0]
 * `--handler-ms 5` makes the handler wait 5 ms (an I/O call) instead of returning at once.
 * `--cpu-prof <contender>` writes a V8 CPU profile of that contender's timed windows only (not
 * publishing, not the warm-up) to $TMPDIR/oncely-bench-profiles/, for Chrome DevTools or speedscope.
 * Needs RabbitMQ, NATS (JetStream), Redis and PostgreSQL (the addresses below); a broker
 * that does not answer is skipped, a store that does not answer skips its rows.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { AsyncLocalStorage } from 'node:async_hooks';
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { AckPolicy, StorageType, jetstream, jetstreamManager, type Consumer, type JsMsg } from '@nats-io/jetstream';
import { connect as natsConnect, headers as natsHeaders } from '@nats-io/transport-node';
import amqp, { type ConsumeMessage } from 'amqplib';
import { Redis } from 'ioredis';
import pg from 'pg';
import { MemoryStore, sha256Hex, type IdempotencyStore } from '../src/index.js';
import { identityId } from '../src/core/identity.js';
import { consumeIdempotently as consumeNats } from '../src/messages/nats/index.js';
import { consumeIdempotently as consumeRabbit } from '../src/messages/rabbitmq/index.js';
import type { MessageEvent } from '../src/messages/protocol.js';
import { PostgresStore } from '../src/stores/postgres/index.js';
import { RedisStore } from '../src/stores/redis/index.js';
import { POSTGRES_URL, REDIS_URL } from '../test/support/services.js';

const RABBITMQ_URL = process.env.ONCELY_RABBITMQ_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
const NATS_URL = process.env.ONCELY_NATS_URL ?? 'nats://127.0.0.1:4222';
/** Records are deleted after each process; this only bounds what a crashed run leaves in Redis. */
const RETENTION_MS = 10 * 60_000;
const OUTCOME = Buffer.from('{"ok":true,"value":null}');
const WARM_UP_MESSAGES = 500;

type Broker = 'rabbitmq' | 'nats';
type StoreKind = 'redis' | 'postgres' | 'memory';

interface Contender {
  name: string;
  /** What it does, printed under the table. */
  does: string;
  /** Wrapped by oncely on this store. */
  oncely?: StoreKind;
  /** Bare, with the handler awaiting this store's claim() and complete() itself. */
  calls?: StoreKind;
  /** The Redis store on an ioredis client with `enableAutoPipelining` (commands of one tick in one write). */
  pipelined?: boolean;
  /** Bare, with the handler run inside AsyncLocalStorage.run(). */
  als?: boolean;
  profile?: boolean;
}

const CONTENDERS: Contender[] = [
  { name: 'bare', does: 'the broker client alone: the same prefetch / concurrency, manual ack after the handler returns' },
  { name: 'oncely + redis', oncely: 'redis', does: 'consumeIdempotently() on a RedisStore (ioredis, one connection)' },
  { name: 'oncely + postgres', oncely: 'postgres', does: 'consumeIdempotently() on a PostgresStore (pg pool of 16)' },
  { name: 'oncely + redis, auto-pipelined', oncely: 'redis', pipelined: true, profile: true, does: 'as oncely + redis, on an ioredis client with enableAutoPipelining' },
  { name: 'oncely + memory', oncely: 'memory', profile: true, does: 'consumeIdempotently() on a MemoryStore: protocol, adapter, hashing, timers, AsyncLocalStorage; no round trip' },
  { name: 'bare + redis claim/complete', calls: 'redis', profile: true, does: 'bare, whose handler awaits RedisStore claim() then complete(): the two round trips alone' },
  { name: 'bare + postgres claim/complete', calls: 'postgres', profile: true, does: 'bare, whose handler awaits PostgresStore claim() then complete(): the two round trips alone' },
  { name: 'bare + AsyncLocalStorage', als: true, profile: true, does: 'bare, with the handler run in AsyncLocalStorage.run() (promise hooks on, Node 20)' },
];

interface Settings {
  messages: number;
  prefetch: number;
  table: string;
  /** `--handler-ms`: how long the handler waits (an I/O call), 0 for a handler that only reads the body. */
  handlerMs: number;
  /** `--cpu-prof`: the contender whose timed windows are profiled. */
  profile: string | undefined;
}

interface TrialResult {
  rate: number;
  /** This process's CPU (user + system), µs per message. */
  cpuUsPerMessage: number;
  /** The broker server's CPU, µs per message (NaN without /proc). */
  brokerUsPerMessage: number;
  /** The store server's CPU, µs per message (NaN without /proc or a server). */
  storeUsPerMessage: number;
}

/* ------------------------------------------------------------------ child: one contender */

/** The servers' processes, by name (Linux /proc); PostgreSQL has one per connection. */
const SERVER_PROCESS: Record<Broker | Exclude<StoreKind, 'memory'>, string> = { rabbitmq: 'beam.smp', nats: 'nats-server', redis: 'redis-server', postgres: 'postgres' };

/** CPU time (µs) used so far by every process named `name`, by pid; empty where /proc is not. */
function serverCpu(name: string): Map<number, number> {
  const used = new Map<number, number>();
  let pids: string[] = [];
  try {
    pids = readdirSync('/proc').filter((entry) => /^\d+$/.test(entry));
  } catch {
    return used;
  }
  const tick = 1e6 / 100; // USER_HZ is 100 on Linux
  for (const pid of pids) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      if (stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')) !== name) continue;
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      used.set(Number(pid), (Number(fields[11]) + Number(fields[12])) * tick);
    } catch {
      // The process ended meanwhile.
    }
  }
  return used;
}

/** µs of CPU the processes named `name` used since `before` (new processes count from 0); NaN without /proc. */
function serverCpuSince(name: string, before: Map<number, number>): number {
  const now = serverCpu(name);
  if (now.size === 0) return NaN;
  let total = 0;
  for (const [pid, used] of now) total += used - (before.get(pid) ?? 0);
  return total;
}

/** What a trial measures: consuming `n` messages already in a fresh queue or stream. */
interface Trial {
  /** Starts consuming; `done` is called once per message after its ack was sent. Resolves with how to stop. */
  consume(handler: (body: Uint8Array, id: string) => Promise<void>, done: () => void): Promise<() => Promise<void>>;
  /** After stop: checks that nothing is left unacked, then deletes the queue / stream. */
  finish(): Promise<void>;
  /** After a failure: deletes the queue / stream, whatever is in it. */
  discard(): Promise<void>;
}

interface BrokerClient {
  /** A fresh queue / stream holding `n` messages with unique ids. */
  prepare(tag: string, n: number, oncely: IdempotencyStore | undefined, observer: (event: MessageEvent) => void): Promise<Trial>;
  /** Deletes the queue / stream of `tag`, if there is one. */
  forget(tag: string): Promise<unknown>;
  close(): Promise<void>;
}

const body = (i: number) => Buffer.from(JSON.stringify({ type: 'PaymentReceived', account: `acct-${i % 97}`, amount: 4999, seq: i }));

const rabbitQueue = (tag: string) => `oncely-bench-${tag}`;
const natsStream = (tag: string) => `oncely_bench_${tag.replace(/\W/g, '_')}`;

async function rabbitClient(prefetch: number): Promise<BrokerClient> {
  const connection = await amqp.connect(RABBITMQ_URL);
  const admin = await connection.createConfirmChannel();
  return {
    async prepare(tag, n, store, observer) {
      const queue = rabbitQueue(tag);
      // Classic, transient: the broker's cheapest setup, so oncely's share shows in full.
      await admin.assertQueue(queue, { durable: false, autoDelete: false });
      for (let i = 0; i < n; i++) admin.sendToQueue(queue, body(i), { messageId: `${tag}-${i}` });
      await admin.waitForConfirms();
      const channel = await connection.createChannel();
      await channel.prefetch(prefetch);
      return {
        async consume(handler, done) {
          if (store) {
            // The adapter runs every delivery at once, up to the channel's prefetch: the same as bare below.
            const consumer = await consumeRabbit(channel, queue, (message) => handler(message.content, message.properties.messageId as string), { store, observer, retentionMs: RETENTION_MS });
            return () => consumer.close();
          }
          const { consumerTag } = await channel.consume(queue, (message: ConsumeMessage | null) => {
            if (message === null) return;
            void handler(message.content, message.properties.messageId as string).then(() => {
              channel.ack(message);
              done();
            });
          }, { noAck: false });
          return async () => void (await channel.cancel(consumerTag));
        },
        async finish() {
          await channel.close(); // anything unacked goes back to the queue, and shows below
          const { messageCount } = await admin.checkQueue(queue);
          await admin.deleteQueue(queue);
          if (messageCount !== 0) throw new Error(`${messageCount} messages were left in ${queue}`);
        },
        async discard() {
          await channel.close().catch(() => undefined);
          await admin.deleteQueue(queue);
        },
      };
    },
    forget: (tag) => admin.deleteQueue(rabbitQueue(tag)),
    close: () => connection.close(),
  };
}

async function natsClient(concurrency: number): Promise<BrokerClient> {
  const nc = await natsConnect({ servers: NATS_URL });
  const jsm = await jetstreamManager(nc);
  const js = jetstream(nc);
  return {
    async prepare(tag, n, store, observer) {
      const stream = natsStream(tag);
      // Memory storage: the cheapest setup, so oncely's share shows in full.
      await jsm.streams.add({ name: stream, subjects: [`${stream}.in`], storage: StorageType.Memory });
      await jsm.consumers.add(stream, { durable_name: 'bench', ack_policy: AckPolicy.Explicit, ack_wait: 30e9, max_deliver: -1 });
      for (let i = 0; i < n; i += 250) {
        await Promise.all(Array.from({ length: Math.min(250, n - i) }, (_, j) => {
          const h = natsHeaders();
          h.set('Nats-Msg-Id', `${tag}-${i + j}`);
          return js.publish(`${stream}.in`, body(i + j), { headers: h });
        }));
      }
      const consumer: Consumer = await js.consumers.get(stream, 'bench');
      return {
        async consume(handler, done) {
          if (store) {
            const running = await consumeNats(consumer, (msg) => handler(msg.data, msg.headers!.get('Nats-Msg-Id')), { store, observer, concurrency, retentionMs: RETENTION_MS });
            return () => running.close();
          }
          // As the adapter does: pull `concurrency` ahead, run at most `concurrency` at once.
          const messages = await consumer.consume({ max_messages: concurrency });
          let active = 0;
          let freed: (() => void) | undefined;
          const loop = (async () => {
            for await (const msg of messages as AsyncIterable<JsMsg>) {
              active++;
              void handler(msg.data, msg.headers!.get('Nats-Msg-Id')).then(() => {
                msg.ack();
                done();
                active--;
                freed?.();
                freed = undefined;
              });
              if (active >= concurrency) await new Promise<void>((resolve) => (freed = resolve));
            }
          })();
          return async () => {
            await messages.close();
            await loop;
          };
        },
        async finish() {
          // Acks are fire-and-forget: give the server a moment to count the last ones.
          let pending = -1;
          for (let i = 0; i < 100; i++) {
            const info = await jsm.consumers.info(stream, 'bench');
            pending = info.num_pending + info.num_ack_pending;
            if (pending === 0) break;
            await sleep(20);
          }
          await jsm.streams.delete(stream);
          if (pending !== 0) throw new Error(`${pending} messages were left unacked in ${stream}`);
        },
        discard: async () => void (await jsm.streams.delete(stream)),
      };
    },
    forget: (tag) => jsm.streams.delete(natsStream(tag)),
    close: () => nc.close(),
  };
}

async function child(broker: Broker, contender: Contender, settings: Settings): Promise<void> {
  const send = (message: unknown) => process.send!(message);
  const closers: (() => Promise<unknown>)[] = [];
  let redis: Redis | undefined;
  let pool: pg.Pool | undefined;
  const prefix = `oncely-bench-msg-${process.pid}`;
  const storeOf = (kind: StoreKind): IdempotencyStore => {
    if (kind === 'memory') return new MemoryStore({ maxRecords: 1_000_000 });
    if (kind === 'redis') {
      redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 1, enableAutoPipelining: contender.pipelined === true });
      return new RedisStore({ client: redis, prefix });
    }
    pool = new pg.Pool({ connectionString: POSTGRES_URL, max: 16 });
    return new PostgresStore({ pool, table: settings.table });
  };
  const kind = contender.oncely ?? contender.calls;
  const store = kind ? storeOf(kind) : undefined;
  const serverKind = kind === 'memory' ? undefined : kind;
  const client = broker === 'rabbitmq' ? await rabbitClient(settings.prefetch) : await natsClient(settings.prefetch);
  closers.push(() => client.close());
  const als = new AsyncLocalStorage<{ id: string }>();

  let handled = 0;
  let sink = 0;
  const work = async (data: Uint8Array) => {
    handled++;
    sink ^= data.length; // the trivial handler
    if (settings.handlerMs > 0) await sleep(settings.handlerMs);
  };
  let handler: (data: Uint8Array, id: string) => Promise<void> = work;
  if (contender.calls) {
    const callStore = store!;
    handler = async (data, id) => {
      const key = identityId('bench', '', id);
      const claim = await callStore.claim({ id: key, fingerprint: sha256Hex(data), leaseMs: 30_000, meta: { namespace: 'bench', scope: '', key: id } });
      if (claim.status !== 'acquired') throw new Error(`expected acquired, got ${claim.status}`);
      await work(data);
      if ((await callStore.complete(key, claim.token, OUTCOME, RETENTION_MS)) !== 'ok') throw new Error('complete lost');
    };
  } else if (contender.als) {
    handler = (data, id) => als.run({ id }, () => work(data));
  }

  let profiler: Session | undefined;
  if (settings.profile === contender.name) {
    profiler = new Session();
    profiler.connect();
    await profiler.post('Profiler.enable');
  }

  let trials = 0;
  /** The tag of the trial under way, whose queue / stream goes should the parent go away meanwhile. */
  let current: string | undefined;
  const trial = async (n: number): Promise<TrialResult> => {
    if (kind === 'postgres') await pool!.query(`TRUNCATE ${settings.table}`);
    const tag = `${process.pid}-${trials++}`;
    let done = 0;
    let finished!: () => void;
    let failed!: (error: Error) => void;
    const all = new Promise<void>((resolve, reject) => ((finished = resolve), (failed = reject)));
    const count = () => {
      if (++done === n) finished();
    };
    // oncely: the 'processed' event comes right before the adapter sends the ack, synchronously.
    const observer = (event: MessageEvent) => {
      if (event.type === 'processed') count();
      else failed(new Error(`unexpected ${event.type} event: ${'error' in event ? String(event.error) : ''}`));
    };
    current = tag;
    const prepared = await client.prepare(tag, n, contender.oncely ? store : undefined, observer);
    handled = 0;
    const brokerBefore = serverCpu(SERVER_PROCESS[broker]);
    const storeBefore = serverKind ? serverCpu(SERVER_PROCESS[serverKind]) : undefined;
    const profiling = profiler !== undefined && n !== WARM_UP_MESSAGES;
    if (profiling) await profiler!.post('Profiler.start');
    const timeout = setTimeout(() => failed(new Error(`${n} messages were not consumed within 120 s`)), 120_000);
    let stop: (() => Promise<void>) | undefined;
    const cpu = process.cpuUsage();
    const started = performance.now();
    try {
      stop = await prepared.consume(handler, count);
      await all;
    } catch (error) {
      await stop?.().catch(() => undefined);
      await prepared.discard().catch(() => undefined);
      throw error;
    } finally {
      clearTimeout(timeout);
    }
    const ms = performance.now() - started;
    const used = process.cpuUsage(cpu);
    if (profiling) {
      const { profile } = await profiler!.post('Profiler.stop');
      const dir = join(tmpdir(), 'oncely-bench-profiles');
      mkdirSync(dir, { recursive: true });
      const file = join(dir, `${broker}-${contender.name.replace(/\W+/g, '_')}-${tag}.cpuprofile`);
      writeFileSync(file, JSON.stringify(profile));
      console.error(`profile of ${contender.name} on ${broker}: ${file}`);
    }
    const brokerUs = serverCpuSince(SERVER_PROCESS[broker], brokerBefore);
    const storeUs = storeBefore ? serverCpuSince(SERVER_PROCESS[serverKind!], storeBefore) : NaN;
    await stop!();
    current = undefined;
    await prepared.finish();
    if (handled !== n) throw new Error(`the handler ran ${handled} times for ${n} messages`);
    return { rate: n / (ms / 1000), cpuUsPerMessage: (used.user + used.system) / n, brokerUsPerMessage: brokerUs / n, storeUsPerMessage: storeUs / n };
  };

  try {
    await trial(WARM_UP_MESSAGES);
    send({ type: 'ready' });
  } catch (error) {
    send({ type: 'error', message: (error as Error).stack ?? String(error) });
  }
  let exiting = false;
  const shutdown = async () => {
    if (exiting) return;
    exiting = true;
    if (current !== undefined) await client.forget(current).catch(() => undefined);
    if (redis) {
      // Every record this process wrote, whatever its retention.
      let cursor = '0';
      do {
        const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
        if (keys.length > 0) await redis.unlink(...keys);
        cursor = next;
      } while (cursor !== '0');
    }
    await store?.close?.();
    for (const close of closers) await close().catch(() => undefined);
    redis?.disconnect();
    await pool?.end();
    if (sink < 0) console.log(sink);
    process.exit(0);
  };
  process.on('message', (message: { type: string; n?: number }) => {
    if (message.type === 'trial') {
      trial(message.n!).then((result) => send({ type: 'result', ...result }), (error: Error) => send({ type: 'error', message: error.stack ?? String(error) }));
    } else if (message.type === 'exit') {
      void shutdown();
    }
  });
  // The parent is gone (Ctrl-C, a crash): do not linger holding connections.
  process.on('disconnect', () => void shutdown());
}

/* ------------------------------------------------------------------ parent: rounds and table */

function reachable(url: string): Promise<boolean> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = net.connect({ host: hostname, port: Number(port) });
    socket.setTimeout(1000);
    socket.once('connect', () => (socket.destroy(), resolve(true)));
    socket.once('timeout', () => (socket.destroy(), resolve(false)));
    socket.once('error', () => resolve(false));
  });
}

class Runner {
  #process: ChildProcess;
  #next: ((message: { type: string; message?: string } & Partial<TrialResult>) => void) | undefined;
  readonly ready: Promise<void>;

  constructor(broker: Broker, contender: Contender, settings: Settings) {
    this.#process = fork(fileURLToPath(import.meta.url), ['--child', broker, contender.name, JSON.stringify(settings)]);
    this.#process.on('message', (message: { type: string }) => this.#next?.(message));
    this.ready = this.#reply().then(() => undefined);
  }

  #reply(): Promise<{ type: string; message?: string } & Partial<TrialResult>> {
    return new Promise((resolve, reject) => {
      const exited = (code: number | null) => reject(new Error(`the contender's process exited (${code})`));
      this.#process.once('exit', exited);
      this.#next = (message) => {
        this.#process.off('exit', exited);
        if (message.type === 'error') reject(new Error(message.message));
        else resolve(message);
      };
    });
  }

  async trial(n: number): Promise<TrialResult> {
    const reply = this.#reply();
    this.#process.send({ type: 'trial', n });
    const { rate, cpuUsPerMessage, brokerUsPerMessage, storeUsPerMessage } = await reply;
    // NaN crosses the IPC channel as null.
    return { rate: rate!, cpuUsPerMessage: cpuUsPerMessage!, brokerUsPerMessage: brokerUsPerMessage ?? NaN, storeUsPerMessage: storeUsPerMessage ?? NaN };
  }

  async exit(): Promise<void> {
    if (this.#process.exitCode !== null) return;
    const exited = new Promise((resolve) => this.#process.once('exit', resolve));
    this.#process.send({ type: 'exit' });
    await exited;
  }
}

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
};
const fmt = (n: number) => Math.round(n).toLocaleString('en-US');

async function parent(): Promise<void> {
  const { values } = parseArgs({
    options: {
      rounds: { type: 'string', default: '3' },
      messages: { type: 'string', default: '5000' },
      prefetch: { type: 'string', default: '50' },
      brokers: { type: 'string', default: 'rabbitmq,nats' },
      'no-profile': { type: 'boolean', default: false },
      'handler-ms': { type: 'string', default: '0' },
      'cpu-prof': { type: 'string' },
    },
  });
  const rounds = Number(values.rounds);
  const settings: Settings = { messages: Number(values.messages), prefetch: Number(values.prefetch), table: `oncely_bench_msgs_${process.pid}`, handlerMs: Number(values['handler-ms']), profile: values['cpu-prof'] };
  const brokers = values.brokers.split(',') as Broker[];
  const started = performance.now();

  const up = { redis: await reachable(REDIS_URL), postgres: await reachable(POSTGRES_URL), memory: true };
  const pool = up.postgres ? new pg.Pool({ connectionString: POSTGRES_URL, max: 1 }) : undefined;
  if (pool) {
    await new PostgresStore({ pool, table: settings.table }).migrate();
    // Ctrl-C: the children (same process group) go too; the table must not stay behind.
    process.once('SIGINT', () => void pool.query(`DROP TABLE IF EXISTS ${settings.table}, ${settings.table}_migrations`).finally(() => process.exit(130)));
  }
  const contenders = CONTENDERS.filter((c) => !(values['no-profile'] && c.profile)).filter((c) => {
    const kind = c.oncely ?? c.calls;
    if (kind && !up[kind]) console.error(`${c.name} skipped: ${kind} is not reachable`);
    return !kind || up[kind];
  });

  const output: string[] = [];
  try {
    for (const broker of brokers) {
      if (!(await reachable(broker === 'rabbitmq' ? RABBITMQ_URL : NATS_URL))) {
        console.error(`${broker} skipped: not reachable`);
        continue;
      }
      const runners = new Map<string, Runner>();
      try {
        for (const contender of contenders) {
          const runner = new Runner(broker, contender, settings);
          runners.set(contender.name, runner);
          await runner.ready; // one at a time: warm-ups must not overlap
        }
        const results = new Map<string, TrialResult[]>(contenders.map((c) => [c.name, []]));
        for (let round = 0; round < rounds; round++) {
          const order = contenders.map((_, i) => contenders[(i + round) % contenders.length]!);
          for (const contender of order) results.get(contender.name)!.push(await runners.get(contender.name)!.trial(settings.messages));
          console.error(`${broker} round ${round + 1}/${rounds}: ${contenders.map((c) => `${c.name} ${fmt(results.get(c.name)!.at(-1)!.rate)}/s`).join(', ')}`);
        }
        const bare = results.get('bare')!;
        output.push(`\n### ${broker === 'rabbitmq' ? `RabbitMQ (amqplib, classic transient queue, prefetch ${settings.prefetch})` : `NATS JetStream (memory stream, pull consumer, ${settings.prefetch} pulled / running at once)`}: ${fmt(settings.messages)} messages, median of ${rounds} rounds\n`);
        output.push('| contender | messages/s | ÷ bare (same round) | client CPU µs/msg | ÷ bare | broker CPU µs/msg | store server CPU µs/msg |');
        output.push('|---|---:|---:|---:|---:|---:|---:|');
        const us = (n: number) => (Number.isNaN(n) ? '–' : n.toFixed(0));
        for (const contender of contenders) {
          const rows = results.get(contender.name)!;
          const ratio = median(rows.map((r, i) => r.rate / bare[i]!.rate));
          const cpu = median(rows.map((r, i) => r.cpuUsPerMessage / bare[i]!.cpuUsPerMessage));
          const of = (field: keyof TrialResult) => median(rows.map((r) => r[field]));
          output.push(`| ${contender.name} | ${fmt(of('rate'))} | ${ratio.toFixed(2)} | ${us(of('cpuUsPerMessage'))} | ${cpu.toFixed(2)} | ${us(of('brokerUsPerMessage'))} | ${us(of('storeUsPerMessage'))} |`);
        }
      } finally {
        for (const runner of runners.values()) await runner.exit().catch(() => undefined);
      }
    }
  } finally {
    if (pool) {
      await pool.query(`DROP TABLE IF EXISTS ${settings.table}, ${settings.table}_migrations`);
      await pool.end();
    }
  }
  console.log(output.join('\n'));
  console.log(`\nContenders (each in a process of its own; the handler reads the body${settings.handlerMs > 0 ? ` and waits ${settings.handlerMs} ms, as for an I/O call` : ' and returns'}):\n`);
  for (const contender of contenders) console.log(`- ${contender.name}: ${contender.does}`);
  console.log(`\nAll oncely rows use the adapter's defaults (lease 30 s with heartbeats every 10 s, one claim and one complete per message). ${((performance.now() - started) / 1000).toFixed(0)} s in all.`);
}

if (process.argv[2] === '--child') {
  const [, , , broker, name, json] = process.argv;
  const contender = CONTENDERS.find((c) => c.name === name)!;
  await child(broker as Broker, contender, JSON.parse(json!) as Settings);
} else {
  await parent();
}
