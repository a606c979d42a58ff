import { describe, expect, it } from 'vitest';
import { ProgressWriter, type Schedule } from './progress-writer.js';

/** A hand-driven clock and timer queue: the test says when time passes. */
function fakeTime() {
  let now = 0;
  let timers: { at: number; fn: () => void }[] = [];
  const schedule: Schedule = (fn, ms) => {
    const t = { at: now + ms, fn };
    timers.push(t);
    return () => {
      timers = timers.filter((x) => x !== t);
    };
  };
  const advance = async (ms: number) => {
    now += ms;
    for (const t of timers.filter((x) => x.at <= now)) {
      timers = timers.filter((x) => x !== t);
      t.fn();
    }
    await new Promise((r) => setImmediate(r));
  };
  return { clock: () => now, schedule, advance, pending: () => timers.length };
}

const report = (step: number, steps = 100) => ({ step, steps });

describe('ProgressWriter', () => {
  it('writes the first report at once, then at most one per interval: the latest of it, at its end', async () => {
    const time = fakeTime();
    const written: number[] = [];
    const w = new ProgressWriter(5000, async (p) => void written.push(p.step), () => {}, time.clock, time.schedule);
    w.report(report(20));
    await time.advance(0);
    expect(written).toEqual([20]);
    for (const step of [40, 60, 80]) {
      await time.advance(1000);
      w.report(report(step));
    }
    expect(written).toEqual([20]);
    await time.advance(2000); // 5 s after the first write
    expect(written).toEqual([20, 80]);
    // Nothing reported since: nothing more is written, no timer is left.
    await time.advance(10_000);
    expect(written).toEqual([20, 80]);
    expect(time.pending()).toBe(0);
  });

  it('writes the final step at once, after the writes before it, and flush leaves nothing unwritten', async () => {
    const time = fakeTime();
    const written: number[] = [];
    let release: () => void = () => {};
    const w = new ProgressWriter(
      5000,
      async (p) => {
        // The first write is slow: the final one must still land after it.
        if (p.step === 20) await new Promise<void>((r) => (release = r));
        written.push(p.step);
      },
      () => {},
      time.clock,
      time.schedule,
    );
    w.report(report(20));
    await time.advance(100);
    w.report(report(40));
    w.report(report(100));
    release();
    await w.flush();
    expect(written).toEqual([20, 100]);
    expect(time.pending()).toBe(0);
  });

  it('flush writes a report still waiting for its interval (the last one before training ended)', async () => {
    const time = fakeTime();
    const written: number[] = [];
    const w = new ProgressWriter(5000, async (p) => void written.push(p.step), () => {}, time.clock, time.schedule);
    w.report(report(20));
    await time.advance(1000);
    w.report(report(40));
    await w.flush();
    expect(written).toEqual([20, 40]);
    expect(time.pending()).toBe(0);
  });

  it('a failed write is reported and later writes go on; stop drops what is pending', async () => {
    const time = fakeTime();
    const written: number[] = [];
    const errors: unknown[] = [];
    const w = new ProgressWriter(
      5000,
      async (p) => {
        if (p.step === 20) throw new Error('database away');
        written.push(p.step);
      },
      (err) => errors.push(err),
      time.clock,
      time.schedule,
    );
    w.report(report(20));
    await time.advance(5000);
    w.report(report(40));
    await time.advance(1000);
    w.report(report(60));
    w.stop();
    w.report(report(100));
    await w.flush();
    expect(errors).toHaveLength(1);
    expect(written).toEqual([40]);
    expect(time.pending()).toBe(0);
  });

  it('with an interval of 0 every report is written', async () => {
    const w: number[] = [];
    const writer = new ProgressWriter(0, async (p) => void w.push(p.step), () => {});
    for (const s of [20, 40, 60]) writer.report(report(s));
    await writer.flush();
    expect(w).toEqual([20, 40, 60]);
  });
});
