/**
 * A keyed work queue for the controllers' API writes: at most `limit` jobs run at once, one job per
 * key at a time (writes to one object stay in order), and an item queued for a key that is already
 * waiting joins it instead of queueing twice, so the backlog is bounded by the number of keys (e.g.
 * one node status per node) however fast the edges report. The job of a key runs with every item
 * that joined it, oldest first; the newest one is usually the one that matters.
 */
export class KeyedWorkQueue<T> {
  private readonly waiting = new Map<string, T[]>();
  private readonly running = new Set<string>();
  private stopped = false;

  constructor(
    private readonly limit: number,
    private readonly run: (key: string, items: T[]) => Promise<void>,
    private readonly onError: (key: string, err: unknown) => void = () => {},
  ) {}

  push(key: string, item: T): void {
    if (this.stopped) return;
    const items = this.waiting.get(key);
    if (items) items.push(item);
    else this.waiting.set(key, [item]);
    this.pump();
  }

  /** Items waiting (not running) for `key`, or in total. */
  pending(key?: string): number {
    if (key !== undefined) return this.waiting.get(key)?.length ?? 0;
    let n = 0;
    for (const items of this.waiting.values()) n += items.length;
    return n;
  }

  get active(): number {
    return this.running.size;
  }

  /** Drops what is waiting; running jobs finish. */
  stop(): void {
    this.stopped = true;
    this.waiting.clear();
  }

  private pump(): void {
    if (this.running.size >= this.limit) return;
    for (const [key, items] of this.waiting) {
      if (this.running.size >= this.limit) return;
      if (this.running.has(key)) continue; // its next batch waits for the current one
      this.waiting.delete(key);
      this.running.add(key);
      let job: Promise<void>;
      try {
        job = this.run(key, items);
      } catch (e) {
        job = Promise.reject(e);
      }
      void job
        .catch((e) => this.onError(key, e))
        .finally(() => {
          this.running.delete(key);
          this.pump();
        });
    }
  }
}
