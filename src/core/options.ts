/**
 * Checks the options of a public entry point when they are given (the middleware or wrapper
 * is created), so a mistake fails at start-up with an `InvalidOptionError` naming the option,
 * not at the first request, and never as a store outage.
 */
import { InvalidOptionError } from './errors.js';
import { MAX_TIMER_MS, describeValue } from './store-kit.js';
import type { IdempotencyStore } from './types.js';

/** The options of one entry point (`owner`, e.g. `'idempotency()'`), read one by one. */
export class OptionReader {
  readonly #owner: string;
  readonly #options: Record<string, unknown>;

  /** `known`: every option name the entry point takes; any other is refused (a typo must not silently do nothing). */
  constructor(owner: string, options: unknown, known: readonly string[]) {
    this.#owner = owner;
    if (typeof options !== 'object' || options === null) throw new InvalidOptionError(`${owner}: options must be an object, got ${describeValue(options)}`);
    this.#options = options as Record<string, unknown>;
    for (const name of Object.keys(options)) {
      if (!known.includes(name) && (options as Record<string, unknown>)[name] !== undefined) {
        throw new InvalidOptionError(`${owner}: unknown option \`${name}\` (known: ${known.join(', ')})`, name);
      }
    }
  }

  /** `shown`: the value as the message may quote it (by default only its type: a string may be a URL with a password). */
  #fail(name: string, expected: string, shown = describeValue(this.#options[name])): never {
    throw new InvalidOptionError(`${this.#owner}: \`${name}\` must be ${expected}, got ${shown}`, name);
  }

  store(name = 'store'): IdempotencyStore {
    const value = this.#options[name] as Partial<IdempotencyStore> | undefined;
    if (value === undefined) throw new InvalidOptionError(`${this.#owner}: \`${name}\` is required (a MemoryStore, SqliteStore, PostgresStore or RedisStore)`, name);
    for (const method of ['claim', 'complete', 'release', 'extend'] as const) {
      if (typeof value?.[method] !== 'function') this.#fail(name, `an IdempotencyStore (with claim, complete, release and extend)`);
    }
    return value as IdempotencyStore;
  }

  requiredFunction<F>(name: string): F {
    const value = this.#options[name];
    if (typeof value !== 'function') this.#fail(name, 'a function');
    return value as F;
  }

  function<F>(name: string): F | undefined {
    const value = this.#options[name];
    if (value !== undefined && typeof value !== 'function') this.#fail(name, 'a function');
    return value as F | undefined;
  }

  boolean(name: string, fallback: boolean): boolean {
    const value = this.#options[name];
    if (value === undefined) return fallback;
    if (typeof value !== 'boolean') this.#fail(name, 'true or false');
    return value;
  }

  string(name: string, fallback: string): string {
    const value = this.#options[name];
    if (value === undefined) return fallback;
    if (typeof value !== 'string' || value.length === 0) this.#fail(name, 'a non-empty string');
    return value;
  }

  strings(name: string, fallback: readonly string[]): string[] {
    const value = this.#options[name];
    if (value === undefined) return [...fallback];
    if (!Array.isArray(value) || !value.every((item) => typeof item === 'string' && item.length > 0)) this.#fail(name, 'an array of non-empty strings');
    return value as string[];
  }

  oneOf<T extends string>(name: string, allowed: readonly T[], fallback: T): T {
    const value = this.#options[name];
    if (value === undefined) return fallback;
    // A choice's misspelling is no secret: quoting it shows the typo.
    if (!allowed.includes(value as T)) this.#fail(name, allowed.map((item) => `'${item}'`).join(' or '), typeof value === 'string' ? `'${value.slice(0, 40)}'` : undefined);
    return value as T;
  }

  /** A positive whole number of bytes or characters, or `fallback`. */
  count(name: string, fallback: number): number {
    const value = this.#options[name];
    if (value === undefined) return fallback;
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0) this.#fail(name, 'a positive whole number');
    return value;
  }

  /** Milliseconds that become a timer's delay (at most what a Node timer keeps), or `fallback`. */
  duration(name: string, fallback: number, { zero = false } = {}): number {
    const value = this.#options[name];
    if (value === undefined) return fallback;
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < (zero ? 0 : 1) || value > MAX_TIMER_MS) {
      this.#fail(name, `a whole number of milliseconds from ${zero ? 0 : 1} to ${MAX_TIMER_MS}`);
    }
    return value;
  }

  /** The raw value, for options whose shape the caller checks itself. */
  raw(name: string): unknown {
    return this.#options[name];
  }

  /** Fails naming `name`: for the caller's own checks of a raw value. */
  invalid(name: string, expected: string): never {
    this.#fail(name, expected);
  }
}
