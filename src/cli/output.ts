/** Terminal output for the CLI: aligned tables, numbers, and hand-drawn progress bars (ANSI, no dependencies). */

export type Cell = string | number | null | undefined;

export function table(headers: string[], rows: Cell[][]): string {
  const text = rows.map((r) => r.map((c) => (c === null || c === undefined ? '-' : String(c))));
  const widths = headers.map((h, i) => Math.max(h.length, ...text.map((r) => r[i]?.length ?? 0)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd();
  return [line(headers), line(widths.map((w) => '-'.repeat(w))), ...text.map(line)].join('\n');
}

export const pct = (x: number | null | undefined, digits = 2) => (typeof x === 'number' && Number.isFinite(x) ? `${(x * 100).toFixed(digits)}%` : '-');
export const num = (x: number | null | undefined, digits = 4) => (typeof x === 'number' && Number.isFinite(x) ? x.toFixed(digits) : '-');
export const short = (id: string | null | undefined) => (id ? id.slice(0, 8) : '-');

export function bytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i ? v.toFixed(1) : v} ${units[i]}`;
}

export interface BarState {
  label: string;
  status: string;
  step: number;
  steps: number;
  detail: string;
}

const WIDTH = 30;

export function bar(s: BarState, color: boolean): string {
  const fraction = s.status === 'succeeded' ? 1 : s.steps > 0 ? Math.min(1, s.step / s.steps) : 0;
  const filled = Math.round(fraction * WIDTH);
  const body = `${'█'.repeat(filled)}${'░'.repeat(WIDTH - filled)}`;
  const paint = !color ? (x: string) => x : s.status === 'succeeded' ? green : s.status === 'failed' || s.status === 'cancelled' ? red : s.status === 'running' ? cyan : dim;
  return `${s.label.padEnd(14)} ${paint(body)} ${`${Math.floor(fraction * 100)}%`.padStart(4)}  ${s.status.padEnd(9)} ${s.detail}`.trimEnd();
}

const green = (x: string) => `\u001b[32m${x}\u001b[39m`;
const red = (x: string) => `\u001b[31m${x}\u001b[39m`;
const cyan = (x: string) => `\u001b[36m${x}\u001b[39m`;
const dim = (x: string) => `\u001b[2m${x}\u001b[22m`;

/**
 * Redraws a block of bars in place on a terminal (cursor up, clear line); elsewhere (a pipe, a CI
 * log) prints a bar only when its status changes, so logs stay short.
 */
export class BarBoard {
  private drawn = 0;
  private readonly printed = new Map<string, string>();

  constructor(
    private readonly out: NodeJS.WriteStream,
    private readonly tty = Boolean(out.isTTY),
  ) {}

  render(header: string, bars: BarState[]): void {
    if (this.tty) {
      const lines = [header, ...bars.map((b) => bar(b, !process.env.NO_COLOR))];
      const cols = this.out.columns || 120;
      let text = this.drawn ? `\u001b[${this.drawn}F` : '';
      for (const l of lines) text += `\u001b[2K${l.length > cols ? l.slice(0, cols - 1) : l}\n`;
      this.out.write(text);
      this.drawn = lines.length;
      return;
    }
    for (const b of bars) {
      if (this.printed.get(b.label) !== b.status) {
        this.printed.set(b.label, b.status);
        this.out.write(`${bar(b, false)}\n`);
      }
    }
  }
}
