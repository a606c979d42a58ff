import type * as tf from '@tensorflow/tfjs';

// Batch-norm running statistics as TensorFlow.js (`moving_*`) and PyTorch (`running_*`) name them.
const BN_STATISTIC = /moving_(mean|variance)$|running_(mean|var)$/;

/**
 * Whether a model has batch norm: the one test, on a checkpoint's tensor names or on a layers
 * model's weights, so the service (which sees rows) and the workers (which see models) agree.
 */
export function hasBatchNorm(model: tf.LayersModel | readonly { name: string }[]): boolean {
  const names = Array.isArray(model) ? model.map((t) => t.name) : (model as tf.LayersModel).weights.map((w) => w.originalName);
  return names.some((n) => BN_STATISTIC.test(n));
}
