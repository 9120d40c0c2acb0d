/**
 * A fixed-bucket histogram as Prometheus keeps one: a count per upper bound (not cumulative here;
 * the exposition adds them up), one more above the last bound, and the sum of what was observed.
 */
export class Histogram {
  readonly buckets: number[];
  sum = 0;

  constructor(readonly bounds: readonly number[]) {
    this.buckets = new Array<number>(bounds.length + 1).fill(0);
  }

  observe(v: number): void {
    let i = 0;
    while (i < this.bounds.length && v > this.bounds[i]!) i++;
    this.buckets[i]!++;
    this.sum += v;
  }

  get count(): number {
    return this.buckets.reduce((a, b) => a + b, 0);
  }
}
