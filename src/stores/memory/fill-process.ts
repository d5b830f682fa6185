/**
 * Child process of memory.test.ts: stores `count` distinct outcomes of `size` bytes each in a
 * MemoryStore with its default bounds, and prints how much the process's resident memory and
 * live ArrayBuffer memory grew (after full collections, before and after) beside what the
 * store counts. With `junk`, each record is followed by that many small Buffers that become
 * garbage at once, from Node's shared pool, as a service makes them between requests.
 *
 * Run: node --expose-gc --import tsx fill-process.ts <count> <size> [junk]
 */
import { randomBytes } from 'node:crypto';
import { MemoryStore } from './index.js';

const [count, size, junk = 0] = process.argv.slice(2).map(Number) as [number, number, number?];
const DAY = 86_400_000;
const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error('run with --expose-gc');
/** Full collections until nothing more is freed: V8 frees ArrayBuffer memory on a background thread after a collection. */
async function collect(): Promise<void> {
  let previous = Infinity;
  for (;;) {
    gc!();
    await new Promise((resolve) => setTimeout(resolve, 20));
    const { arrayBuffers } = process.memoryUsage();
    if (arrayBuffers >= previous) return;
    previous = arrayBuffers;
  }
}

await collect();
const before = process.memoryUsage();
const store = new MemoryStore({ sweepIntervalMs: 0 });
for (let index = 0; index < count; index++) {
  const id = randomBytes(32).toString('hex');
  const claim = await store.claim({ id, fingerprint: 'f'.repeat(64), leaseMs: DAY });
  if (claim.status !== 'acquired') throw new Error(`claim ${index}: ${claim.status}`);
  for (let each = 0; each < junk; each++) Buffer.from(`garbage ${index}/${each}`.padEnd(500));
  await store.complete(id, claim.token, Buffer.alloc(size, index), DAY);
}
await collect();
const after = process.memoryUsage();
process.stdout.write(`${JSON.stringify({ rssGrowth: after.rss - before.rss, arrayBuffersGrowth: after.arrayBuffers - before.arrayBuffers, bytes: store.bytes, records: store.size })}\n`);
