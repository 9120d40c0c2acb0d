/**
 * Prometheus' text exposition format (version 0.0.4), written from plain data. berth's figures
 * are sampled at scrape time from elsewhere (kernel counters, the resolver's native thread, the
 * engine), so they are rendered as they are read rather than kept in a client library's registry.
 */

export const CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

export type Labels = Record<string, string>;
export interface Sample { labels?: Labels; value: number; /** `_bucket`, `_sum`, `_count` of a histogram. */ suffix?: string }
export interface Family { name: string; help: string; type: 'counter' | 'gauge' | 'histogram'; samples: Sample[] }

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function escapeHelp(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

/** Go's strconv.FormatFloat(v, 'g', -1, 64) for the values Prometheus parses: +Inf, -Inf, NaN. */
export function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

function labelText(labels: Labels | undefined): string {
  const entries = Object.entries(labels ?? {});
  if (!entries.length) return '';
  for (const [k] of entries) if (!LABEL_NAME.test(k) || k.startsWith('__')) throw new Error(`metrics: bad label name ${k}`);
  return `{${entries.map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(',')}}`;
}

/**
 * A histogram's samples from per-bucket counts (`buckets[i]` counts values ≤ `bounds[i]` and above
 * the bound before; one more for above the last): cumulative `_bucket`s with `le`, `+Inf`, `_sum`
 * and `_count`, as Prometheus expects them.
 */
export function histogramSamples(labels: Labels, bounds: readonly number[], buckets: readonly number[], sum: number): Sample[] {
  const out: Sample[] = [];
  let acc = 0;
  bounds.forEach((b, i) => {
    acc += buckets[i] ?? 0;
    out.push({ suffix: '_bucket', labels: { ...labels, le: formatValue(b) }, value: acc });
  });
  acc += buckets[bounds.length] ?? 0;
  out.push({ suffix: '_bucket', labels: { ...labels, le: '+Inf' }, value: acc });
  out.push({ suffix: '_sum', labels, value: sum });
  out.push({ suffix: '_count', labels, value: acc });
  return out;
}

/** The families as one exposition: HELP and TYPE before each family's samples, one line each. */
export function render(families: Family[]): string {
  const seen = new Set<string>();
  const lines: string[] = [];
  for (const f of families) {
    if (!METRIC_NAME.test(f.name)) throw new Error(`metrics: bad metric name ${f.name}`);
    if (seen.has(f.name)) throw new Error(`metrics: ${f.name} twice`);
    seen.add(f.name);
    lines.push(`# HELP ${f.name} ${escapeHelp(f.help)}`, `# TYPE ${f.name} ${f.type}`);
    for (const s of f.samples) lines.push(`${f.name}${s.suffix ?? ''}${labelText(s.labels)} ${formatValue(s.value)}`);
  }
  return lines.join('\n') + '\n';
}
