/**
 * How `idempotent()` keeps a call's outcome in a record: UTF-8 JSON of `{ ok: true, value }`
 * (the codec's tagged JSON) or `{ ok: false, error: { name, message } }`. Read by
 * `idempotent()` to replay it, and by the CLI to describe it.
 */
import type { Json } from './codec.js';

export type FunctionOutcome = { ok: true; value: Json } | { ok: false; error: { name: string; message: string } };

export function encodeFunctionOutcome(outcome: FunctionOutcome): Uint8Array {
  return Buffer.from(JSON.stringify(outcome), 'utf8');
}

/** Parses the stored bytes; throws on bytes that are not JSON. The shape is the writer's. */
export function readFunctionOutcome(bytes: Uint8Array): FunctionOutcome {
  return JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8')) as FunctionOutcome;
}
