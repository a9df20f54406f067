/** Collects what a test receives and waits for an item matching a predicate (bounded). */
export class Collector<T> {
  readonly items: T[] = [];
  private waiters: { pred: (t: T) => boolean; from: number; resolve: (t: T) => void }[] = [];

  push(t: T): void {
    this.items.push(t);
    const i = this.items.length - 1;
    this.waiters = this.waiters.filter((w) => (i >= w.from && w.pred(t) ? (w.resolve(t), false) : true));
  }

  /** The position the next item will take: pass it to wait()/since() to look only at what comes after. */
  mark(): number {
    return this.items.length;
  }

  since(from: number, pred: (t: T) => boolean = () => true): T[] {
    return this.items.slice(from).filter(pred);
  }

  /** The first item from position `from` on matching `pred`, already there or arriving within `timeoutMs`. */
  wait(pred: (t: T) => boolean, from = 0, timeoutMs = 5000): Promise<T> {
    const seen = this.items.slice(from).find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const w = { pred, from, resolve: (t: T) => (clearTimeout(timer), resolve(t)) };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((x) => x !== w);
        reject(new Error(`nothing matching within ${timeoutMs} ms; last: ${JSON.stringify(this.items.slice(-5))}`));
      }, timeoutMs);
      this.waiters.push(w);
    });
  }
}
