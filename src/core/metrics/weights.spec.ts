import { describe, expect, it } from 'vitest';
import { CoreInputError } from '../errors.js';
import { compareWeights, compareWeightsAsync, relativeDistance, WeightDistanceAccumulator } from './weights.js';

const f = (...v: number[]) => Float32Array.from(v);

describe('weight distances', () => {
  it('L2 distance and angle over several tensors match hand computation', () => {
    // Flattened: a = (1, 0, 0, 2), b = (0, 1, 0, 2).
    const r = compareWeights([f(1, 0), f(0, 2)], [f(0, 1), f(0, 2)]);
    expect(r.l2).toBeCloseTo(Math.SQRT2, 12);
    expect(r.dot).toBe(4);
    expect(r.normA).toBeCloseTo(Math.sqrt(5), 12);
    expect(r.angleDegrees!).toBeCloseTo((Math.acos(4 / 5) * 180) / Math.PI, 10);
    expect(r.relative).toBeCloseTo(Math.SQRT2 / Math.sqrt(5), 12);
    expect(r.elements).toBe(4);
  });

  it('gives 0°, 90° and 180° exactly where they are', () => {
    expect(compareWeights([f(1, 2, 3)], [f(2, 4, 6)]).angleDegrees).toBeCloseTo(0, 9);
    expect(compareWeights([f(1, 0)], [f(0, 5)]).angleDegrees).toBeCloseTo(90, 9);
    expect(compareWeights([f(1, -2)], [f(-1, 2)]).angleDegrees).toBeCloseTo(180, 9);
    expect(compareWeights([f(0, 0)], [f(1, 0)]).angleDegrees).toBeNull();
  });

  it('resolves tiny angles that acos would lose', () => {
    // a = (1, 0), b = (1, ε): θ = atan(ε); 1 − cos θ ≈ ε²/2 = 5e-15 sits at the edge of float64.
    const eps = 1e-7;
    const r = compareWeights([f(1, 0)], [f(1, eps)]);
    const truth = (Math.atan(Math.fround(eps)) * 180) / Math.PI;
    expect(Math.abs(r.angleDegrees! - truth) / truth).toBeLessThan(1e-6);
  });

  it('relative distance ‖θ − θ₀‖/‖θ‖ (ALLR)', () => {
    expect(relativeDistance([f(3, 4)], [f(3, 0)])).toBeCloseTo(4 / 5, 12);
    expect(relativeDistance([f(0, 0)], [f(0, 0)])).toBe(0);
    expect(relativeDistance([f(0, 0)], [f(1, 0)])).toBe(Number.POSITIVE_INFINITY);
  });

  it('streams async tensor sequences the same way', async () => {
    async function* gen(...ts: Float32Array[]) {
      for (const t of ts) yield t;
    }
    const sync = compareWeights([f(1, 2), f(3)], [f(2, 2), f(1)]);
    expect(await compareWeightsAsync(gen(f(1, 2), f(3)), gen(f(2, 2), f(1)))).toEqual(sync);
    const acc = new WeightDistanceAccumulator().add(f(1, 2), f(2, 2)).add(f(3), f(1));
    expect(acc.result()).toEqual(sync);
  });

  it('refuses models whose tensors do not line up', async () => {
    expect(() => compareWeights([f(1, 2)], [f(1)])).toThrow(CoreInputError);
    expect(() => compareWeights([f(1, 2)], [f(1)])).toThrow(/tensor 0 has 2 elements in one model and 1/);
    expect(() => compareWeights([f(1), f(2)], [f(1)])).toThrow(/different numbers of tensors/);
    async function* one() {
      yield f(1);
    }
    await expect(compareWeightsAsync(one(), (async function* () {})())).rejects.toThrow(/different numbers of tensors/);
  });
});
