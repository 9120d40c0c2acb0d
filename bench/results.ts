/** Collected samples per metric and engine, and the summary (median, p90, ratio berth/Docker). */
import { median, p90, quantile } from './util.js';

export interface MetricDef {
  key: string;
  group: string;
  label: string;
  unit: string;
  /** Which direction is better, for reading the ratio. */
  better: 'lower' | 'higher';
  /** The target for berth, in words, when there is one. */
  target?: string;
}

export interface MetricSummary extends MetricDef {
  engines: Record<string, { n: number; median: number; p90: number; p99?: number; min: number; max: number; values: number[] }>;
  /** median(berth) / median(docker) */
  ratio?: number;
  notes: string[];
}

export class Results {
  readonly defs = new Map<string, MetricDef>();
  readonly samples = new Map<string, Map<string, number[]>>();
  readonly notes = new Map<string, string[]>();
  readonly errors: string[] = [];
  /** Extra data for the report (scale curves, process counts…). */
  readonly extra: Record<string, unknown> = {};

  define(d: MetricDef): void {
    if (!this.defs.has(d.key)) this.defs.set(d.key, d);
  }

  add(key: string, engine: string, value: number): void {
    if (!this.defs.has(key)) throw new Error(`undefined metric ${key}`);
    let m = this.samples.get(key);
    if (!m) this.samples.set(key, (m = new Map()));
    let v = m.get(engine);
    if (!v) m.set(engine, (v = []));
    v.push(value);
  }

  note(key: string, text: string): void {
    const n = this.notes.get(key) ?? [];
    if (!n.includes(text)) n.push(text);
    this.notes.set(key, n);
  }

  summary(): MetricSummary[] {
    const out: MetricSummary[] = [];
    for (const d of this.defs.values()) {
      const engines: MetricSummary['engines'] = {};
      for (const [eng, vals] of this.samples.get(d.key) ?? []) {
        engines[eng] = {
          n: vals.length, median: median(vals), p90: p90(vals),
          min: vals.reduce((a, b) => Math.min(a, b), Infinity), max: vals.reduce((a, b) => Math.max(a, b), -Infinity),
          ...(vals.length >= 50 ? { p99: quantile(vals, 0.99) } : {}),
          values: vals.length > 1000 ? [] : vals.map((x) => Math.round(x * 1000) / 1000),
        };
      }
      const b = engines.berth?.median;
      const dk = engines.docker?.median;
      const ratio = b !== undefined && dk !== undefined && dk !== 0 && Number.isFinite(b / dk) ? b / dk : undefined;
      out.push({ ...d, engines, ...(ratio !== undefined ? { ratio } : {}), notes: this.notes.get(d.key) ?? [] });
    }
    return out;
  }
}
