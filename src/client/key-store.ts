/**
 * Where a key lives between attempts that do not share memory: a page reload in the middle
 * of a checkout, a process that restarts and resumes its work.
 */
import { InvalidOptionError } from '../core/errors.js';
import { checkKey } from './key.js';

/**
 * Keeps one Idempotency-Key per named operation (`'checkout'`, `'order:42'`). `send()` reads
 * it before the first attempt (and saves a new one if there is none), and deletes it once the
 * operation has a final outcome, so the next operation of that name gets a new key. Each method
 * may return a promise (IndexedDB, a file, a database); a synchronous store (like the two
 * below) lets calls of one operation started together, a double click, share one key even
 * from two clients, because the read and the write happen without yielding.
 */
export interface KeyStore {
  get(operation: string): string | undefined | Promise<string | undefined>;
  set(operation: string, key: string): void | Promise<void>;
  delete(operation: string): void | Promise<void>;
}

/** The part of the Web Storage API (`sessionStorage`, `localStorage`) the key store uses. */
interface WebStorage {
  getItem(name: string): string | null;
  setItem(name: string, value: string): void;
  removeItem(name: string): void;
}

/**
 * Keys in the browser's `sessionStorage` under `prefix + operation`: they survive a reload of
 * the page and end with the tab, which is the life of a checkout. `sessionStorage` is looked up
 * on each use, so the store can be created in code that also runs on a server (SSR); using it
 * where there is no `sessionStorage` throws.
 *
 * @example
 * ```ts
 * const send = createIdempotentFetch({ keyStore: sessionStorageKeyStore() });
 * // The same key after a reload, until the order has a final answer.
 * const res = await send('/orders', { method: 'POST', body }, { operation: `checkout:${cartId}` });
 * ```
 */
export const sessionStorageKeyStore = (prefix = 'oncely:'): KeyStore => {
  const storage = (): WebStorage => {
    const found = (globalThis as { sessionStorage?: WebStorage }).sessionStorage;
    if (!found) throw new InvalidOptionError('sessionStorageKeyStore(): sessionStorage is not available here (it exists in browsers); use memoryKeyStore() or your own KeyStore');
    return found;
  };
  return {
    get: (operation) => storage().getItem(prefix + operation) ?? undefined,
    set: (operation, key) => storage().setItem(prefix + operation, key),
    delete: (operation) => storage().removeItem(prefix + operation),
  };
};

/**
 * Keys in a `Map` of this process or page: a retry of the same operation later in the same
 * process (a job runner, a CLI loop) reuses its key. Lost on exit or reload.
 */
export const memoryKeyStore = (): KeyStore => {
  const keys = new Map<string, string>();
  return {
    get: (operation) => keys.get(operation),
    set: (operation, key) => void keys.set(operation, key),
    delete: (operation) => void keys.delete(operation),
  };
};

const isPromise = <T>(value: T | Promise<T>): value is Promise<T> => typeof (value as { then?: unknown } | undefined)?.then === 'function';

/** `value`, or what it resolves to, passed to `then` — synchronously when it is not a promise. */
function after<T, R>(value: T | Promise<T>, then: (resolved: T) => R | Promise<R>): R | Promise<R> {
  return isPromise(value) ? Promise.resolve(value).then(then) : then(value);
}

/**
 * The key of `operation`: `explicit` if given, else the stored one, else `generate()`; saved
 * under the name before anything is sent. With a synchronous store this returns without
 * yielding, so nothing can run between the read and the write.
 */
export function operationKey(store: KeyStore, operation: string, explicit: string | undefined, generate: () => string): string | Promise<string> {
  return after(store.get(operation), (stored) => {
    let key: string;
    if (explicit !== undefined) key = explicit;
    else if (stored !== undefined) key = checkKey(stored, `The key kept for operation ${JSON.stringify(operation)}`);
    else key = generate();
    return key === stored ? key : after(store.set(operation, key), () => key);
  });
}

/** Deletes the key of a finished operation, unless a newer operation of that name already replaced it. */
export function forgetOperationKey(store: KeyStore, operation: string, key: string): void | Promise<void> {
  return after(store.get(operation), (stored) => (stored === key ? store.delete(operation) : undefined));
}
