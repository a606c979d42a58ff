import { CoreInputError } from '../errors.js';

/**
 * Classification metrics from scores (logits or probabilities, N×K row-major Float32Array) and labels.
 * Everything is accumulated per sample in float64 in sample order, so feeding the same samples batch by
 * batch gives exactly (bit for bit) the one-shot result.
 *
 * - accuracy: top-1; the prediction is the first index of the maximum score (ties to the lower class).
 * - loss: mean cross-entropy. Logits: −log_softmax(z)_y = logsumexp(z) − z_y with the maximum
 *   subtracted (stable for any magnitude). Probabilities: −log(max(p_y, 1e-12)), clamped so a zero
 *   probability gives a large finite loss instead of Infinity.
 * - ece: expected calibration error over 15 equal-width confidence bins (Guo et al. 2017):
 *   Σ_b |B_b|/N · |acc(B_b) − conf(B_b)|, confidence = the top-1 softmax probability (or probability),
 *   bin b holds confidences in (b/15, (b+1)/15] (confidence 0 goes to the first bin).
 * - perClassAccuracy: accuracy over the samples of each true class (null for a class with no samples);
 *   worstClass: the lowest of those (lowest class index on ties).
 * Non-finite scores are not an input error (a diverged model is a result): such rows count as wrong
 * predictions, make loss and ece NaN, and are counted in `nonFiniteRows`.
 */

export type ScoreKind = 'logits' | 'probabilities';

export interface ClassificationMetrics {
  n: number;
  classes: number;
  accuracy: number;
  loss: number;
  ece: number;
  bins: { count: number; accuracy: number | null; confidence: number | null }[];
  perClassAccuracy: (number | null)[];
  perClassCount: number[];
  worstClass: { index: number; accuracy: number } | null;
  nonFiniteRows: number;
}

const PROB_FLOOR = 1e-12;
export const ECE_BINS = 15;

export class ClassificationAccumulator {
  private n = 0;
  private correct = 0;
  private lossSum = 0;
  private nonFinite = 0;
  private readonly binCount: Float64Array;
  private readonly binCorrect: Float64Array;
  private readonly binConf: Float64Array;
  private readonly classCount: Float64Array;
  private readonly classCorrect: Float64Array;

  constructor(
    readonly classes: number,
    readonly kind: ScoreKind = 'logits',
    readonly bins = ECE_BINS,
  ) {
    if (!Number.isSafeInteger(classes) || classes < 1) throw new CoreInputError('invalid-metrics', `classes must be a positive integer, got ${classes}`);
    if (!Number.isSafeInteger(bins) || bins < 1) throw new CoreInputError('invalid-metrics', `bins must be a positive integer, got ${bins}`);
    this.binCount = new Float64Array(bins);
    this.binCorrect = new Float64Array(bins);
    this.binConf = new Float64Array(bins);
    this.classCount = new Float64Array(classes);
    this.classCorrect = new Float64Array(classes);
  }

  /** Adds `count` samples (default: all rows of `scores`). Scores are N×K row-major. */
  add(scores: Float32Array | Float64Array, labels: ArrayLike<number>, count = labels.length): this {
    const k = this.classes;
    if (!Number.isSafeInteger(count) || count < 0 || count > labels.length || count * k > scores.length) {
      throw new CoreInputError('invalid-metrics', `a batch of ${count} samples needs ${count * k} scores and ${count} labels, got ${scores.length} and ${labels.length}`);
    }
    for (let i = 0; i < count; i++) {
      const y = labels[i];
      if (!Number.isInteger(y) || y < 0 || y >= k) throw new CoreInputError('invalid-metrics', `label ${y} at row ${i} is not in [0, ${k})`, { row: i, label: y });
      const row = i * k;
      let best = 0;
      let max = scores[row];
      let finite = Number.isFinite(max);
      for (let j = 1; j < k; j++) {
        const s = scores[row + j];
        if (!Number.isFinite(s)) finite = false;
        if (s > max) {
          max = s;
          best = j;
        }
      }
      let conf: number;
      let loss: number;
      if (!finite) {
        conf = Number.NaN;
        loss = Number.NaN;
        this.nonFinite++;
      } else if (this.kind === 'logits') {
        let sum = 0;
        for (let j = 0; j < k; j++) sum += Math.exp(scores[row + j] - max);
        conf = 1 / sum;
        loss = Math.log(sum) + max - scores[row + y];
      } else {
        conf = max;
        loss = -Math.log(Math.max(scores[row + y], PROB_FLOOR));
      }
      const ok = finite && best === y ? 1 : 0;
      this.n++;
      this.correct += ok;
      this.lossSum += loss;
      this.classCount[y]++;
      this.classCorrect[y] += ok;
      if (Number.isNaN(conf)) {
        // Keeps the ECE honest: a row without a confidence poisons it rather than vanishing.
        this.binConf[0] = Number.NaN;
        this.binCount[0]++;
      } else {
        const b = Math.min(this.bins - 1, Math.max(0, Math.ceil(conf * this.bins) - 1));
        this.binCount[b]++;
        this.binCorrect[b] += ok;
        this.binConf[b] += conf;
      }
    }
    return this;
  }

  result(): ClassificationMetrics {
    const n = this.n;
    let ece = 0;
    const bins: ClassificationMetrics['bins'] = [];
    for (let b = 0; b < this.bins; b++) {
      const c = this.binCount[b];
      if (c > 0) ece += (c / n) * Math.abs(this.binCorrect[b] / c - this.binConf[b] / c);
      bins.push({ count: c, accuracy: c ? this.binCorrect[b] / c : null, confidence: c ? this.binConf[b] / c : null });
    }
    const perClassAccuracy: (number | null)[] = [];
    let worst: ClassificationMetrics['worstClass'] = null;
    for (let j = 0; j < this.classes; j++) {
      const c = this.classCount[j];
      const acc = c ? this.classCorrect[j] / c : null;
      perClassAccuracy.push(acc);
      if (acc !== null && (worst === null || acc < worst.accuracy)) worst = { index: j, accuracy: acc };
    }
    return {
      n,
      classes: this.classes,
      accuracy: n ? this.correct / n : Number.NaN,
      loss: n ? this.lossSum / n : Number.NaN,
      ece: n ? ece : Number.NaN,
      bins,
      perClassAccuracy,
      perClassCount: Array.from(this.classCount),
      worstClass: worst,
      nonFiniteRows: this.nonFinite,
    };
  }
}

/** One-shot metrics over all rows. */
export function classificationMetrics(
  scores: Float32Array | Float64Array,
  labels: ArrayLike<number>,
  classes: number,
  kind: ScoreKind = 'logits',
): ClassificationMetrics {
  if (scores.length !== labels.length * classes) {
    throw new CoreInputError('invalid-metrics', `${labels.length} labels × ${classes} classes need ${labels.length * classes} scores, got ${scores.length}`);
  }
  return new ClassificationAccumulator(classes, kind).add(scores, labels).result();
}
