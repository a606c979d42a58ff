import { CoreInputError } from '../errors.js';

/** Problem type for unusable soup weights or parameters. */
export const SOUP_PARAMETERS_ERROR = 'invalid-soup-parameters';

/**
 * The weights of a linear soup, normalised to sum to 1. Absent weights mean equal weights (the
 * uniform soup). Refuses a wrong count, negative or non-finite weights and all zeros (400).
 */
export function normalizeWeights(m: number, weights?: readonly number[] | null): number[] {
  if (!Number.isInteger(m) || m < 1) throw new CoreInputError('no-candidates', 'a soup needs at least one candidate', { candidates: m }, 422);
  if (weights === undefined || weights === null) return new Array<number>(m).fill(1 / m);
  const bad = (message: string, extra: Record<string, unknown> = {}) =>
    new CoreInputError(SOUP_PARAMETERS_ERROR, message, { parameter: 'weights', ...extra }, 400);
  if (!Array.isArray(weights)) throw bad('weights must be an array of numbers');
  if (weights.length !== m) throw bad(`${weights.length} weight(s) for ${m} candidate(s)`, { expected: m, actual: weights.length });
  let sum = 0;
  for (const [i, w] of weights.entries()) {
    if (typeof w !== 'number' || !Number.isFinite(w) || w < 0) throw bad(`weight ${i} is ${JSON.stringify(w)}: weights must be finite and non-negative`, { index: i });
    sum += w;
  }
  if (!(sum > 0)) throw bad('the weights are all zero');
  // Equal weights give exactly 1/m (dividing w/sum could differ from 1/m in the last bit).
  if (weights.every((w) => w === weights[0])) return new Array<number>(m).fill(1 / m);
  return weights.map((w) => w / sum);
}

/** Uniform weights over `members` (indices into m candidates), zero elsewhere. */
export function uniformOver(m: number, members: readonly number[]): number[] {
  const w = new Array<number>(m).fill(0);
  for (const i of members) w[i] = 1 / members.length;
  return w;
}
