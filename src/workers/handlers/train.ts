import type * as tf from '@tensorflow/tfjs';
import type { SplitName } from '../../core/data/dataset.js';
import { CoreInputError } from '../../core/errors.js';
import { checkMaskFits, isKept, type Mask } from '../../core/masks/index.js';
import { compareWeights } from '../../core/metrics/weights.js';
import { isPrunable } from '../../core/pruning/prunable.js';
import { hasBatchNorm } from '../../core/tf/batch-norm.js';
import { recalibrateBatchNorm } from '../../core/tf/bn-recalibration.js';
import { evaluateModel } from '../../core/tf/evaluate.js';
import { namedWeights } from '../../core/tf/model-io.js';
import { type AllrInputs, trainModel, type WeightMask } from '../../core/tf/train.js';
import type { ArtifactStore } from '../../storage/artifact-store.js';
import type { TaskContext } from '../shared/context.js';
import { loadDataset } from '../shared/datasets.js';
import { evaluateWithCorruptions } from '../shared/evaluation.js';
import { checkModelFitsDataset, loadStoredLayersModel, readStoredMask, storeLayersModel } from '../shared/stored-models.js';
import type { CheckTrainResult, CheckTrainTask, EpochPoint, StoredLayersModelRef, TrainTask, TrainTaskResult } from '../tasks.js';

export async function runCheckTrain(task: CheckTrainTask, ctx: TaskContext): Promise<CheckTrainResult> {
  const [model, ds] = await Promise.all([loadStoredLayersModel(ctx.store, task.model), loadDataset(task.dataset, ctx)]);
  try {
    checkModelFitsDataset(model, ds);
    if (task.maskSha256) checkMaskFits(await readStoredMask(ctx.store, task.maskSha256), task.model.entries);
    const trainable = model.trainableWeights.filter((w) => isPrunable({ name: w.originalName, dtype: 'F32', shape: w.shape as number[] }));
    const found: CheckTrainResult = { prunableWeights: trainable.reduce((n, w) => n + (w.shape as number[]).reduce((a, b) => a * b, 1), 0), hasBatchNorm: hasBatchNorm(model) };
    if (task.allrReference) found.relativeDistance = await relativeDistance(ctx.store, model, task.allrReference);
    return found;
  } finally {
    model.dispose();
  }
}

export async function runTrain(task: TrainTask, ctx: TaskContext): Promise<TrainTaskResult> {
  const store = ctx.store;
  const [model, ds] = await Promise.all([loadStoredLayersModel(store, task.model), loadDataset(task.dataset, ctx)]);
  try {
    checkModelFitsDataset(model, ds);
    const mask = await weightMask(store, model, task);
    const allr = task.allr ? await allrInputs(store, model, task.allr) : undefined;
    const curve: EpochPoint[] = [];
    const accuracyOn = (split: SplitName) => (ds.splits[split].length ? evaluateModel(model, ds, split).accuracy : null);
    const train = await trainModel(model, ds, task.config, {
      mask,
      allr,
      progressEvery: task.progressEvery ?? 20,
      onProgress: (p) => ctx.progress({ ...p }),
      onEpochEnd: task.config.evaluateEachEpoch ? (epoch) => void curve.push({ epoch, valAccuracy: accuracyOn('val'), testAccuracy: accuracyOn('test') }) : undefined,
    });
    const revived = countRevived(model, mask);
    if (revived > 0) throw new Error(`retraining revived ${revived} pruned weights: the mask was not enforced`);
    if (task.recalibrate) recalibrateBatchNorm(model, ds, { seed: task.config.seed });
    const metrics: TrainTaskResult['metrics'] = {};
    for (const split of task.evaluate) {
      if (ds.splits[split].length > 0) metrics[split] = evaluateWithCorruptions(model, ds, split, [], 0);
    }
    const stored = await storeLayersModel(store, model);
    return { stored, train: task.config.evaluateEachEpoch ? { ...train, epochCurve: curve } : train, metrics, revived, backend: ctx.backend.name };
  } finally {
    model.dispose();
  }
}

/** The mask as the training loop takes it: 0/1 per element for each masked weight. */
async function weightMask(store: ArtifactStore, model: tf.LayersModel, task: TrainTask): Promise<WeightMask | undefined> {
  if (task.mask.kind === 'none') return undefined;
  const weights = namedWeights(model);
  const out: WeightMask = new Map();
  if (task.mask.kind === 'implied') {
    for (const [name, v] of weights) {
      if (!isPrunable({ name, dtype: 'F32', shape: v.shape as number[] })) continue;
      const data = v.read().dataSync();
      const m = new Uint8Array(data.length);
      for (let i = 0; i < data.length; i++) m[i] = data[i] !== 0 ? 1 : 0;
      out.set(name, m);
    }
    return out;
  }
  const mask: Mask = await readStoredMask(store, task.mask.sha256);
  checkMaskFits(mask, task.model.entries);
  for (const tm of mask.tensors) {
    if (!weights.has(tm.name)) throw new CoreInputError('mask-mismatch', `the mask names ${tm.name}, which the model does not have`, { tensor: tm.name }, 422);
    const m = new Uint8Array(tm.size);
    for (let i = 0; i < tm.size; i++) m[i] = isKept(tm, i) ? 1 : 0;
    out.set(tm.name, m);
  }
  return out;
}

function countRevived(model: tf.LayersModel, mask: WeightMask | undefined): number {
  if (!mask) return 0;
  const weights = namedWeights(model);
  let revived = 0;
  for (const [name, m] of mask) {
    const data = weights.get(name)!.read().dataSync();
    for (let i = 0; i < m.length; i++) if (m[i] === 0 && data[i] !== 0) revived++;
  }
  return revived;
}

/** ALLR's inputs: d as the task carries it, or measured against its reference. */
async function allrInputs(store: ArtifactStore, pruned: tf.LayersModel, a: NonNullable<TrainTask['allr']>): Promise<AllrInputs> {
  const d = 'relativeDistance' in a ? a.relativeDistance : await relativeDistance(store, pruned, a.reference);
  return { relativeDistance: d, pruneRate: a.pruneRate, retrainToPretrainRatio: a.retrainToPretrainRatio };
}

/** ALLR's d = ‖θ − θ_pruned‖ / ‖θ‖ over the prunable weights, θ the dense reference. */
async function relativeDistance(store: ArtifactStore, pruned: tf.LayersModel, reference: StoredLayersModelRef): Promise<number> {
  const dense = await loadStoredLayersModel(store, reference);
  try {
    const dw = namedWeights(dense);
    const pw = namedWeights(pruned);
    const names = [...pw.keys()].filter((n) => dw.has(n) && isPrunable({ name: n, dtype: 'F32', shape: pw.get(n)!.shape as number[] }));
    const cmp = compareWeights(
      names.map((n) => pw.get(n)!.read().dataSync() as Float32Array),
      names.map((n) => dw.get(n)!.read().dataSync() as Float32Array),
    );
    return cmp.normB > 0 ? cmp.l2 / cmp.normB : 0;
  } finally {
    dense.dispose();
  }
}
