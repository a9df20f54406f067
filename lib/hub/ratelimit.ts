/** A token bucket: `rate` tokens a second, at most `burst` saved up. */
export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(readonly rate: number, readonly burst: number, now = performance.now()) {
    this.tokens = burst;
    this.last = now;
  }

  /**
   * Takes one token, going into debt when there is none. Returns how long (ms) until the balance is
   * back to zero: 0 means go on, more means the caller should hold off that long.
   */
  take(now = performance.now()): number {
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) * this.rate) / 1000);
    this.last = now;
    this.tokens -= 1;
    return this.tokens >= 0 ? 0 : (-this.tokens * 1000) / this.rate;
  }
}
