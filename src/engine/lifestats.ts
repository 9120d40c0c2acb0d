import { Histogram } from '../util/histogram.js';

/** Container starts go from tens of milliseconds to seconds; a stop waits up to its timeout. */
const START_BOUNDS = [0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
const STOP_BOUNDS = [0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60];

/** Starts and stops the engine carried out since berthd started, for /metrics. */
export class LifecycleStats {
  readonly starts = { ok: 0, failed: 0 };
  readonly startSeconds = new Histogram(START_BOUNDS);
  stops = 0;
  readonly stopSeconds = new Histogram(STOP_BOUNDS);

  /** A start (by the API or a restart policy) that succeeded or failed after `t0` (process.hrtime.bigint()). */
  started(t0: bigint, ok: boolean): void {
    if (ok) this.starts.ok++;
    else this.starts.failed++;
    this.startSeconds.observe(secondsSince(t0));
  }

  /** A stop (stop, restart) from its signal to the container's recorded exit. */
  stopped(t0: bigint): void {
    this.stops++;
    this.stopSeconds.observe(secondsSince(t0));
  }
}

function secondsSince(t0: bigint): number {
  return Number(process.hrtime.bigint() - t0) / 1e9;
}
