/** Writes bench/results/latest.json (+ a dated copy) and docs/benchmarks.md (+ the scale plot). */
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import type { MetricSummary, Results } from './results.js';
import { linePlot } from './plot.js';
import { median } from './util.js';

export interface Meta {
  date: string;
  mode: 'quick' | 'full';
  engines: Record<string, string>;
  machine: { cores: number; cpu: string; memGiB: number; kernel: string; node: string; dockerServer: string; berth: string };
  command: string;
  durationS: number;
  /** Groups measured by later runs of some groups only (`--only`), newest last. */
  partial?: Array<{ groups: string[]; date: string; command: string; berth: string; dockerServer: string }>;
}

const COUNT_METRICS = new Set(['dns_fresh_miss']);
const SUM_METRICS = new Set(['dns_lost']);
/** Shown as a plain value, without p90 or ratio. */
const PLAIN_METRICS = new Set(['userland_proxies', 'scale_growth', 'ports_growth', 'rss_idle', 'rss_scale']);
/** Shown with their p99 beside the median (the issue's target is a p99). */
const P99_METRICS = new Set(['cluster_visibility']);

function fmt(v: number | undefined, unit: string): string {
  if (v === undefined || !Number.isFinite(v)) return '–';
  if (unit === 'q/s') return Math.round(v).toLocaleString('en-US');
  if (unit === 'Gbit/s') return v.toFixed(2);
  if (unit === 'x') return v.toFixed(2);
  if (unit === 'ms' || unit === 'MiB') return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
  return Number.isInteger(v) ? String(v) : v.toFixed(2);
}

function cell(m: MetricSummary, eng: string): string[] {
  const e = m.engines[eng];
  if (!e) return ['–', '–'];
  if (COUNT_METRICS.has(m.key)) return [`${e.values.reduce((a, b) => a + b, 0)} of ${e.n}`, ''];
  if (SUM_METRICS.has(m.key)) return [`${e.values.reduce((a, b) => a + b, 0)} in ${e.n} runs`, ''];
  if (PLAIN_METRICS.has(m.key) && e.n === 1) return [fmt(e.median, m.unit), ''];
  const tail = e.p99 !== undefined && (m.key.startsWith('dns_p99') || P99_METRICS.has(m.key)) ? ` (p99 ${fmt(e.p99, m.unit)})` : '';
  return [fmt(e.median, m.unit) + tail, fmt(e.p90, m.unit)];
}

export function markdown(meta: Meta, summary: MetricSummary[], results: { errors: string[] }, engines: string[], plotFile?: string): string {
  const L: string[] = [];
  L.push('# Benchmarks: berth and Docker side by side', '');
  L.push(`*Written by \`npm run bench\` (bench/) on ${meta.date}; ${meta.mode} run, ${Math.round(meta.durationS / 60)} min. Do not edit by hand: rerun instead.*`, '');
  L.push('## Machine', '');
  L.push(`- ${meta.machine.cores} cores (${meta.machine.cpu}), ${meta.machine.memGiB} GiB RAM, Linux ${meta.machine.kernel}, Node.js ${meta.machine.node}`);
  L.push(`- Docker ${meta.machine.dockerServer} (Debian's docker.io: dockerd with its own managed containerd, runc, default settings incl. the userland proxy)`);
  L.push(`- berth ${meta.machine.berth} (runc + conmon)`);
  if (meta.engines.podman) L.push(`- Podman ${meta.engines.podman} (Debian's podman: \`podman system service\` with netavark + aardvark-dns, runc, cgroupfs, nofile/nproc limits lowered because its defaults exceed this session's hard limits)`);
  L.push(`- Engines measured: ${engines.join(', ')}`, '');
  L.push('## How it was measured', '');
  L.push('- `npm run bench` (full), `npm run bench -- --quick` (smoke), `--only dns,ports,…` (groups: memory, lifecycle, dns, ports, scale, ports500, pull, cluster), `--engines berth,docker,podman` (default berth,docker), `--render` (rewrite this page from `bench/results/latest.json`). Every number below comes from one run: `' + meta.command + '`' + (meta.partial?.length ? ', except where said below.' : '.'));
  for (const p of meta.partial ?? []) {
    L.push(`- ${p.groups.map((g) => `"${g}"`).join(', ')}: from \`${p.command}\` on ${p.date} (berth ${p.berth}, Docker ${p.dockerServer}).`);
  }
  L.push('- `scripts/bench-setup.sh` installs docker.io, dnsperf and iperf3 (and podman with netavark and aardvark-dns when asked) with apt-get when missing, with a policy-rc.d that forbids starting services, and checks that no dockerd/containerd/docker0 appeared on the machine\'s own network.');
  L.push('- Every engine is private to the run: its own network namespace (`bb-<engine>-<pid>`, with `lo` and a veth pair whose end `bbhost0` holds the "host IP" 10.250.0.2), its own state directory and API socket; the daemons are started with `nsenter --net=`. Everything is removed at the end, and the run fails on leaks.');
  L.push('- Both engines are driven by the same client: raw HTTP requests to the Engine API v1.41 on the unix socket (the requests the docker CLI makes: `run -d` = create + start; `exec` = create + start attached + inspect), one connection per request. Both use the same busybox rootfs (`build/busybox.tar`).');
  L.push('- Podman\'s resolver is its network gateway (aardvark-dns), not 127.0.0.11: name lookups and dnsperf ask each container\'s own first `nameserver`. Ratios are always berth/Docker; Podman\'s columns are for reference.');
  L.push('- Repetitions are interleaved (A B, B A, …) so both engines see the same machine noise; the 2-core VM also runs other work (other engineers\' test suites), so absolute numbers drift and the **ratio berth/Docker** (of medians) is the number to read. For "lower is better" metrics a ratio below 1 means berth is faster; for throughput above 1 means berth is faster.');
  L.push('- Name reachability and fresh-name misses: the host\'s busybox `nslookup NAME <the container\'s nameserver>` and `ping -c1` run inside the asking container\'s namespace (`nsenter --net=/proc/PID/ns/net`), for every engine; "reachable" means the name resolves and the address answers one ping, polled until 20 s. dnsperf, iperf3 servers and the TCP echo server run the same way in container namespaces; clients run in the engine\'s namespace.', '');

  const groups = [...new Set(summary.map((m) => m.group))];
  for (const g of groups) {
    L.push(`## ${g}`, '');
    const ms = summary.filter((m) => m.group === g);
    const head = ['Metric', ...engines.flatMap((e) => [`${e} median`, `${e} p90`]), 'berth/Docker', 'Target (issue)'];
    L.push(`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`);
    for (const m of ms) {
      const ratio = COUNT_METRICS.has(m.key) || SUM_METRICS.has(m.key) || m.key === 'userland_proxies' ? '' : m.ratio !== undefined ? `${m.ratio.toFixed(2)}x` : '–';
      const row = [`${m.label} [${m.unit}]`, ...engines.flatMap((e) => cell(m, e)), ratio, m.target ?? ''];
      L.push(`| ${row.join(' | ')} |`);
    }
    L.push('');
    if (ms.some((m) => m.key.startsWith('iperf_'))) {
      L.push('Against each engine\'s own direct path (issue 6: throughput ≥ 0.95x, connect latency ≤ 1.1x):', '');
      L.push('| Path | ' + engines.map((e) => `${e} throughput / direct | ${e} latency / direct`).join(' | ') + ' |');
      L.push('|---|' + engines.map(() => '---|---').join('|') + '|');
      for (const p of ['lo', 'hostip']) {
        const row = [p === 'lo' ? '127.0.0.1' : 'host IP'];
        for (const e of engines) {
          const t = summary.find((m) => m.key === `iperf_${p}`)?.engines[e]?.median;
          const td = summary.find((m) => m.key === 'iperf_direct')?.engines[e]?.median;
          const c = summary.find((m) => m.key === `connect_${p}`)?.engines[e]?.median;
          const cd = summary.find((m) => m.key === 'connect_direct')?.engines[e]?.median;
          row.push(t !== undefined && td ? `${(t / td).toFixed(2)}x` : '–', c !== undefined && cd ? `${(c / cd).toFixed(2)}x` : '–');
        }
        L.push(`| ${row.join(' | ')} |`);
      }
      L.push('');
    }
    if (plotFile && g.startsWith('Scale')) {
      L.push(`![run -d latency against container count](${plotFile})`, '');
    }
    const notes = ms.flatMap((m) => m.notes.map((n) => `- ${m.label}: ${n}`));
    if (notes.length) L.push('Notes:', '', ...notes, '');
  }
  if (results.errors.length) {
    L.push('## Errors during the run', '', ...results.errors.map((e) => `- ${e}`), '');
  }
  return L.join('\n') + '\n';
}

/**
 * `partial`: a run of some groups only. The dated file holds this run alone; latest.json and the
 * page keep the other groups' numbers from the run before, and say which run each part is from.
 */
export async function writeAll(root: string, meta: Meta, results: Results, engines: string[], partial = false): Promise<void> {
  let summary = results.summary();
  const dir = join(root, 'bench', 'results');
  await fs.mkdir(dir, { recursive: true });
  const json = JSON.stringify({ meta, metrics: summary, extra: results.extra, errors: results.errors }, null, 1) + '\n';
  await fs.writeFile(join(dir, `${meta.date.replace(/[:]/g, '').slice(0, 15)}-${meta.mode}.json`), json);
  let outMeta = meta;
  let extra = results.extra;
  let errors = results.errors;
  const prev = partial ? await fs.readFile(join(dir, 'latest.json'), 'utf8').then((t) => JSON.parse(t) as { meta: Meta; metrics: MetricSummary[]; extra: Record<string, unknown>; errors: string[] }).catch(() => undefined) : undefined;
  if (prev) {
    const groups = [...new Set(summary.map((m) => m.group))];
    const mine = new Set(summary.map((m) => m.key));
    summary = [...prev.metrics.filter((m) => !mine.has(m.key)), ...summary];
    outMeta = {
      ...prev.meta,
      partial: [...(prev.meta.partial ?? []).filter((p) => !p.groups.every((g) => groups.includes(g))),
        { groups, date: meta.date, command: meta.command, berth: meta.machine.berth, dockerServer: meta.machine.dockerServer }],
    };
    extra = { ...prev.extra, ...results.extra };
    errors = [...prev.errors, ...results.errors];
  }
  await fs.writeFile(join(dir, 'latest.json'), JSON.stringify({ meta: outMeta, metrics: summary, extra, errors }, null, 1) + '\n');
  await writeDocs(root, outMeta, summary, { extra, errors }, prev ? Object.keys(prev.meta.engines) : engines);
}

/** `npm run bench -- --render`: rewrites docs/benchmarks.md and the plot from bench/results/latest.json. */
export async function renderLatest(root: string): Promise<void> {
  const j = JSON.parse(await fs.readFile(join(root, 'bench', 'results', 'latest.json'), 'utf8')) as
    { meta: Meta; metrics: MetricSummary[]; extra: Record<string, unknown>; errors: string[] };
  await writeDocs(root, j.meta, j.metrics, { extra: j.extra, errors: j.errors }, Object.keys(j.meta.engines));
}

async function writeDocs(root: string, meta: Meta, summary: MetricSummary[], results: { extra: Record<string, unknown>; errors: string[] }, engines: string[]): Promise<void> {
  let plotFile: string | undefined;
  const curves = results.extra.scaleCurves as Record<string, number[]> | undefined;
  if (curves && Object.keys(curves).length) {
    const svg = linePlot(curves, {
      title: `run -d latency on one network (${meta.date.slice(0, 10)}, ${meta.mode})`,
      xLabel: 'containers on the network (n-th run)', yLabel: 'run -d latency (ms)',
    });
    await fs.writeFile(join(root, 'docs', 'bench-scale.svg'), svg);
    plotFile = 'bench-scale.svg';
    results.extra.scaleMedians = Object.fromEntries(Object.entries(curves).map(([k, v]) => [k, median(v)]));
  }
  await fs.writeFile(join(root, 'docs', 'benchmarks.md'), markdown(meta, summary, results, engines, plotFile));
}

/** A side bench's results (`bench:cni`, `bench:overlay`): printed, and with `--write` kept as bench/results/NAME-DATE[-quick].json. */
export async function emitSideResults(root: string, name: string, results: unknown, o: { write: boolean; quick: boolean; log: (m: string) => void }): Promise<void> {
  process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
  if (!o.write) return;
  const file = join(root, 'bench', 'results', `${name}-${new Date().toISOString().slice(0, 16).replace(/[:]/g, '')}${o.quick ? '-quick' : ''}.json`);
  await fs.writeFile(file, JSON.stringify(results, null, 2) + '\n');
  o.log(`wrote ${file}`);
}
