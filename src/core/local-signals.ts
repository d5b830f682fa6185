/**
 * Wakes waiters in this process as soon as a record they wait on is completed or released
 * here, so `onInProgress: { waitMs }` does not have to wait for its next poll.
 */
type Wake = () => void;

const waiters = new WeakMap<object, Map<string, Set<Wake>>>();

/** Resolves on `signalSettled(store, id)` or after `ms`, whichever is first. */
export function waitForSettle(store: object, id: string, ms: number): Promise<void> {
  const byId = waiters.get(store) ?? new Map<string, Set<Wake>>();
  waiters.set(store, byId);
  const wakers = byId.get(id) ?? new Set<Wake>();
  byId.set(id, wakers);
  return new Promise<void>((resolve) => {
    const wake = () => {
      clearTimeout(timer);
      wakers.delete(wake);
      if (wakers.size === 0) byId.delete(id);
      resolve();
    };
    const timer = setTimeout(wake, ms);
    wakers.add(wake);
  });
}

export function signalSettled(store: object, id: string): void {
  const set = waiters.get(store)?.get(id);
  if (set) for (const wake of [...set]) wake();
}
