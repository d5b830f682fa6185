/**
 * How a response is kept in the store, and which of its headers may be replayed.
 *
 * Layout of the stored bytes: `0x01` (version), a 4-byte big-endian length, that many bytes
 * of JSON `{ status, headers, bodyStored }`, then the body bytes exactly as sent.
 */
import type { ResponseParts } from './types.js';

const VERSION = 1;

/**
 * Headers that describe the representation and are safe to repeat (DESIGN §3.6, plus
 * `content-encoding`, without which stored compressed bytes would replay as garbage, and
 * `content-disposition`). Never `set-cookie` (a replay must not hand a session to whoever holds
 * the key), hop-by-hop headers, `date`, or `content-length` (recomputed on replay).
 */
const REPLAYED_HEADERS = new Set(['content-type', 'content-encoding', 'content-language', 'content-location', 'content-disposition', 'location', 'etag', 'last-modified', 'cache-control', 'vary']);

export function isReplayedHeader(name: string): boolean {
  return REPLAYED_HEADERS.has(name) || (name.startsWith('x-') && name !== 'x-powered-by');
}

export interface StoredResponse {
  status: number;
  headers: [string, string][];
  /** `undefined` when the body was larger than `maxStoredBytes` and was not kept. */
  body: Uint8Array | undefined;
}

export function encodeStoredResponse(response: StoredResponse): Uint8Array {
  const head = Buffer.from(
    JSON.stringify({ status: response.status, headers: response.headers.filter(([name]) => isReplayedHeader(name)), bodyStored: response.body !== undefined }),
    'utf8',
  );
  const body = response.body ?? new Uint8Array(0);
  const out = Buffer.allocUnsafe(5 + head.length + body.byteLength);
  out[0] = VERSION;
  out.writeUInt32BE(head.length, 1);
  head.copy(out, 5);
  out.set(body, 5 + head.length);
  return out;
}

export function decodeStoredResponse(bytes: Uint8Array): StoredResponse {
  const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (buffer[0] !== VERSION) throw new Error(`Unknown stored response version ${buffer[0]}`);
  const headLength = buffer.readUInt32BE(1);
  const head = JSON.parse(buffer.subarray(5, 5 + headLength).toString('utf8')) as { status: number; headers: [string, string][]; bodyStored: boolean };
  return { status: head.status, headers: head.headers, body: head.bodyStored ? buffer.subarray(5 + headLength) : undefined };
}

export type { ResponseParts };
