import type { Engine } from './engines.js';
import type { Results } from './results.js';

export interface BenchContext {
  engines: Engine[];
  results: Results;
  quick: boolean;
  /** The run's own directory (under it, anything a metric makes for itself: the cluster labs). */
  base: string;
  /** Engines in alternating order for repetition `rep` (A B, B A, …) so neither always goes first. */
  order(rep: number): Engine[];
}
