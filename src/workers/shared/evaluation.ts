import type * as tf from '@tensorflow/tfjs';
import { corruptedSplit } from '../../core/data/corruptions.js';
import type { ImageDataset, SplitName } from '../../core/data/dataset.js';
import { classificationMetrics } from '../../core/metrics/classification.js';
import { evaluateModel } from '../../core/tf/evaluate.js';
import type { EvaluationMetrics } from '../tasks.js';

/** Accuracy, loss, ECE (15 bins), per-class and worst-class accuracy, then accuracy under each corruption. */
export function evaluateWithCorruptions(
  model: tf.LayersModel,
  ds: ImageDataset,
  split: SplitName,
  corruptions: { name: string; severity: number }[],
  seed: number,
  progress?: (done: number, total: number) => void,
): EvaluationMetrics {
  const out = evaluateModel(model, ds, split);
  const m = classificationMetrics(out.logits, out.labels, ds.classes, 'logits');
  progress?.(1, corruptions.length + 1);
  const corrupted = corruptions.map((c, i) => {
    const cds = corruptedSplit(ds, split, c.name, c.severity, seed);
    const r = evaluateModel(model, cds, 'test'); // corruptedSplit puts the corrupted images in its test split
    progress?.(i + 2, corruptions.length + 1);
    return { name: c.name, severity: c.severity, accuracy: r.accuracy };
  });
  return {
    count: m.n,
    accuracy: m.accuracy,
    loss: m.loss,
    ece: m.ece,
    perClassAccuracy: m.perClassAccuracy,
    worstClass: m.worstClass?.index ?? null,
    worstClassAccuracy: m.worstClass?.accuracy ?? null,
    corruptions: corrupted,
    meanCorruptionAccuracy: corrupted.length ? corrupted.reduce((a, c) => a + c.accuracy, 0) / corrupted.length : null,
  };
}
