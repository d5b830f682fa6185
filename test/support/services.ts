/**
 * Where the real servers are, and what to do when one is missing: under CI (`CI=true`) a
 * missing server is a failure; on a developer machine the suite is skipped with the reason.
 */
import net from 'node:net';

export const POSTGRES_URL = process.env.ONCELY_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
export const REDIS_URL = process.env.ONCELY_REDIS_URL ?? 'redis://127.0.0.1:6379';

function reachable(url: string): Promise<boolean> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = net.connect({ host: hostname, port: Number(port) });
    socket.setTimeout(1000);
    socket.once('connect', () => { socket.destroy(); resolve(true); });
    socket.once('timeout', () => { socket.destroy(); resolve(false); });
    socket.once('error', () => resolve(false));
  });
}

/**
 * `undefined` when the server answers; otherwise the reason to skip. Throws under CI so a
 * missing service turns the run red instead of silently testing less.
 */
export async function skipUnlessReachable(service: string, url: string): Promise<string | undefined> {
  if (await reachable(url)) return undefined;
  const reason = `${service} is not reachable at ${url}`;
  if (process.env.CI === 'true') throw new Error(`${reason}; CI requires it (see README "Running the tests")`);
  console.log(`# skipping ${service} tests: ${reason}`);
  return reason;
}
