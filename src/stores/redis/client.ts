/**
 * A small adapter over the two Redis client libraries, so the store speaks to one shape:
 * run a script on one key with binary arguments and binary replies, and delete a key.
 *
 * Nothing here imports `redis` or `ioredis`: the client is recognised by what it can do,
 * and its type is described by the few members used. That keeps the published types free of
 * both libraries, so a project that installs only one of them still type-checks.
 */
import { InvalidOptionError } from '../../core/errors.js';
import type { Script } from './scripts.js';

/** An argument a script receives: text, or bytes passed through unchanged. */
export type ScriptArg = string | Buffer;

/** What oncely needs from an ioredis `Redis` or `Cluster`. */
export interface IoredisLike {
  callBuffer(command: string, ...args: (string | Buffer | number)[]): Promise<unknown>;
}

interface NodeRedisCommands {
  evalSha(sha1: string, options: { keys: string[]; arguments: ScriptArg[] }): Promise<unknown>;
  eval(script: string, options: { keys: string[]; arguments: ScriptArg[] }): Promise<unknown>;
  del(key: string): Promise<number>;
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

export interface ScriptRunner {
  /** EVALSHA on one key; on NOSCRIPT (cache flushed, failover) EVAL, which also caches it again. */
  run(script: Script, key: string, args: ScriptArg[]): Promise<unknown>;
  /** DEL one key; the number of keys removed. */
  del(key: string): Promise<number>;
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

function ioredisRunner(client: IoredisLike): ScriptRunner {
  // callBuffer replies with Buffers for every bulk string; Cluster routes EVALSHA by its key.
  return {
    run: (script, key, args) => withScriptFallback(
      () => client.callBuffer('EVALSHA', script.sha, 1, key, ...args),
      () => client.callBuffer('EVAL', script.source, 1, key, ...args),
    ),
    del: async (key) => Number(await client.callBuffer('DEL', key)),
  };
}

function nodeRedisRunner(client: NodeRedisLike): ScriptRunner {
  // A view of the user's client whose bulk-string replies are Buffers; the client itself is untouched.
  const buffers = client.withTypeMapping({ [BLOB_STRING]: Buffer });
  return {
    run: (script, key, args) => withScriptFallback(
      () => buffers.evalSha(script.sha, { keys: [key], arguments: args }),
      () => buffers.eval(script.source, { keys: [key], arguments: args }),
    ),
    del: (key) => buffers.del(key),
  };
}

/** Recognises the client library by duck typing and adapts it. */
export function scriptRunner(client: RedisClient): ScriptRunner {
  const candidate = client as Partial<IoredisLike & NodeRedisLike>;
  if (typeof candidate.callBuffer === 'function') return ioredisRunner(client as IoredisLike);
  if (typeof candidate.withTypeMapping === 'function') return nodeRedisRunner(client as NodeRedisLike);
  throw new InvalidOptionError('RedisStore needs a node-redis v5 client (createClient) or an ioredis v5 client (new Redis)');
}
