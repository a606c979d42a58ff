import { SafetensorsIngest } from '../core/checkpoint/safetensors.js';
import type { ByteSink } from '../core/checkpoint/tensor-writer.js';
import { WeightsIngest } from '../core/checkpoint/tfjs.js';
import { ImpliedMaskFollower } from '../core/masks/implied-stream.js';
import type { TensorEntry, TensorStats } from '../core/tensors.js';
import type { ArtifactStore, StoredArtifact } from './artifact-store.js';

export interface WrittenCheckpoint {
  weights: StoredArtifact;
  entries: TensorEntry[];
  stats: TensorStats[];
  /** Hash of the written weights' exact-zero pattern on the prunable tensors (null when none is prunable). */
  impliedMaskHash: string | null;
}

/**
 * Writes a checkpoint produced by `write` into the store, reading it back through the same strict
 * ingest an upload goes through: what we produce is checked like what users send, and its per-tensor
 * statistics and implied mask come for free. `entries` is the weights layout for TensorFlow.js output (safetensors
 * carries its own header).
 */
export async function writeCheckpointArtifact(
  store: ArtifactStore,
  format: 'safetensors' | 'tfjs-layers' | 'tfjs-graph',
  entries: readonly TensorEntry[],
  write: (sink: ByteSink) => Promise<unknown>,
): Promise<WrittenCheckpoint> {
  const writer = await store.createWriter();
  try {
    const expected = entries.reduce((n, e) => Math.max(n, e.byteOffset + e.byteLength), 0);
    const ingest = format === 'safetensors' ? new SafetensorsIngest() : new WeightsIngest(entries, expected);
    // The implied mask is computed here, where the bytes pass, so landing the result reads no file.
    const implied = new ImpliedMaskFollower(() => (ingest instanceof SafetensorsIngest ? ingest.header?.entries : entries));
    await write(async (chunk) => {
      ingest.push(chunk);
      implied.push(chunk);
      await writer.write(chunk);
    });
    const result: { stats: TensorStats[]; entries?: TensorEntry[] } = ingest.finish();
    const weights = await writer.commit();
    return { weights, entries: result.entries ?? [...entries], stats: result.stats, impliedMaskHash: implied.hash() };
  } catch (err) {
    await writer.abort();
    throw err;
  }
}
