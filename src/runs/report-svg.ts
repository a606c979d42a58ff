/** A run's accuracy against sparsity as a plain SVG: candidates as points, results as a line. */
export interface PlotSeries {
  label: string;
  /** Result (soup or single model) per phase. */
  line: { sparsity: number; accuracy: number }[];
  /** Individual candidates. */
  points: { sparsity: number; accuracy: number }[];
}

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b'];

function esc(s: string): string {
  return s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);
}

export function accuracySparsitySvg(title: string, series: PlotSeries[], metric = 'test accuracy'): string {
  const W = 720;
  const H = 440;
  const m = { left: 70, right: 190, top: 50, bottom: 60 };
  const all = series.flatMap((s) => [...s.line, ...s.points]);
  const xs = all.map((p) => p.sparsity);
  const ys = all.map((p) => p.accuracy).filter(Number.isFinite);
  const x0 = Math.max(0, Math.floor((Math.min(...xs) - 0.05) * 10) / 10);
  const x1 = Math.min(1, Math.max(x0 + 0.1, Math.ceil((Math.max(...xs) + 0.02) * 20) / 20));
  const yMin = ys.length ? Math.min(...ys) : 0;
  const yMax = ys.length ? Math.max(...ys) : 1;
  const pad = Math.max(0.01, (yMax - yMin) * 0.1);
  const y0 = Math.max(0, Math.floor((yMin - pad) * 100) / 100);
  const y1 = Math.min(1, Math.ceil((yMax + pad) * 100) / 100);
  const px = (x: number) => m.left + ((x - x0) / (x1 - x0 || 1)) * (W - m.left - m.right);
  const py = (y: number) => H - m.bottom - ((y - y0) / (y1 - y0 || 1)) * (H - m.top - m.bottom);
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="system-ui, sans-serif" font-size="12">`);
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  out.push(`<text x="${m.left}" y="28" font-size="16" font-weight="600">${esc(title)}</text>`);
  // Grid and ticks at round values.
  for (const x of niceTicks(x0, x1)) {
    out.push(`<line x1="${px(x)}" y1="${m.top}" x2="${px(x)}" y2="${H - m.bottom}" stroke="#eee"/>`);
    out.push(`<text x="${px(x)}" y="${H - m.bottom + 18}" text-anchor="middle">${+(x * 100).toFixed(1)}%</text>`);
  }
  for (const y of niceTicks(y0, y1)) {
    out.push(`<line x1="${m.left}" y1="${py(y)}" x2="${W - m.right}" y2="${py(y)}" stroke="#eee"/>`);
    out.push(`<text x="${m.left - 8}" y="${py(y) + 4}" text-anchor="end">${+(y * 100).toFixed(1)}%</text>`);
  }
  out.push(`<line x1="${m.left}" y1="${H - m.bottom}" x2="${W - m.right}" y2="${H - m.bottom}" stroke="#333"/>`);
  out.push(`<line x1="${m.left}" y1="${m.top}" x2="${m.left}" y2="${H - m.bottom}" stroke="#333"/>`);
  out.push(`<text x="${(m.left + W - m.right) / 2}" y="${H - 18}" text-anchor="middle">sparsity</text>`);
  out.push(`<text transform="translate(18 ${(m.top + H - m.bottom) / 2}) rotate(-90)" text-anchor="middle">${esc(metric)}</text>`);
  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    for (const p of s.points) if (Number.isFinite(p.accuracy)) out.push(`<circle cx="${px(p.sparsity).toFixed(1)}" cy="${py(p.accuracy).toFixed(1)}" r="3" fill="${color}" fill-opacity="0.35"/>`);
    const line = s.line.filter((p) => Number.isFinite(p.accuracy)).sort((a, b) => a.sparsity - b.sparsity);
    if (line.length) {
      out.push(`<polyline fill="none" stroke="${color}" stroke-width="2" points="${line.map((p) => `${px(p.sparsity).toFixed(1)},${py(p.accuracy).toFixed(1)}`).join(' ')}"/>`);
      for (const p of line) out.push(`<circle cx="${px(p.sparsity).toFixed(1)}" cy="${py(p.accuracy).toFixed(1)}" r="4.5" fill="${color}"/>`);
    }
    const ly = m.top + 10 + i * 22;
    out.push(`<line x1="${W - m.right + 16}" y1="${ly}" x2="${W - m.right + 40}" y2="${ly}" stroke="${color}" stroke-width="2"/>`);
    out.push(`<circle cx="${W - m.right + 28}" cy="${ly}" r="4" fill="${color}"/>`);
    out.push(`<text x="${W - m.right + 46}" y="${ly + 4}">${esc(s.label)}</text>`);
  });
  out.push(`<text x="${W - m.right + 16}" y="${m.top + 10 + series.length * 22 + 6}" fill="#666">faint dots: candidates</text>`);
  out.push('</svg>');
  return out.join('\n');
}

/** About five ticks at multiples of 1, 2 or 5 × a power of ten, inside [lo, hi]. */
function niceTicks(lo: number, hi: number): number[] {
  const raw = (hi - lo) / 5 || 0.1;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((k) => k * mag).find((s) => s >= raw) ?? 10 * mag;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + 1e-9; v += step) out.push(Number(v.toFixed(10)));
  return out;
}
