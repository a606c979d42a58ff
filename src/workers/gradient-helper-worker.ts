/**
 * A gradient helper thread (see gradient-helper.ts): holds a copy of one model and, for each step,
 * takes the current trainable weights and its part of the batch and answers with the gradients of
 * the mean softmax cross-entropy over that part.
 */
import { parentPort, workerData } from 'node:worker_threads';
import * as tf from '@tensorflow/tfjs';
import { type BackendPreference, initBackend } from '../core/tf/backend.js';
import type { HelperInit, HelperStep, HelperStepResult } from './gradient-helper.js';

const init = workerData as HelperInit;
const port = parentPort!;

async function main() {
  await initBackend(init.backend as BackendPreference);
  const model = await tf.models.modelFromJSON(init.topology as unknown as tf.io.ModelJSON);
  const byName = new Map(model.trainableWeights.map((w) => [w.originalName, w]));
  const vars = init.names.map((n) => {
    const w = byName.get(n);
    if (!w) throw new Error(`the helper's model has no trainable weight ${n}`);
    return w;
  });
  const varList = vars.map((w) => w.read() as tf.Variable);
  const [h, w, c] = init.inputShape;
  port.on('message', (step: HelperStep) => {
    try {
      tf.tidy(() => {
        for (const [i, v] of vars.entries()) v.write(tf.tensor(step.weights[i], v.shape as number[]));
      });
      const out = tf.tidy(() => {
        const xs = tf.tensor4d(step.xs, [step.count, h, w, c]);
        const ys = tf.oneHot(tf.tensor1d(step.ys, 'int32'), init.classes);
        const { value, grads } = tf.variableGrads(() => tf.losses.softmaxCrossEntropy(ys, model.apply(xs, { training: true }) as tf.Tensor) as tf.Scalar, varList);
        return { loss: value.dataSync()[0], grads: varList.map((v) => grads[v.name].dataSync() as Float32Array) };
      });
      const result: HelperStepResult = { id: step.id, loss: out.loss, grads: out.grads };
      port.postMessage(result, out.grads.map((g) => g.buffer as ArrayBuffer));
    } catch (err) {
      port.postMessage({ id: step.id, error: err instanceof Error ? err.message : String(err) });
    }
  });
  port.postMessage({ ready: true });
}

main().catch((err) => port.postMessage({ ready: false, error: err instanceof Error ? err.message : String(err) }));
