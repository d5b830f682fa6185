import crypto, { createHash } from 'node:crypto';
import { InvalidKeyError } from './errors.js';

// One-shot hashing (Node ≥ 20.12) skips the Hash object; it runs on every request.
const oneShot = (crypto as { hash?: (algorithm: string, data: string | Uint8Array, encoding: 'hex') => string }).hash;

export function sha256Hex(data: string | Uint8Array): string {
  return oneShot ? oneShot('sha256', data, 'hex') : createHash('sha256').update(data).digest('hex');
}

/** Longest key or scope accepted; bounds what a client can make us hash and store. */
export const MAX_IDENTITY_PART_LENGTH = 1024;

function checkPart(name: string, value: unknown): string {
  if (typeof value !== 'string') throw new InvalidKeyError(`${name} must be a string, got ${typeof value}`);
  if (value.length > MAX_IDENTITY_PART_LENGTH) throw new InvalidKeyError(`${name} is longer than ${MAX_IDENTITY_PART_LENGTH} characters`);
  return value;
}

/**
 * The storage id of an identity: SHA-256 over (namespace, scope, key). Raw client text never
 * becomes a storage key. The parts are JSON-encoded as an array so that no two different
 * triples can produce the same input ("a:b" + "c" vs "a" + "b:c").
 */
export function identityId(namespace: string, scope: string, key: string): string {
  checkPart('namespace', namespace);
  checkPart('scope', scope);
  if (checkPart('key', key).length === 0) throw new InvalidKeyError('key must not be empty');
  return sha256Hex(JSON.stringify([namespace, scope, key]));
}

/**
 * Compares two digests in time that depends only on their length, not on where they differ.
 * (No Buffers: this runs on every claim that finds a record, and allocating there shows.)
 */
export function sameDigest(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let difference = 0;
  for (let i = 0; i < a.length; i++) difference |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return difference === 0;
}
