/** A small SVG line plot: run latency against container count, one line per engine. */

const COLORS: Record<string, string> = { berth: '#1f77b4', docker: '#d62728', podman: '#2ca02c' };
const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');

function niceMax(v: number): number {
  const p = 10 ** Math.floor(Math.log10(Math.max(v, 1e-9)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

export function linePlot(series: Record<string, number[]>, opts: { title: string; xLabel: string; yLabel: string }): string {
  const W = 720, H = 400, L = 64, Rr = 130, T = 40, B = 52;
  const pw = W - L - Rr, ph = H - T - B;
  const n = Math.max(1, ...Object.values(series).map((s) => s.length));
  // Cap the axis at the 99th percentile so one outlier does not flatten the rest.
  const all = Object.values(series).flat().sort((a, b) => a - b);
  const yMax = niceMax(all.length ? all[Math.floor((all.length - 1) * 0.99)]! * 1.1 : 1);
  const x = (i: number) => L + (n <= 1 ? 0 : (i / (n - 1)) * pw);
  const y = (v: number) => T + ph - (Math.min(v, yMax) / yMax) * ph;
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  parts.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  parts.push(`<text x="${W / 2}" y="22" text-anchor="middle" font-size="15">${esc(opts.title)}</text>`);
  for (let k = 0; k <= 5; k++) {
    const v = (yMax * k) / 5;
    parts.push(`<line x1="${L}" x2="${L + pw}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="#ddd"/>`);
    parts.push(`<text x="${L - 6}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end">${Number(v.toPrecision(3))}</text>`);
  }
  const step = niceMax(n / 8);
  for (let c = 0; c <= n; c += step) {
    const xi = x(Math.max(0, c - 1)).toFixed(1);
    parts.push(`<line x1="${xi}" x2="${xi}" y1="${T + ph}" y2="${T + ph + 4}" stroke="#333"/>`);
    parts.push(`<text x="${xi}" y="${T + ph + 18}" text-anchor="middle">${c === 0 ? 1 : c}</text>`);
  }
  parts.push(`<rect x="${L}" y="${T}" width="${pw}" height="${ph}" fill="none" stroke="#333"/>`);
  parts.push(`<text x="${L + pw / 2}" y="${H - 12}" text-anchor="middle">${esc(opts.xLabel)} (thin: each run; thick: moving median of 9)</text>`);
  parts.push(`<text transform="translate(16 ${T + ph / 2}) rotate(-90)" text-anchor="middle">${esc(opts.yLabel)}</text>`);
  let li = 0;
  for (const [name, s] of Object.entries(series)) {
    const color = COLORS[name] ?? '#555';
    const pts = s.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
    parts.push(`<polyline fill="none" stroke="${color}" stroke-width="1" stroke-opacity="0.35" points="${pts}"/>`);
    // A moving median over 9 runs on top of the raw samples.
    const mm = s.map((_, i) => {
      const w = s.slice(Math.max(0, i - 4), i + 5).sort((a, b) => a - b);
      return w[Math.floor(w.length / 2)]!;
    });
    const mpts = mm.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
    parts.push(`<polyline fill="none" stroke="${color}" stroke-width="2.5" points="${mpts}"/>`);
    const ly = T + 14 + li * 20;
    parts.push(`<line x1="${L + pw + 12}" x2="${L + pw + 36}" y1="${ly}" y2="${ly}" stroke="${color}" stroke-width="3"/>`);
    parts.push(`<text x="${L + pw + 42}" y="${ly + 4}">${esc(name)}</text>`);
    li++;
  }
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}
