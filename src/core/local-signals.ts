/**
 * Wakes waiters in this process as soon as a record they wait on is completed or released
 * here, so a waiting duplicate does not have to wait for its next poll.
 */
import { Waiters } from './waiters.js';

const byStore = new WeakMap<object, Waiters>();

/** Resolves on `signalSettled(store, id)` or after `ms`, whichever is first. */
export function waitForSettle(store: object, id: string, ms: number): Promise<void> {
  let waiters = byStore.get(store);
  if (!waiters) byStore.set(store, (waiters = new Waiters()));
  return waiters.wait(id, ms);
}

export function signalSettled(store: object, id: string): void {
  byStore.get(store)?.wake(id);
}
