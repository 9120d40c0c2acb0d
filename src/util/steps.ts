/**
 * Timestamps of the steps of one long operation (swarm init, join), written to stderr when
 * BERTH_TRACE_STEPS is set: where the time of a slow command goes, without a profiler.
 */
export class Steps {
  static readonly on = Boolean(process.env.BERTH_TRACE_STEPS);
  private readonly t0 = performance.now();
  /** Wall-clock start, so that steps logged by the hosts of a lab line up. */
  private readonly at = Steps.on ? new Date().toISOString() : '';
  private last = this.t0;
  private readonly parts: string[] = [];

  /** `what` as a function when naming the operation costs something: called only when the steps are written. */
  constructor(private readonly what: string | (() => string)) {}

  mark(step: string): void {
    if (!Steps.on) return;
    const now = performance.now();
    this.parts.push(`${step} ${(now - this.last).toFixed(1)}`);
    this.last = now;
  }

  done(): void {
    if (Steps.on) console.error(`berthd: steps of ${typeof this.what === 'string' ? this.what : this.what()} (ms, from ${this.at}): ${this.parts.join(', ')}; total ${(performance.now() - this.t0).toFixed(1)}`);
  }
}
