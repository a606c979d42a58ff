import { describe, expect, it } from 'vitest';
import { allrPruneRate, phasePruneRate, phaseSparsity } from './run-plan.js';

describe('ALLR prune rate', () => {
  it('is the fraction of the remaining weights a prune removed', () => {
    expect(allrPruneRate(1000, 250)).toBe(0.75);
    expect(allrPruneRate(1000, 1000)).toBe(0);
    expect(allrPruneRate(0.5, 0.25)).toBe(0.5);
  });

  it('is the same for every phase of a run, p = 1 − (1 − S)^(1/T), as the phases prune geometrically', () => {
    const phases = { goalSparsity: 0.9, count: 3 };
    for (let k = 1; k <= 3; k++) expect(phasePruneRate(phases, k, phaseSparsity(0.9, 3, k))).toBeCloseTo(1 - 0.1 ** (1 / 3), 12);
  });

  it('measures a phase from the previous phase, not from the dense model', () => {
    const phases = { goalSparsity: 0.75, count: 2 };
    expect(phaseSparsity(0.75, 2, 1)).toBeCloseTo(0.5, 12);
    expect(phasePruneRate(phases, 1, 0.5)).toBe(0.5);
    expect(phasePruneRate(phases, 2, 0.75)).toBeCloseTo(0.5, 12);
  });
});
