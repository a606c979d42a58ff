import { describe, expect, it } from 'vitest';
import { CoreInputError } from '../errors.js';
import { findSoupMethod, GREEDY_SOUP, linearSoupWeights, resolveSoupParameters, SOUP_METHODS, UNIFORM_SOUP, WEIGHTED_SOUP } from './methods.js';
import { normalizeWeights } from './weights.js';

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (err instanceof CoreInputError) return `${err.code} ${err.status}`;
    throw err;
  }
  return 'no error';
}

describe('soup methods registry', () => {
  it('lists uniform, weighted and greedy with references and parameter defaults, as plain JSON', () => {
    const json = JSON.parse(JSON.stringify(SOUP_METHODS));
    expect(json.map((m: { name: string }) => m.name)).toEqual(['uniform', 'weighted', 'greedy']);
    for (const m of json) expect(m.reference).toMatch(/^https:\/\/arxiv\.org\/abs\/\d{4}\.\d{5}$/);
    expect(GREEDY_SOUP.parameters).toEqual([expect.objectContaining({ name: 'comparison', default: '>=', enum: ['>=', '>'] })]);
    expect(WEIGHTED_SOUP.parameters).toEqual([expect.objectContaining({ name: 'weights', default: null })]);
  });

  it('uniform is weighted with its default (equal) weights', () => {
    expect(linearSoupWeights(UNIFORM_SOUP, 3)).toEqual([1 / 3, 1 / 3, 1 / 3]);
    expect(linearSoupWeights(WEIGHTED_SOUP, 3)).toEqual(linearSoupWeights(UNIFORM_SOUP, 3));
    expect(linearSoupWeights(WEIGHTED_SOUP, 3, { weights: [2, 2, 2] })).toEqual([1 / 3, 1 / 3, 1 / 3]);
    expect(linearSoupWeights(WEIGHTED_SOUP, 3, { weights: [1, 0, 3] })).toEqual([0.25, 0, 0.75]);
    expect(() => linearSoupWeights(GREEDY_SOUP, 3)).toThrow(/scoring/);
  });

  it('refuses bad weights, unknown parameters and methods', () => {
    expect(code(() => normalizeWeights(2, [1, -1]))).toBe('invalid-soup-parameters 400');
    expect(code(() => normalizeWeights(2, [0, 0]))).toBe('invalid-soup-parameters 400');
    expect(code(() => normalizeWeights(2, [1, Number.NaN]))).toBe('invalid-soup-parameters 400');
    expect(code(() => normalizeWeights(3, [1, 1]))).toBe('invalid-soup-parameters 400');
    expect(code(() => normalizeWeights(0))).toBe('no-candidates 422');
    expect(code(() => resolveSoupParameters(UNIFORM_SOUP, { weights: [1] }))).toBe('invalid-soup-parameters 400');
    expect(code(() => resolveSoupParameters(GREEDY_SOUP, { comparison: '<' }))).toBe('invalid-soup-parameters 400');
    expect(code(() => resolveSoupParameters(WEIGHTED_SOUP, { weights: 'a' }))).toBe('invalid-soup-parameters 400');
    expect(code(() => findSoupMethod('ties'))).toBe('unknown-soup-method 400');
    expect(resolveSoupParameters(GREEDY_SOUP)).toEqual({ comparison: '>=' });
    expect(findSoupMethod('weighted')).toBe(WEIGHTED_SOUP);
  });
});
