/** Concurrent callers asking for the same key share one in-progress promise. */
export class SingleFlight<K, V> {
  private readonly pending = new Map<K, Promise<V>>();

  run(key: K, fn: () => Promise<V>): Promise<V> {
    let p = this.pending.get(key);
    if (!p) {
      p = fn().finally(() => this.pending.delete(key));
      this.pending.set(key, p);
    }
    return p;
  }

  get size(): number {
    return this.pending.size;
  }
}
