import { writeCheckpointLike } from '../../core/checkpoint/write-like.js';
import {
  allocateMask,
  applyMask,
  checkMaskFits,
  impliedBits,
  type Mask,
  maskHash,
  serializeMask,
  summarizeMask,
  wordsOf,
} from '../../core/masks/index.js';
import { PruneBuffers, prune } from '../../core/pruning/methods.js';
import type { CheckpointReader } from '../../core/tensors.js';
import type { ArtifactStore } from '../../storage/artifact-store.js';
import { writeCheckpointArtifact } from '../../storage/checkpoint-output.js';
import type { TaskContext } from '../shared/context.js';
import { openStoredModel, readStoredMask } from '../shared/stored-models.js';
import type { ApplyMaskTask, MaskedModelResult, PruneTask, StoredModelRef } from '../tasks.js';

// Tasks on one thread run one at a time: one set of scratch buffers per thread spares the slow first
// touch of fresh memory on every prune.
const buffers = new PruneBuffers();

/** Selects the mask, stores it, and writes the model with the mask applied (same format and layout). */
export async function runPrune(task: PruneTask, ctx: TaskContext): Promise<MaskedModelResult> {
  const store = ctx.store;
  const reader = await openStoredModel(store, task.model);
  try {
    const { method, sparsity, n, m, seed, include, exclude } = task.options;
    const layout = task.options.layout ?? (task.model.format === 'safetensors' ? 'torch' : 'tfjs');
    const result = await prune(reader, { method, sparsity, n, m, seed, layout, rule: { include, exclude }, buffers });
    return { ...(await storeMaskedModel(store, reader, task.model, result.mask)), stats: result.stats };
  } finally {
    await reader.close();
  }
}

/** Applies a stored mask to a model: shapes must match, or a CoreInputError says which differ. */
export async function runApplyMask(task: ApplyMaskTask, ctx: TaskContext): Promise<MaskedModelResult> {
  const store = ctx.store;
  const mask = await readStoredMask(store, task.maskSha256);
  const reader = await openStoredModel(store, task.model);
  try {
    checkMaskFits(mask, reader.tensors);
    return await storeMaskedModel(store, reader, task.model, mask);
  } finally {
    await reader.close();
  }
}

async function storeMaskedModel(store: ArtifactStore, reader: CheckpointReader, ref: StoredModelRef, mask: Mask): Promise<MaskedModelResult> {
  const byName = new Map(mask.tensors.map((t) => [t.name, t]));
  const implied = allocateMask(mask.tensors);
  const impliedByName = new Map(implied.tensors.map((t) => [t.name, t]));
  const maskStored = await store.put(serializeMask(mask));
  try {
    const model = await writeCheckpointArtifact(store, ref.format, ref.entries, (sink) =>
      writeCheckpointLike(reader, sink, {
        format: ref.format === 'safetensors' ? 'safetensors' : 'tfjs-weights',
        transform: (name, data) => {
          const tm = byName.get(name);
          if (tm) {
            applyMask(data, tm);
            const it = impliedByName.get(name)!;
            it.kept = impliedBits(new Uint32Array(data.buffer, data.byteOffset, it.size), wordsOf(it)!);
          }
          return data;
        },
      }),
    );
    return { mask: { stored: maskStored, hash: maskHash(mask), summary: summarizeMask(mask) }, model, impliedMaskHash: maskHash(implied) };
  } catch (err) {
    if (maskStored.created) await store.delete(maskStored.sha256);
    throw err;
  }
}
