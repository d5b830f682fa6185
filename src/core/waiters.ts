/**
 * Who is waiting for which record to settle, and waking them: shared by the in-process
 * signal and the stores' pushed notifications (PostgreSQL LISTEN, Redis pub/sub).
 */
type Wake = () => void;

export class Waiters {
  readonly #byId = new Map<string, Set<Wake>>();

  /** Resolves on `wake(id)` (or `wakeAll()`) or after `timeoutMs`, whichever is first; never rejects. */
  wait(id: string, timeoutMs: number): Promise<void> {
    const wakers = this.#byId.get(id) ?? new Set<Wake>();
    this.#byId.set(id, wakers);
    return new Promise<void>((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        wakers.delete(wake);
        if (wakers.size === 0 && this.#byId.get(id) === wakers) this.#byId.delete(id);
        resolve();
      };
      const timer = setTimeout(wake, timeoutMs);
      wakers.add(wake);
    });
  }

  wake(id: string): void {
    const wakers = this.#byId.get(id);
    if (wakers !== undefined) for (const wake of [...wakers]) wake();
  }

  wakeAll(): void {
    for (const id of [...this.#byId.keys()]) this.wake(id);
  }
}
