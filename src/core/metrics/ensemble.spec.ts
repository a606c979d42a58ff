import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Mulberry32 } from '../random.js';
import { classificationMetrics } from './classification.js';
import { ensembleAccuracy } from './ensemble.js';

describe('ensembleAccuracy', () => {
  it('an ensemble of identical members has their accuracy', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 40 }), fc.integer({ min: 2, max: 6 }), fc.integer({ min: 1, max: 5 }), fc.integer(), (n, k, members, seed) => {
        const rng = new Mulberry32(seed);
  const rand = () => rng.uniform();
        const logits = Float32Array.from({ length: n * k }, () => (rand() - 0.5) * 10);
        const labels = Int32Array.from({ length: n }, () => Math.floor(rand() * k));
        const single = classificationMetrics(logits, labels, k, 'logits').accuracy;
        expect(ensembleAccuracy(Array(members).fill(logits), labels, k)).toBe(single);
      }),
      { numRuns: 100 },
    );
  });

  it('a hand-checked case: the mean of the softmaxes decides, not a vote', () => {
    // Two classes, two members, three samples (labels 0, 1, 0). Softmax of (a, 0) is σ(a) for class 0.
    // sample 0: member A (4, 0) → p₀ = 0.982; member B (0, 1) → p₀ = 0.269. Mean 0.626 → class 0 ✓.
    //           (A right, B wrong: the confident member wins.)
    // sample 1: A (1, 0) → p₀ = 0.731; B (0, 0.5) → p₀ = 0.378. Mean 0.554 → class 0 ✗ (label 1).
    // sample 2: A (0, 2) → p₀ = 0.119; B (0, 3) → p₀ = 0.047. Mean 0.083 → class 1 ✗.
    const a = Float32Array.from([4, 0, 1, 0, 0, 2]);
    const b = Float32Array.from([0, 1, 0, 0.5, 0, 3]);
    const labels = Int32Array.from([0, 1, 0]);
    expect(classificationMetrics(a, labels, 2, 'logits').accuracy).toBeCloseTo(1 / 3, 12); // sample 0 only
    expect(classificationMetrics(b, labels, 2, 'logits').accuracy).toBeCloseTo(1 / 3, 12); // sample 1 only
    expect(ensembleAccuracy([a, b], labels, 2)).toBeCloseTo(1 / 3, 12);
    // Make sample 1's member B confident: (0, 3) → p₀ = 0.047, mean with 0.731 is 0.389 → class 1 ✓.
    const b2 = Float32Array.from([0, 1, 0, 3, 0, 3]);
    expect(ensembleAccuracy([a, b2], labels, 2)).toBeCloseTo(2 / 3, 12);
    // Logit offsets per row do not change a softmax: shifting every logit of a member by 100 changes nothing.
    expect(ensembleAccuracy([a.map((z) => z + 100), b2], labels, 2)).toBeCloseTo(2 / 3, 12);
  });

  it('a member with a non-finite row loses its vote there; an empty split is NaN; shapes are checked', () => {
    const labels = Int32Array.from([1]);
    expect(ensembleAccuracy([Float32Array.from([Number.NaN, 0]), Float32Array.from([0, 2])], labels, 2)).toBe(1);
    expect(ensembleAccuracy([Float32Array.from([Number.NaN, 0])], labels, 2)).toBe(0);
    expect(ensembleAccuracy([new Float32Array(0)], new Int32Array(0), 3)).toBeNaN();
    expect(() => ensembleAccuracy([new Float32Array(3)], labels, 2)).toThrow(/logits/);
    expect(() => ensembleAccuracy([], labels, 2)).toThrow(/at least one/);
  });
});
