/**
 * A candidate's training progress, written at most every `everyMs`: the first report at once, then
 * the latest report of each interval at its end (the ones in between are coalesced into it), and
 * the final step at once. Writes never overlap and land in report order; `flush` writes what is
 * pending and waits for it, so the last report is recorded before the candidate's result.
 *
 * The worker thread reports every 20 steps; each write is a statement on the main thread (with the
 * embedded database, PGlite itself runs there), so writing every report took main-thread time the
 * training threads needed (issue 16). `everyMs` is PROGRESS_WRITE_SECONDS.
 */
export interface ProgressReport {
  step: number;
  steps: number;
}

export type Schedule = (fn: () => void, ms: number) => () => void;

const timers: Schedule = (fn, ms) => {
  const t = setTimeout(fn, ms);
  t.unref();
  return () => clearTimeout(t);
};

export class ProgressWriter<P extends ProgressReport> {
  private lastWrite = Number.NEGATIVE_INFINITY;
  private pending: P | null = null;
  private cancelTimer: (() => void) | null = null;
  private chain: Promise<void> = Promise.resolve();
  private stopped = false;
  /** Reports written (for tests and the log). */
  written = 0;

  constructor(
    private readonly everyMs: number,
    private readonly write: (p: P) => Promise<void>,
    private readonly onError: (err: unknown) => void,
    private readonly clock: () => number = Date.now,
    private readonly schedule: Schedule = timers,
  ) {}

  report(p: P): void {
    if (this.stopped) return;
    this.pending = p;
    const due = this.lastWrite + this.everyMs - this.clock();
    if (p.step >= p.steps || due <= 0) {
      this.writePending();
      return;
    }
    this.cancelTimer ??= this.schedule(() => {
      this.cancelTimer = null;
      this.writePending();
    }, due);
  }

  /** Writes the pending report, if any, and waits for every write so far. */
  async flush(): Promise<void> {
    this.writePending();
    await this.chain;
  }

  /** Drops what is pending (the candidate ended otherwise) and stops accepting reports. */
  stop(): void {
    this.stopped = true;
    this.pending = null;
    this.cancelTimer?.();
    this.cancelTimer = null;
  }

  private writePending(): void {
    this.cancelTimer?.();
    this.cancelTimer = null;
    const p = this.pending;
    if (!p) return;
    this.pending = null;
    this.lastWrite = this.clock();
    this.chain = this.chain.then(async () => {
      try {
        await this.write(p);
        this.written++;
      } catch (err) {
        this.onError(err);
      }
    });
  }
}
