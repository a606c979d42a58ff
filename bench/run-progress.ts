/**
 * Live progress of runs from their server-sent events: one bar per running candidate, phase markers
 * as permanent lines. On a terminal the bars redraw in place; elsewhere (a log file, CI) a one-line
 * summary per run is printed every `summaryEveryMs`.
 */
import type { RunEvent } from './sms-client.js';

interface Bar {
  index: number;
  step: number;
  steps: number;
  loss?: number;
  samplesPerSecond?: number;
}

interface Track {
  label: string;
  phases: number;
  phase: number;
  sparsity: number | null;
  stage: string;
  perPhase: number;
  doneInPhase: number;
  bars: Map<string, Bar>;
  finished: boolean;
}

const BAR = 24;

export class RunProgress {
  private readonly tracks = new Map<string, Track>();
  private readonly tty: boolean;
  private drawn = 0;
  private dirty = false;
  private readonly timer: NodeJS.Timeout;
  private lastSummary = Date.now();
  private readonly start = Date.now();

  constructor(
    private readonly out: NodeJS.WriteStream = process.stdout,
    private readonly summaryEveryMs = 20_000,
  ) {
    this.tty = !!out.isTTY && process.env.TERM !== 'dumb' && !process.env.NO_PROGRESS_BARS;
    this.timer = setInterval(() => this.tick(), this.tty ? 150 : 1000);
    this.timer.unref();
  }

  add(runId: string, label: string, phases = 0, perPhase = 1): void {
    this.tracks.set(runId, { label, phases, phase: phases ? 0 : 1, sparsity: null, stage: 'queued', perPhase, doneInPhase: 0, bars: new Map(), finished: false });
    this.dirty = true;
  }

  /** A permanent line (printed above the live bars). */
  log(line: string): void {
    this.clear();
    this.out.write(`${line}\n`);
    this.dirty = true;
    if (this.tty) this.draw();
  }

  handle(runId: string, e: RunEvent): void {
    const t = this.tracks.get(runId);
    if (!t) return;
    const d = e.data;
    const cid = d.candidateId ?? '';
    const where = t.phases ? `${t.label} phase ${t.phase}/${t.phases}` : t.label;
    switch (e.type) {
      case 'phase-pruned':
        t.phase = Number(d.phase);
        t.sparsity = Number(d.sparsity);
        t.stage = 'pruned';
        this.log(`▸ ${t.label} phase ${t.phase}/${t.phases}: pruned to ${(t.sparsity * 100).toFixed(1)} % sparsity`);
        break;
      case 'phase-training':
        t.stage = 'training';
        t.perPhase = Number(d.candidates) || t.perPhase;
        t.doneInPhase = 0;
        t.bars.clear();
        break;
      case 'candidate-started':
        t.stage = 'training';
        t.bars.set(cid, { index: Number(d.index), step: 0, steps: 0 });
        break;
      case 'progress': {
        const b = t.bars.get(cid) ?? { index: Number(d.index), step: 0, steps: 0 };
        b.step = Number(d.step);
        b.steps = Number(d.steps);
        b.loss = typeof d.loss === 'number' ? d.loss : b.loss;
        b.samplesPerSecond = typeof d.samplesPerSecond === 'number' ? d.samplesPerSecond : b.samplesPerSecond;
        t.bars.set(cid, b);
        break;
      }
      case 'candidate-succeeded':
        t.bars.delete(cid);
        t.doneInPhase++;
        if (t.phases && t.doneInPhase >= t.perPhase) t.stage = t.perPhase > 1 ? 'merging the soup, evaluating' : 'evaluating';
        this.log(`  ${where}: candidate ${d.index} ${t.phases ? 'retrained' : 'trained'}, test ${pctOf(d.testAccuracy)}`);
        break;
      case 'candidate-failed':
      case 'candidate-cancelled':
        t.bars.delete(cid);
        this.log(`  ${where}: candidate ${d.index} ${e.type.slice('candidate-'.length)}${d.error ? `: ${d.error}` : ''}`);
        break;
      case 'candidate-retry':
      case 'candidate-requeued':
        t.bars.delete(cid);
        this.log(`  ${where}: candidate ${d.index ?? ''} ${e.type.slice('candidate-'.length)}${d.error || d.reason ? ` (${d.error ?? d.reason})` : ''}`);
        break;
      case 'phase-succeeded':
        t.stage = 'done';
        this.log(`✓ ${t.label} phase ${d.phase}/${t.phases} at ${(Number(d.sparsity) * 100).toFixed(1)} % sparsity: ${t.perPhase > 1 ? 'soup' : 'model'} test accuracy ${pctOf(d.testAccuracy)}`);
        break;
      case 'run-finished':
        t.finished = true;
        t.bars.clear();
        this.log(`${d.status === 'succeeded' ? '✓' : '✗'} ${t.label} ${d.status}${d.error ? `: ${d.error}` : ''} (${elapsed(this.start)})`);
        break;
      default:
        break;
    }
    this.dirty = true;
  }

  stop(): void {
    clearInterval(this.timer);
    this.clear();
  }

  private lines(): string[] {
    const lines: string[] = [];
    for (const t of this.tracks.values()) {
      if (t.finished) continue;
      const head = t.phases
        ? `${t.label} · phase ${Math.max(t.phase, 1)}/${t.phases}${t.sparsity != null ? ` · ${(t.sparsity * 100).toFixed(1)} % sparse` : ''} · ${t.stage}`
        : `${t.label} · ${t.stage}`;
      lines.push(head);
      const bars = [...t.bars.values()].sort((a, b) => a.index - b.index);
      for (const b of bars) {
        const f = b.steps ? Math.min(1, b.step / b.steps) : 0;
        const n = Math.round(f * BAR);
        lines.push(
          `  c${b.index} [${'█'.repeat(n)}${'░'.repeat(BAR - n)}] ${(f * 100).toFixed(0).padStart(3)} %  ${b.steps ? `${b.step}/${b.steps} steps` : 'starting'}${b.loss != null ? `  loss ${b.loss.toFixed(3)}` : ''}${b.samplesPerSecond ? `  ${b.samplesPerSecond.toFixed(0)} samples/s` : ''}`,
        );
      }
      const waiting = t.stage === 'training' ? t.perPhase - t.doneInPhase - bars.length : 0;
      if (waiting > 0) lines.push(`  ${waiting} candidate${waiting > 1 ? 's' : ''} queued (waiting for a worker)`);
    }
    return lines;
  }

  private summary(): string {
    const parts: string[] = [];
    for (const t of this.tracks.values()) {
      if (t.finished) continue;
      const bars = [...t.bars.values()].sort((a, b) => a.index - b.index).map((b) => `c${b.index} ${b.steps ? ((100 * b.step) / b.steps).toFixed(0) : 0} %`);
      parts.push(`${t.label}${t.phases ? ` p${Math.max(t.phase, 1)}/${t.phases}` : ''} ${t.stage}${bars.length ? ` (${bars.join(', ')})` : ''}`);
    }
    return `[${elapsed(this.start)}] ${parts.join(' | ')}`;
  }

  private tick(): void {
    if (this.tty) {
      if (this.dirty) this.draw();
      return;
    }
    if (Date.now() - this.lastSummary >= this.summaryEveryMs && [...this.tracks.values()].some((t) => !t.finished)) {
      this.lastSummary = Date.now();
      this.out.write(`${this.summary()}\n`);
    }
  }

  private clear(): void {
    if (!this.tty || !this.drawn) return;
    this.out.write(`\x1b[${this.drawn}A\x1b[J`);
    this.drawn = 0;
  }

  private draw(): void {
    if (!this.tty) return;
    this.clear();
    const lines = this.lines();
    const width = this.out.columns || 120;
    if (lines.length) this.out.write(`${lines.map((l) => (l.length > width - 1 ? l.slice(0, width - 1) : l)).join('\n')}\n`);
    this.drawn = lines.length;
    this.dirty = false;
  }
}

function pctOf(x: unknown): string {
  return typeof x === 'number' && Number.isFinite(x) ? `${(x * 100).toFixed(2)} %` : 'n/a';
}

export function elapsed(since: number): string {
  const s = Math.round((Date.now() - since) / 1000);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}
