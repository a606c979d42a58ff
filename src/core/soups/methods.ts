import { CoreInputError } from '../errors.js';
import { normalizeWeights, SOUP_PARAMETERS_ERROR } from './weights.js';

/**
 * Soup methods, mergekit style: each is a small description (name, parameters with defaults, a
 * reference) in one flat registry that `GET /soups/methods` serves. The mathematics is one weighted
 * mean (`mergeCheckpoints`, the executor): `uniform` and `weighted` differ only by their weights, and
 * `greedy` chooses the set whose uniform mean is written (`greedySoup`).
 */

export type SoupMethodName = 'uniform' | 'weighted' | 'greedy';

export interface SoupParameter {
  name: string;
  type: 'number[]' | 'string';
  /** null: none (for `weights`, equal weights). */
  default: unknown;
  description: string;
  /** Allowed values of a string parameter. */
  enum?: readonly string[];
}

export interface SoupMethod {
  name: SoupMethodName;
  description: string;
  /** The paper or code the method follows. */
  reference: string;
  parameters: readonly SoupParameter[];
  /** Linear: weights known from the parameters. Greedy: weights come from scoring candidate sets. */
  kind: 'linear' | 'greedy';
}

const MODEL_SOUPS = 'https://arxiv.org/abs/2203.05482';
const SMS = 'https://arxiv.org/abs/2306.16788';

export const UNIFORM_SOUP: SoupMethod = {
  name: 'uniform',
  description: 'Element-wise mean of all candidates (they share one mask, so the soup keeps it).',
  reference: SMS,
  parameters: [],
  kind: 'linear',
};

export const WEIGHTED_SOUP: SoupMethod = {
  name: 'weighted',
  description: 'Element-wise weighted mean; weights are non-negative, not all zero, and normalised to sum to 1.',
  reference: MODEL_SOUPS,
  parameters: [{ name: 'weights', type: 'number[]', default: null, description: 'One weight per candidate, in candidate order; absent means equal weights (the uniform soup).' }],
  kind: 'linear',
};

export const GREEDY_SOUP: SoupMethod = {
  name: 'greedy',
  description:
    'Scores each candidate on the validation split, sorts them best first, and adds the next candidate when the uniform mean of the accepted set plus it scores at least as well (>=, as in SMS) or better (>, as in model soups) than the best so far.',
  reference: MODEL_SOUPS,
  parameters: [{ name: 'comparison', type: 'string', default: '>=', enum: ['>=', '>'], description: "'>=' (SMS) accepts ties; '>' (the model-soups code) needs a strict improvement." }],
  kind: 'greedy',
};

export const SOUP_METHODS: readonly SoupMethod[] = [UNIFORM_SOUP, WEIGHTED_SOUP, GREEDY_SOUP];

export function findSoupMethod(name: string): SoupMethod {
  const method = SOUP_METHODS.find((x) => x.name === name);
  if (!method) {
    throw new CoreInputError('unknown-soup-method', `unknown soup method ${JSON.stringify(name)}; known: ${SOUP_METHODS.map((x) => x.name).join(', ')}`, { method: name, known: SOUP_METHODS.map((x) => x.name) }, 400);
  }
  return method;
}

export type SoupParameters = Record<string, unknown>;

/** The method's parameters with defaults filled in; unknown names and wrong types are refused (400). */
export function resolveSoupParameters(method: SoupMethod, given: SoupParameters = {}): SoupParameters {
  const bad = (message: string, parameter: string) => new CoreInputError(SOUP_PARAMETERS_ERROR, message, { method: method.name, parameter }, 400);
  for (const key of Object.keys(given)) {
    if (!method.parameters.some((p) => p.name === key)) throw bad(`the ${method.name} soup has no parameter ${key}`, key);
  }
  const out: SoupParameters = {};
  for (const p of method.parameters) {
    const v = given[p.name] ?? p.default;
    if (v !== null) {
      if (p.type === 'string' && (typeof v !== 'string' || (p.enum && !p.enum.includes(v)))) {
        throw bad(`${p.name} must be one of ${(p.enum ?? []).map((e) => JSON.stringify(e)).join(', ')}`, p.name);
      }
      if (p.type === 'number[]' && (!Array.isArray(v) || v.some((x) => typeof x !== 'number'))) throw bad(`${p.name} must be an array of numbers`, p.name);
    }
    out[p.name] = v;
  }
  return out;
}

/** Normalised merge weights of a linear method over m candidates (greedy's come from `greedySoup`). */
export function linearSoupWeights(method: SoupMethod, m: number, params: SoupParameters = {}): number[] {
  if (method.kind !== 'linear') throw new Error(`the ${method.name} soup's weights come from scoring, not from parameters`);
  const resolved = resolveSoupParameters(method, params);
  return normalizeWeights(m, (resolved.weights as number[] | null | undefined) ?? null);
}
