/**
 * A doubly linked list that keeps entries in order of last use, for exact LRU eviction in
 * O(1) without touching the hash table: moving an entry relinks two pointers, where deleting
 * and re-inserting a Map key leaves a tombstone and, at a million keys, forces large rehashes.
 */
export interface RecencyNode {
  older: RecencyNode | undefined;
  newer: RecencyNode | undefined;
}

export class RecencyList<T extends RecencyNode> {
  private oldest: T | undefined;
  private newest: T | undefined;

  /** The least recently used entry. */
  get leastRecent(): T | undefined {
    return this.oldest;
  }

  /** Adds a new entry as the most recently used. */
  push(node: T): void {
    node.older = this.newest;
    node.newer = undefined;
    if (this.newest) this.newest.newer = node;
    else this.oldest = node;
    this.newest = node;
  }

  remove(node: T): void {
    if (node.older) node.older.newer = node.newer;
    else this.oldest = node.newer as T | undefined;
    if (node.newer) node.newer.older = node.older;
    else this.newest = node.older as T | undefined;
    node.older = node.newer = undefined;
  }

  /** Marks an entry as just used. */
  touch(node: T): void {
    if (node === this.newest) return;
    this.remove(node);
    this.push(node);
  }
}
