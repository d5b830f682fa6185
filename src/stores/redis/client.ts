/**
 * A small adapter over the two Redis client libraries, so the store speaks to one shape:
 * run a script on one key with binary arguments and binary replies, and subscribe to a
 * channel on a duplicate of the client.
 *
 * Nothing here imports `redis` or `ioredis`: the client is recognised by what it can do,
 * and its type is described by the few members used. That keeps the published types free of
 * both libraries, so a project that installs only one of them still type-checks.
 */
import { InvalidOptionError } from '../../core/errors.js';
import { describeValue } from '../../core/store-kit.js';
import type { Script } from './scripts.js';

/** An argument a script receives: text, or bytes passed through unchanged. */
export type ScriptArg = string | Buffer;

/** What oncely needs from an ioredis `Redis` or `Cluster`. */
export interface IoredisLike {
  callBuffer(command: string, ...args: (string | Buffer | number)[]): Promise<unknown>;
}

type ScriptArgs = (string | Buffer | number)[];
/** ioredis has these at run time, not in its types. */
interface IoredisScripts {
  evalshaBuffer?: (sha: string, keys: number, ...args: ScriptArgs) => Promise<unknown>;
  evalBuffer?: (script: string, keys: number, ...args: ScriptArgs) => Promise<unknown>;
}

interface NodeRedisCommands {
  evalSha(sha1: string, options: { keys: string[]; arguments: ScriptArg[] }): Promise<unknown>;
  eval(script: string, options: { keys: string[]; arguments: ScriptArg[] }): Promise<unknown>;
}

/**
 * node-redis: RESP type `$` (blob string). `RESP_TYPES.BLOB_STRING` in `@redis/client`;
 * spelled as its value so that nothing from `redis` is loaded at run time.
 */
const BLOB_STRING = 36;

/** What oncely needs from a node-redis v5 client, cluster or pool (`createClient()` and friends). */
export interface NodeRedisLike {
  withTypeMapping(mapping: { [BLOB_STRING]: BufferConstructor }): NodeRedisCommands;
}

/** The client a `RedisStore` is given: node-redis v5 or ioredis v5. */
export type RedisClient = IoredisLike | NodeRedisLike;

/** Runs a script that declares no key on one node. */
export type KeylessRun = (script: Script, args: ScriptArg[]) => Promise<unknown>;

export interface ScriptRunner {
  /** EVALSHA on one key; on NOSCRIPT (cache flushed, failover) EVAL, which also caches it again. */
  run(script: Script, key: string, args: ScriptArg[]): Promise<unknown>;
  /** The same for a script that declares no key (operators' scans), sent to one node. */
  runKeyless: KeylessRun;
  /**
   * `runKeyless` for each master of a cluster (a scan must visit them all), or just
   * `runKeyless` for one server, a pool, or a cluster that knows no master yet.
   */
  keylessPerMaster(): Promise<KeylessRun[]>;
  /**
   * Subscribes to `channel` on a new connection, `duplicate()` of the user's client (same
   * options, same server or cluster). Undefined when the client cannot duplicate itself.
   */
  subscribe: ((channel: string, events: SubscriberEvents) => Subscriber) | undefined;
  /** Calls `listener` when the user's client is closed for good; returns how to stop listening. */
  onClientEnd(listener: () => void): () => void;
}

export interface SubscriberEvents {
  /** A message on the channel. */
  message(payload: string): void;
  /** The connection is closed for good: by `close()`, or its client gave up reconnecting. */
  end(): void;
}

/**
 * A subscription on a connection of its own. Both libraries reconnect it and subscribe again
 * by themselves after a network failure; messages published meanwhile are lost.
 */
export interface Subscriber {
  /** Settles once the server confirmed the subscription, or when it cannot be made. */
  readonly ready: Promise<void>;
  /** Closes the connection at once; safe to call more than once. */
  close(): void;
}

/** The members of a duplicate used here (ioredis `Redis`/`Cluster`, node-redis client/cluster). */
interface Emitter {
  on(event: string, listener: (...args: never[]) => void): unknown;
  off(event: string, listener: (...args: never[]) => void): unknown;
}

interface IoredisSubscriber extends Emitter {
  subscribe(channel: string): Promise<unknown>;
  disconnect(): void;
}

interface NodeRedisSubscriber extends Emitter {
  connect(): Promise<unknown>;
  subscribe(channel: string, listener: (message: string, channel: string) => void): Promise<unknown>;
  destroy(): void;
}

type Duplicable<T> = { duplicate(): T };

function ioredisSubscriber(client: Duplicable<IoredisSubscriber>, channel: string, events: SubscriberEvents): Subscriber {
  const connection = client.duplicate();
  // ioredis reconnects (and subscribes again) by itself; its errors only need a listener.
  connection.on('error', () => undefined);
  connection.on('message', (from: string, message: string) => {
    if (from === channel) events.message(message);
  });
  connection.on('end', () => events.end());
  return {
    ready: connection.subscribe(channel).then(() => undefined),
    close: () => connection.disconnect(),
  };
}

function nodeRedisSubscriber(client: Duplicable<NodeRedisSubscriber>, channel: string, events: SubscriberEvents): Subscriber {
  const connection = client.duplicate();
  connection.on('error', () => undefined);
  connection.on('end', () => events.end());
  let closed = false;
  return {
    ready: connection.connect().then(() => connection.subscribe(channel, (message) => events.message(message))).then(() => undefined),
    close: () => {
      if (closed) return;
      closed = true;
      // Throws only when the connection is closed already.
      try {
        connection.destroy();
      } catch {
        /* closed already */
      }
    },
  };
}

function onEnd(client: object, listener: () => void): () => void {
  const emitter = client as Partial<Emitter>;
  if (typeof emitter.on !== 'function' || typeof emitter.off !== 'function') return () => undefined;
  emitter.on('end', listener);
  return () => emitter.off?.('end', listener);
}

function canDuplicate<T>(client: object): client is Duplicable<T> {
  return typeof (client as Partial<Duplicable<T>>).duplicate === 'function';
}

function isNoScript(error: unknown): boolean {
  return error instanceof Error && error.message.startsWith('NOSCRIPT');
}

async function withScriptFallback(run: () => Promise<unknown>, load: () => Promise<unknown>): Promise<unknown> {
  try {
    return await run();
  } catch (error) {
    if (isNoScript(error)) return load();
    throw error;
  }
}

/** An ioredis `Cluster`: its masters are `Redis` clients. */
interface IoredisCluster extends Emitter {
  isCluster: true;
  status: string;
  nodes(role: 'master'): IoredisLike[];
}

function isIoredisCluster(client: object): client is IoredisCluster {
  const candidate = client as Partial<IoredisCluster>;
  return candidate.isCluster === true && typeof candidate.nodes === 'function';
}

/** The masters once the cluster is ready (or gave up: then none, and the caller's call fails). */
async function ioredisMasters(cluster: IoredisCluster): Promise<IoredisLike[]> {
  if (cluster.status !== 'ready' && cluster.status !== 'end') {
    await new Promise<void>((resolve) => {
      const done = () => {
        cluster.off('ready', done);
        cluster.off('end', done);
        resolve();
      };
      cluster.on('ready', done);
      cluster.on('end', done);
    });
  }
  return cluster.nodes('master');
}

function ioredisKeyless(client: IoredisLike): KeylessRun {
  const { evalshaBuffer, evalBuffer } = client as IoredisLike & IoredisScripts;
  const evalsha = (sha: string, ...args: ScriptArgs) => (evalshaBuffer ? evalshaBuffer.call(client, sha, 0, ...args) : client.callBuffer('EVALSHA', sha, 0, ...args));
  const evalScript = (source: string, ...args: ScriptArgs) => (evalBuffer ? evalBuffer.call(client, source, 0, ...args) : client.callBuffer('EVAL', source, 0, ...args));
  return (script, args) => withScriptFallback(() => evalsha(script.sha, ...args), () => evalScript(script.source, ...args));
}

function ioredisRunner(client: IoredisLike): ScriptRunner {
  // The *Buffer commands reply with Buffers for every bulk string; Cluster routes EVALSHA by
  // its key. Not callBuffer('EVALSHA', …): with enableAutoPipelining, ioredis drops the
  // command name from callBuffer (redis/ioredis#1923) and Redis answers "unknown command".
  const { evalshaBuffer, evalBuffer } = client as IoredisLike & IoredisScripts;
  const evalsha = (sha: string, keys: number, ...args: ScriptArgs) => (evalshaBuffer ? evalshaBuffer.call(client, sha, keys, ...args) : client.callBuffer('EVALSHA', sha, keys, ...args));
  const evalScript = (source: string, keys: number, ...args: ScriptArgs) => (evalBuffer ? evalBuffer.call(client, source, keys, ...args) : client.callBuffer('EVAL', source, keys, ...args));
  return {
    run: (script, key, args) => withScriptFallback(
      () => evalsha(script.sha, 1, key, ...args),
      () => evalScript(script.source, 1, key, ...args),
    ),
    runKeyless: ioredisKeyless(client),
    keylessPerMaster: async () => {
      const masters = isIoredisCluster(client) ? await ioredisMasters(client) : [];
      return masters.length > 0 ? masters.map(ioredisKeyless) : [ioredisKeyless(client)];
    },
    subscribe: canDuplicate<IoredisSubscriber>(client) ? (channel, events) => ioredisSubscriber(client, channel, events) : undefined,
    onClientEnd: (listener) => onEnd(client, listener),
  };
}

/** A node-redis v5 cluster (`createCluster()`): `nodeClient(master)` is that master's client. */
interface NodeRedisCluster {
  masters: object[];
  nodeClient(node: object): Promise<NodeRedisLike>;
}

function isNodeRedisCluster(client: object): client is NodeRedisCluster {
  const candidate = client as Partial<NodeRedisCluster>;
  return Array.isArray(candidate.masters) && typeof candidate.nodeClient === 'function';
}

/** A view of a client whose bulk-string replies are Buffers; the client itself is untouched. */
function bufferView(client: NodeRedisLike): NodeRedisCommands {
  return client.withTypeMapping({ [BLOB_STRING]: Buffer });
}

function nodeRedisKeyless(buffers: NodeRedisCommands): KeylessRun {
  return (script, args) => withScriptFallback(
    () => buffers.evalSha(script.sha, { keys: [], arguments: args }),
    () => buffers.eval(script.source, { keys: [], arguments: args }),
  );
}

function nodeRedisRunner(client: NodeRedisLike): ScriptRunner {
  const buffers = bufferView(client);
  return {
    run: (script, key, args) => withScriptFallback(
      () => buffers.evalSha(script.sha, { keys: [key], arguments: args }),
      () => buffers.eval(script.source, { keys: [key], arguments: args }),
    ),
    runKeyless: nodeRedisKeyless(buffers),
    // A cluster that never connected knows no master: the one call below then fails.
    keylessPerMaster: async () => (isNodeRedisCluster(client) && client.masters.length > 0
      ? Promise.all(client.masters.map(async (master) => nodeRedisKeyless(bufferView(await client.nodeClient(master)))))
      : [nodeRedisKeyless(buffers)]),
    // The user's client, not the Buffer view: pub/sub messages are text (ids).
    subscribe: canDuplicate<NodeRedisSubscriber>(client) ? (channel, events) => nodeRedisSubscriber(client, channel, events) : undefined,
    onClientEnd: (listener) => onEnd(client, listener),
  };
}

/** Recognises the client library by duck typing and adapts it. */
export function scriptRunner(client: RedisClient): ScriptRunner {
  const candidate = client as Partial<IoredisLike & NodeRedisLike> | null | undefined;
  if (typeof candidate?.callBuffer === 'function') return ioredisRunner(client as IoredisLike);
  if (typeof candidate?.withTypeMapping === 'function') return nodeRedisRunner(client as NodeRedisLike);
  throw new InvalidOptionError(`client must be a node-redis v5 client (await createClient({ url }).connect()) or an ioredis v5 client (new Redis(url)), got ${describeValue(client)}`);
}
