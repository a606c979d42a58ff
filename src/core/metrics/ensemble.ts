import { CoreInputError } from '../errors.js';

/**
 * Top-1 accuracy of a prediction ensemble: the mean of the members' softmax outputs, argmax (the
 * first maximum wins a tie, as in the single-model metrics). Each member's logits are N × K
 * row-major over the same samples as `labels`. The softmaxes are summed in float64; the mean's
 * argmax equals the sum's. Rows with a non-finite logit count as wrong for that member's vote
 * (its softmax row is skipped), as a diverged model's are in the single-model metrics.
 */
export function ensembleAccuracy(logitsPerMember: readonly Float32Array[], labels: Int32Array | Uint8Array, classes: number): number {
  const n = labels.length;
  if (!logitsPerMember.length) throw new CoreInputError('empty-ensemble', 'an ensemble needs at least one member');
  for (const l of logitsPerMember) if (l.length !== n * classes) throw new CoreInputError('shape-mismatch', `a member has ${l.length} logits; ${n} samples × ${classes} classes expected`);
  if (!n) return Number.NaN;
  const sum = new Float64Array(classes);
  let correct = 0;
  for (let i = 0; i < n; i++) {
    sum.fill(0);
    const r = i * classes;
    for (const logits of logitsPerMember) {
      let max = Number.NEGATIVE_INFINITY;
      let finite = true;
      for (let k = 0; k < classes; k++) {
        const z = logits[r + k];
        if (!Number.isFinite(z)) finite = false;
        if (z > max) max = z;
      }
      if (!finite) continue;
      let z = 0;
      for (let k = 0; k < classes; k++) z += Math.exp(logits[r + k] - max);
      for (let k = 0; k < classes; k++) sum[k] += Math.exp(logits[r + k] - max) / z;
    }
    let best = -1;
    let top = 0;
    for (let k = 0; k < classes; k++) {
      if (sum[k] > top) {
        top = sum[k];
        best = k;
      }
    }
    if (best === labels[i]) correct++;
  }
  return correct / n;
}
