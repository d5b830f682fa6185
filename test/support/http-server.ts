/**
 * A child-process HTTP server for the crash tests: the fetch adapter on the store named by
 * ONCELY_WORKER_STORE (see store-from-env.ts), served on an ephemeral port
 * that it prints. Each execution appends a line to ONCELY_WORKER_EFFECTS; `X-Sleep-Ms` delays
 * the answer.
 */
import { appendFileSync } from 'node:fs';
import { serve } from '@hono/node-server';
import { withIdempotency } from '../../src/http/fetch/index.js';
import { storeFromEnv } from './store-from-env.js';

const env = process.env as Record<string, string>;

const handler = withIdempotency(
  async (request) => {
    appendFileSync(env.ONCELY_WORKER_EFFECTS!, `${process.pid}\n`);
    await new Promise((resolve) => setTimeout(resolve, Number(request.headers.get('x-sleep-ms') ?? 0)));
    return Response.json({ servedBy: process.pid }, { status: 201 });
  },
  { store: storeFromEnv(), required: true, leaseMs: Number(env.ONCELY_WORKER_LEASE_MS ?? 30_000) },
);

const server = serve({ fetch: handler, port: 0, hostname: '127.0.0.1' }, (info) => process.stdout.write(`listening ${info.port}\n`));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
