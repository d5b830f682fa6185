/**
 * A load balancer in front of the shop that fails the way real ones and real networks do.
 * Each request takes the next fault of the list it was started with; once the list is used up,
 * requests pass through.
 *
 * - `'pass'`: forward the request and relay the shop's answer.
 * - `'answer-503'`: forward the request, let the shop finish (the order is made), then answer
 *   503 instead of relaying, as a proxy does when it gives up on a slow upstream or restarts.
 * - `'cut-connection'`: forward the request, let the shop answer, then destroy the client's
 *   socket before a byte of the answer: the client sees a network error, the work is done.
 */
import { createServer, request, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';

export type Fault = 'pass' | 'answer-503' | 'cut-connection';

export interface FlakyProxy {
  /** `http://127.0.0.1:PORT`; paths are forwarded as they are. */
  url: string;
  close(): Promise<void>;
}

/**
 * Not forwarded: headers that belong to one connection (RFC 9110 §7.6.1), and `host`, which
 * the request to the target sets.
 */
const NOT_FORWARDED = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'trailer', 'host']);

const endToEnd = (headers: IncomingHttpHeaders): IncomingHttpHeaders => Object.fromEntries(Object.entries(headers).filter(([name]) => !NOT_FORWARDED.has(name)));

/** Starts a proxy to `target` (e.g. the shop's url) that applies `faults` to its first requests, in order. */
export async function startFlakyProxy(target: string, faults: Fault[]): Promise<FlakyProxy> {
  const upcoming = [...faults];
  const server = createServer((req, res) => {
    const fault = upcoming.shift() ?? 'pass';
    // agent: false, one upstream connection per request, so nothing outlives close().
    const upstream = request(new URL(req.url ?? '/', target), { method: req.method, headers: endToEnd(req.headers), agent: false }, (answer) => {
      if (fault === 'pass') {
        res.writeHead(answer.statusCode ?? 502, endToEnd(answer.headers));
        answer.pipe(res);
        return;
      }
      // Read the whole answer first: the shop has finished its work when the client is failed.
      answer.resume().once('end', () => {
        if (fault === 'cut-connection') req.socket.destroy();
        else res.writeHead(503, { 'content-type': 'text/plain' }).end('503 Service Unavailable\n');
      });
    });
    upstream.once('error', () => (res.headersSent ? res.destroy() : res.writeHead(502).end()));
    req.pipe(upstream);
  });
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    async close() {
      const closed = new Promise((resolve) => server.close(resolve));
      server.closeAllConnections();
      await closed;
    },
  };
}
