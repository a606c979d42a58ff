import { describe, expect, it } from 'vitest';
import { CoreInputError } from '../errors.js';
import { Sfc32 } from '../random.js';
import { ClassificationAccumulator, classificationMetrics } from './classification.js';

describe('classification metrics', () => {
  // 4 samples, 3 classes, logits chosen so the softmax is easy to write down by hand.
  const logits = Float32Array.from([
    2, 0, 0, // pred 0, label 0: correct
    0, 3, 1, // pred 1, label 2: wrong
    1, 1, 1, // tie → pred 0, label 1: wrong
    0, 0, 5, // pred 2, label 2: correct
  ]);
  const labels = [0, 2, 1, 2];

  it('accuracy, cross-entropy and per-class accuracy match hand computation', () => {
    const m = classificationMetrics(logits, labels, 3);
    expect(m.n).toBe(4);
    expect(m.accuracy).toBe(0.5);
    const lse = (a: number[]) => Math.log(a.reduce((s, v) => s + Math.exp(v), 0));
    const ce = [lse([2, 0, 0]) - 2, lse([0, 3, 1]) - 1, lse([1, 1, 1]) - 1, lse([0, 0, 5]) - 5];
    expect(m.loss).toBeCloseTo((ce[0] + ce[1] + ce[2] + ce[3]) / 4, 12);
    expect(m.perClassAccuracy).toEqual([1, 0, 0.5]);
    expect(m.perClassCount).toEqual([1, 1, 2]);
    expect(m.worstClass).toEqual({ index: 1, accuracy: 0 });
    expect(m.nonFiniteRows).toBe(0);
  });

  it('ECE over 15 bins is Σ |B|/N · |acc − conf|', () => {
    const m = classificationMetrics(logits, labels, 3);
    const conf = [Math.exp(2) / (Math.exp(2) + 2), Math.exp(3) / (1 + Math.exp(3) + Math.E), 1 / 3, Math.exp(5) / (Math.exp(5) + 2)];
    // Bins (b/15, (b+1)/15]: 0.787 → 11, 0.844 → 12, 1/3 → 4 (exactly on the edge 5/15, goes to the lower bin), 0.987 → 14.
    const bin = conf.map((c) => Math.ceil(c * 15) - 1);
    expect(bin).toEqual([11, 12, 4, 14]);
    const ok = [1, 0, 0, 1];
    const expected = conf.reduce((s, c, i) => s + Math.abs(ok[i] - c) / 4, 0);
    expect(m.ece).toBeCloseTo(expected, 6);
    expect(m.bins[11]).toEqual({ count: 1, accuracy: 1, confidence: expect.closeTo(conf[0], 6) });
    expect(m.bins[0]).toEqual({ count: 0, accuracy: null, confidence: null });
    // Two samples in one bin: |mean acc − mean conf|, not the mean of the per-sample gaps.
    const p = classificationMetrics(Float32Array.from([0.7, 0.3, 0.3, 0.7]), [0, 0], 2, 'probabilities');
    expect(p.bins[10].count).toBe(2);
    expect(p.ece).toBeCloseTo(Math.abs(0.5 - 0.7), 6);
  });

  it('probabilities: loss is −log p_y, clamped at 1e-12', () => {
    const m = classificationMetrics(Float32Array.from([0.25, 0.75, 1, 0]), [1, 1], 2, 'probabilities');
    expect(m.loss).toBeCloseTo((-Math.log(0.75) - Math.log(1e-12)) / 2, 6);
    expect(m.accuracy).toBe(0.5);
  });

  it('is stable for huge logits', () => {
    const m = classificationMetrics(Float32Array.from([1000, 0, -1000, 1e30, 0, 0]), [1, 0], 3);
    expect(m.loss).toBeCloseTo(500, 6);
    expect(Number.isFinite(m.ece)).toBe(true);
  });

  it('batch by batch equals one shot exactly', () => {
    const n = 257;
    const k = 7;
    const scores = new Float32Array(n * k);
    const y = new Int32Array(n);
    const rng = new Sfc32(12345);
    const rnd = () => rng.float() * 8 - 4;
    for (let i = 0; i < scores.length; i++) scores[i] = rnd();
    for (let i = 0; i < n; i++) y[i] = Math.floor(((rnd() + 4) / 8) * k);
    const one = classificationMetrics(scores, y, k);
    const acc = new ClassificationAccumulator(k);
    // Uneven batches, the last one short; `count` reads only part of a reused buffer.
    const buf = new Float32Array(64 * k);
    const lab = new Int32Array(64);
    for (let start = 0; start < n; start += 64) {
      const c = Math.min(64, n - start);
      buf.set(scores.subarray(start * k, (start + c) * k));
      lab.set(y.subarray(start, start + c));
      acc.add(buf, lab, c);
    }
    expect(acc.result()).toEqual(one);
  });

  it('non-finite scores poison loss and ECE and are counted; bad labels are input errors', () => {
    // Row 0 would win by argmax if NaN were skipped; a diverged row must count as wrong.
    const m = classificationMetrics(Float32Array.from([Number.NaN, 0, 1, 0]), [0, 0], 2);
    expect(m.nonFiniteRows).toBe(1);
    expect(m.loss).toBeNaN();
    expect(m.ece).toBeNaN();
    expect(m.accuracy).toBe(0.5);
    expect(() => classificationMetrics(Float32Array.from([1, 0]), [2], 2)).toThrow(CoreInputError);
    expect(() => classificationMetrics(Float32Array.from([1, 0]), [2], 2)).toThrow(/label 2 at row 0 is not in \[0, 2\)/);
    expect(() => classificationMetrics(Float32Array.from([1, 0, 0]), [0], 2)).toThrow(/need 2 scores, got 3/);
    expect(() => new ClassificationAccumulator(2).add(Float32Array.from([1, 0]), [0, 1])).toThrow(/needs 4 scores/);
  });
});
