import { type CheckpointReader, DTYPE_BYTES, FLOAT_DTYPES, type TensorEntry } from '../tensors.js';
import { type CheckpointFormat, TensorRangeReader } from './file-reader.js';
import { SafetensorsWriter } from './safetensors.js';
import type { ByteSink } from './tensor-writer.js';
import { TfjsWeightsWriter } from './tfjs.js';

/** Maps one float tensor (as float32) to its new values; may return `data` itself, modified. */
export type TensorTransform = (name: string, data: Float32Array, entry: TensorEntry) => Float32Array | Promise<Float32Array>;

export interface WriteLikeOptions {
  /** Output layout. Defaults to the reader's own format (file readers know it). */
  format?: CheckpointFormat;
  /** safetensors metadata; defaults to the reader's metadata when it has any. */
  metadata?: Record<string, string>;
  /** Applied to every float tensor; integer and bool tensors are copied byte for byte. */
  transform?: TensorTransform;
}

/**
 * Writes a checkpoint with the same layout as `reader` (same names, order, dtypes and shapes) to a
 * sink, passing each float tensor through `transform`. Used to write pruned models and soups.
 * Float tensors are re-encoded in their own dtype (F16 stays F16); without a transform every
 * tensor is copied raw, so the data bytes are identical. One tensor in memory at a time.
 */
export async function writeCheckpointLike(reader: CheckpointReader, sink: ByteSink, opts: WriteLikeOptions = {}): Promise<{ bytesWritten: number }> {
  const own = reader as Partial<{ format: CheckpointFormat; metadata: Record<string, string> }>;
  const format = opts.format ?? own.format;
  if (!format) throw new Error('writeCheckpointLike: say which format to write (safetensors or tfjs-weights)');
  const writer =
    format === 'safetensors'
      ? new SafetensorsWriter(reader.tensors, opts.metadata ?? own.metadata ?? {}, sink)
      : new TfjsWeightsWriter(reader.tensors, sink);
  let floatBuf: Float32Array | undefined;
  let rawBuf: Uint8Array | undefined;
  // Raw bytes are trustworthy only from stored bytes (files, ranged sources); other readers (MemoryCheckpoint) hold float32.
  const rawFloats = !opts.transform && reader instanceof TensorRangeReader;
  for (const entry of reader.tensors) {
    if (FLOAT_DTYPES.has(entry.dtype) && !rawFloats) {
      const n = entry.byteLength / DTYPE_BYTES[entry.dtype];
      if (!floatBuf || floatBuf.length < n) floatBuf = new Float32Array(n);
      const data = await reader.readFloat32(entry.name, floatBuf);
      await writer.writeTensor(entry.name, opts.transform ? await opts.transform(entry.name, data, entry) : data);
    } else {
      if (!rawBuf || rawBuf.byteLength < entry.byteLength) rawBuf = new Uint8Array(entry.byteLength);
      await writer.writeTensor(entry.name, await reader.readRaw(entry.name, rawBuf));
    }
  }
  return writer.finish();
}
