/**
 * The command line of `oncely check`, validated: every mistake is a `CliError` with a message
 * that says what to change (the command exits 2 on it).
 */
import { readFileSync } from 'node:fs';
import { CliError } from '../cli-error.js';
import { defaultContentType } from './bodies.js';

export type KeyStyle = 'quoted' | 'bare';

/** The options as commander parsed them. */
export interface RawOptions {
  method: string;
  data?: string;
  otherData?: string;
  /** Every `-H`; `undefined` when none was given. */
  header?: string[];
  concurrency: string;
  timeout: string;
  headerName: string;
  keyStyle: KeyStyle;
}

export interface CheckConfig {
  url: URL;
  method: string;
  /** The body given with `--data`; `undefined`: a fresh `{"oncely_check": "<uuid>"}` per probe. */
  data: Buffer | undefined;
  /** The body given with `--other-data`; `undefined`: derived from the first body. */
  otherData: Buffer | undefined;
  /** Whether requests carry a body (not for GET and HEAD). */
  hasBody: boolean;
  /** `-H` headers, in order, and the Content-Type when the body has one. */
  headers: [string, string][];
  contentType: string | undefined;
  headerName: string;
  keyStyle: KeyStyle;
  concurrency: number;
  timeoutMs: number;
}

/** RFC 9110 token: method and field names. */
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** What Node sends as a header value: TAB, visible ASCII, space, and Latin-1 bytes. */
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
const NO_BODY = new Set(['GET', 'HEAD']);
const MAX_CONCURRENCY = 1000;

type ReadFile = (path: string) => Buffer;

export function parseConfig(target: string, raw: RawOptions, readFile: ReadFile = readFileSync): CheckConfig {
  const url = parseUrl(target);
  if (!TOKEN.test(raw.method)) throw new CliError(`--method must be an HTTP method such as POST (got ${JSON.stringify(raw.method)})`);
  const method = raw.method.toUpperCase();
  if (!TOKEN.test(raw.headerName)) throw new CliError(`--header-name must be a header field name (got ${JSON.stringify(raw.headerName)})`);
  const hasBody = !NO_BODY.has(method);
  if (!hasBody && (raw.data !== undefined || raw.otherData !== undefined)) throw new CliError(`${method} requests carry no body: leave out --data and --other-data`);
  const data = raw.data === undefined ? undefined : readBody('--data', raw.data, readFile);
  const otherData = raw.otherData === undefined ? undefined : readBody('--other-data', raw.otherData, readFile);
  if (data !== undefined && otherData !== undefined && data.equals(otherData)) throw new CliError('--other-data must differ from --data');
  const headers = (raw.header ?? []).map((line) => parseHeader(line, raw.headerName));
  const given = headers.find(([name]) => name.toLowerCase() === 'content-type')?.[1];
  const sample = data ?? Buffer.from('{}');
  return {
    url,
    method,
    data,
    otherData,
    hasBody,
    headers: headers.filter(([name]) => name.toLowerCase() !== 'content-type'),
    contentType: hasBody ? (given ?? defaultContentType(sample)) : given,
    headerName: raw.headerName,
    keyStyle: raw.keyStyle,
    concurrency: parseWhole('--concurrency', raw.concurrency, 2, MAX_CONCURRENCY),
    timeoutMs: parseWhole('--timeout', raw.timeout, 1, 600_000),
  };
}

function parseUrl(target: string): URL {
  let url: URL;
  try {
    url = new URL(target);
  } catch {
    throw new CliError(`not a URL: ${JSON.stringify(target)} (expected e.g. http://localhost:3000/orders)`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new CliError(`the URL must start with http:// or https:// (got ${url.protocol})`);
  return url;
}

function readBody(option: string, value: string, readFile: ReadFile): Buffer {
  if (!value.startsWith('@')) return Buffer.from(value, 'utf8');
  const path = value.slice(1);
  if (path === '') throw new CliError(`${option} @file needs a file name after @`);
  try {
    return readFile(path);
  } catch (error) {
    const reason = (error as { code?: string }).code ?? (error as Error).message;
    throw new CliError(`cannot read the ${option} file ${JSON.stringify(path)}: ${reason}`);
  }
}

/** `"Authorization: Bearer x"` → `['Authorization', 'Bearer x']`. */
export function parseHeader(line: string, keyHeader: string): [string, string] {
  const colon = line.indexOf(':');
  if (colon <= 0) throw new CliError(`--header must look like "Name: value" (got ${JSON.stringify(line)})`);
  const name = line.slice(0, colon).trim();
  const value = line.slice(colon + 1).trim();
  if (!TOKEN.test(name)) throw new CliError(`--header: ${JSON.stringify(name)} is not a header field name`);
  if (!FIELD_VALUE.test(value)) throw new CliError(`--header: the value of ${name} has characters HTTP cannot carry (control characters or non-Latin-1)`);
  const lower = name.toLowerCase();
  if (lower === keyHeader.toLowerCase()) throw new CliError(`--header: do not send ${name}; the check sends its own keys, a new one per probe`);
  if (lower === 'content-length' || lower === 'transfer-encoding') throw new CliError(`--header: ${name} is computed from the body; leave it out`);
  return [name, value];
}

function parseWhole(option: string, value: string, min: number, max: number): number {
  const number = /^\d+$/.test(value.trim()) ? Number(value.trim()) : Number.NaN;
  if (!Number.isSafeInteger(number) || number < min || number > max) throw new CliError(`${option} must be a whole number from ${min} to ${max} (got ${JSON.stringify(value)})`);
  return number;
}
