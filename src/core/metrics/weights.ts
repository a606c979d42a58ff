import { CoreInputError } from '../errors.js';

/**
 * Distances between two models' flattened weights, accumulated tensor by tensor (checkpoints are read
 * one tensor at a time), in float64.
 *
 * The angle is θ = 2·atan2(‖â − b̂‖, ‖â + b̂‖) (unit vectors â, b̂), accurate at every angle, rather
 * than acos(a·b/‖a‖‖b‖), which loses half the digits near 0° and 180° (SMS candidates retrained from
 * one pruned model are only a few degrees apart). Both chords come from sums accumulated directly:
 * ‖â ∓ b̂‖² ∝ ‖a ∓ b‖² − (‖a‖ − ‖b‖)², the common factor 1/(‖a‖‖b‖) cancelling in atan2.
 */

export interface WeightComparison {
  /** ‖a − b‖₂ */
  l2: number;
  /** Angle between a and b in degrees; null when either is all zeros. */
  angleDegrees: number | null;
  normA: number;
  normB: number;
  dot: number;
  /** ‖a − b‖ / ‖a‖ (Infinity when a is zero and b is not, 0 when both are zero). */
  relative: number;
  elements: number;
}

export class WeightDistanceAccumulator {
  private aa = 0;
  private bb = 0;
  private ab = 0;
  private dd = 0;
  private ss = 0;
  private count = 0;
  private tensors = 0;

  add(a: Float32Array, b: Float32Array): this {
    if (a.length !== b.length) {
      throw new CoreInputError('weights-mismatch', `tensor ${this.tensors} has ${a.length} elements in one model and ${b.length} in the other`, {
        tensor: this.tensors,
      }, 422);
    }
    // Per-tensor partial sums keep the rounding error of the running totals small.
    let aa = 0;
    let bb = 0;
    let ab = 0;
    let dd = 0;
    let ss = 0;
    for (let i = 0; i < a.length; i++) {
      const x = a[i];
      const y = b[i];
      const d = x - y;
      aa += x * x;
      bb += y * y;
      ab += x * y;
      dd += d * d;
      ss += (x + y) * (x + y);
    }
    this.aa += aa;
    this.bb += bb;
    this.ab += ab;
    this.dd += dd;
    this.ss += ss;
    this.count += a.length;
    this.tensors++;
    return this;
  }

  result(): WeightComparison {
    const normA = Math.sqrt(this.aa);
    const normB = Math.sqrt(this.bb);
    const l2 = Math.sqrt(this.dd);
    let angle: number | null = null;
    if (normA > 0 && normB > 0) {
      // (‖a‖ − ‖b‖)² computed as ((‖a‖² − ‖b‖²)/(‖a‖ + ‖b‖))², free of the cancellation of ‖a‖ − ‖b‖.
      const dn = (this.aa - this.bb) / (normA + normB);
      const minus = Math.sqrt(Math.max(0, this.dd - dn * dn));
      const plus = Math.sqrt(Math.max(0, this.ss - dn * dn));
      angle = (2 * Math.atan2(minus, plus) * 180) / Math.PI;
    }
    return {
      l2,
      angleDegrees: angle,
      normA,
      normB,
      dot: this.ab,
      relative: normA > 0 ? l2 / normA : l2 > 0 ? Number.POSITIVE_INFINITY : 0,
      elements: this.count,
    };
  }
}

function pairUp(a: Iterable<Float32Array>, b: Iterable<Float32Array>, acc: WeightDistanceAccumulator): WeightComparison {
  const ia = a[Symbol.iterator]();
  const ib = b[Symbol.iterator]();
  let k = 0;
  for (;;) {
    const x = ia.next();
    const y = ib.next();
    if (x.done || y.done) {
      if (x.done !== y.done) throw new CoreInputError('weights-mismatch', `the models have different numbers of tensors (one ends after ${k})`, {}, 422);
      return acc.result();
    }
    acc.add(x.value, y.value);
    k++;
  }
}

/** L2 distance and angle between two models given as matching sequences of tensors. */
export function compareWeights(a: Iterable<Float32Array>, b: Iterable<Float32Array>): WeightComparison {
  return pairUp(a, b, new WeightDistanceAccumulator());
}

/** The same over async sequences (tensors streamed from two checkpoints). */
export async function compareWeightsAsync(a: AsyncIterable<Float32Array>, b: AsyncIterable<Float32Array>): Promise<WeightComparison> {
  const acc = new WeightDistanceAccumulator();
  const ia = a[Symbol.asyncIterator]();
  const ib = b[Symbol.asyncIterator]();
  let k = 0;
  for (;;) {
    const [x, y] = await Promise.all([ia.next(), ib.next()]);
    if (x.done || y.done) {
      if (x.done !== y.done) throw new CoreInputError('weights-mismatch', `the models have different numbers of tensors (one ends after ${k})`, {}, 422);
      return acc.result();
    }
    acc.add(x.value, y.value);
    k++;
  }
}

/** ALLR's d = ‖θ − θ₀‖ / ‖θ‖ (θ the current weights, θ₀ those right after pruning). */
export function relativeDistance(theta: Iterable<Float32Array>, theta0: Iterable<Float32Array>): number {
  return compareWeights(theta, theta0).relative;
}
