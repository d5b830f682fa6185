/**
 * Sending: the only I/O of `oncely check`. node:http rather than fetch, because the probes need
 * what fetch hides: header values fetch refuses or rewrites (a TAB, a Latin-1 byte, two lines of
 * one field), and the moment a request has been written (to send a retry while it is in flight).
 */
import http from 'node:http';
import https from 'node:https';
import { performance } from 'node:perf_hooks';
import type { Reply } from './types.js';

/** Responses are read whole to compare them byte for byte; beyond this the request is failed. */
const MAX_BODY_BYTES = 16 * 1024 * 1024;

export interface Outgoing {
  method: string;
  /** Header fields; an array value is sent as one line per element. */
  headers: Record<string, string | string[]>;
  body?: Buffer;
}

export interface SendHooks {
  /** Called once the whole request has been handed to the operating system. */
  onSent?: () => void;
}

export interface Sender {
  send(request: Outgoing, hooks?: SendHooks): Promise<Reply>;
  /** Closes the sockets still open. */
  close(): void;
}

/** A sender for one URL. Every request uses its own connection (no keep-alive: a socket the
 * server closed while idle would fail a probe for a reason that has nothing to do with it). */
export function createSender(url: URL, timeoutMs: number): Sender {
  const client = url.protocol === 'https:' ? https : http;
  const agent = new client.Agent({ keepAlive: false });

  function send(request: Outgoing, hooks: SendHooks = {}): Promise<Reply> {
    return new Promise((resolve) => {
      const at = performance.now();
      let headMs = 0;
      let settled = false;
      const finish = (reply: Omit<Reply, 'at' | 'ms' | 'headMs'>): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        const ms = performance.now() - at;
        resolve({ ...reply, at, headMs: headMs || ms, ms });
      };
      const fail = (error: unknown): void => finish({ status: 0, headers: {}, body: Buffer.alloc(0), error: describeError(error) });

      const headers: Record<string, string | string[]> = { ...request.headers };
      if (request.body !== undefined) headers['content-length'] = String(request.body.length);
      let outgoing: http.ClientRequest;
      try {
        outgoing = client.request(url, { method: request.method, headers, agent });
      } catch (error) {
        // A header value Node refuses to send (validated earlier, so not expected here).
        return fail(error);
      }
      const timer = setTimeout(() => outgoing.destroy(new Error(`timeout after ${timeoutMs} ms`)), timeoutMs);
      outgoing.on('error', fail);
      outgoing.on('finish', () => hooks.onSent?.());
      outgoing.on('response', (response) => {
        headMs = performance.now() - at;
        const chunks: Buffer[] = [];
        let size = 0;
        response.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > MAX_BODY_BYTES) outgoing.destroy(new Error(`response body over ${MAX_BODY_BYTES} bytes`));
          else chunks.push(chunk);
        });
        response.on('error', fail);
        response.on('end', () => finish({ status: response.statusCode ?? 0, headers: flatten(response.headers), body: Buffer.concat(chunks) }));
      });
      outgoing.end(request.body);
    });
  }

  return { send, close: () => agent.destroy() };
}

function flatten(headers: http.IncomingHttpHeaders): Record<string, string> {
  const flat: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) if (value !== undefined) flat[name] = Array.isArray(value) ? value.join(', ') : value;
  return flat;
}

/** `connect ECONNREFUSED 127.0.0.1:3000`; Node's AggregateError (IPv6 and IPv4 both refused) has no message, only a code. */
export function describeError(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const code = (error as { code?: unknown }).code;
  if (error.message) return error.message;
  if (error instanceof AggregateError && error.errors.length > 0) return describeError(error.errors[error.errors.length - 1]);
  return typeof code === 'string' ? code : error.name;
}
