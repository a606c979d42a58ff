/**
 * A score helper thread (see score-helper.ts): one copy of the scratch model; loads the weights of
 * each scored set, and runs the part of its recalibration and validation passes it is sent.
 */
import { parentPort, workerData } from 'node:worker_threads';
import * as tf from '@tensorflow/tfjs';
import { type BackendPreference, initBackend } from '../core/tf/backend.js';
import { assignBatchNormStatistics, batchNormMoments } from '../core/tf/bn-recalibration.js';
import { evaluateModel } from '../core/tf/evaluate.js';
import { namedWeights, setWeightsFromBytes } from '../core/tf/model-io.js';
import { setWasmKernels } from '../core/tf/kernel-set.js';
import { setDefaultSparseMatMul } from '../core/tf/sparse-matmul.js';
import type { ScoreHelperInit, ScoreHelperReply, ScoreHelperRequest } from './score-helper.js';

const init = workerData as ScoreHelperInit;
const port = parentPort!;

async function main() {
  await initBackend(init.backend as BackendPreference);
  setDefaultSparseMatMul(init.evalSparse ?? 'auto');
  setWasmKernels(init.wasmKernels ?? 'sparsoup');
  const model = await tf.models.modelFromJSON(init.topology as unknown as tf.io.ModelJSON);
  const variables = namedWeights(model);
  const ds = init.dataset;
  port.on('message', (req: ScoreHelperRequest) => {
    try {
      const reply: ScoreHelperReply = { id: req.id };
      if (req.op === 'load') setWeightsFromBytes(variables, init.entries, req.bytes);
      else if (req.op === 'moments') reply.moments = batchNormMoments(model, ds, init.recalibration.subarray(req.from, req.to), init.recalibrationBatch);
      else if (req.op === 'stats') assignBatchNormStatistics(model, req.batches);
      else {
        const r = evaluateModel(model, ds, ds.splits.val.subarray(req.from, req.to), { batchSize: init.evalBatch });
        reply.correct = Math.round(r.accuracy * r.count);
      }
      port.postMessage(reply);
    } catch (err) {
      port.postMessage({ id: req.id, error: err instanceof Error ? err.message : String(err) });
    }
  });
  port.postMessage({ ready: true });
}

main().catch((err) => port.postMessage({ ready: false, error: err instanceof Error ? err.message : String(err) }));
