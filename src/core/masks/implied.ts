import { type PrunableRule, selectPrunable } from '../pruning/prunable.js';
import type { CheckpointReader } from '../tensors.js';
import { allocateMask, type Mask, wordsOf } from './mask.js';

/**
 * The mask implied by a model's exact zeros on its prunable tensors (+0 and -0 pruned, anything
 * else — NaN included — kept): the mask of a model this service did not prune. Reads one tensor
 * at a time; `scratch` is reused when large enough.
 */
export async function impliedMask(reader: CheckpointReader, rule: PrunableRule = {}, scratch?: Float32Array): Promise<Mask> {
  const entries = selectPrunable(reader.tensors, rule);
  const mask = allocateMask(entries);
  let buf = scratch ?? new Float32Array(0);
  for (let ti = 0; ti < entries.length; ti++) {
    const tm = mask.tensors[ti];
    if (buf.length < tm.size) buf = new Float32Array(tm.size);
    const f = await reader.readFloat32(tm.name, buf);
    tm.kept = impliedBits(new Uint32Array(f.buffer, f.byteOffset, tm.size), wordsOf(tm)!);
  }
  return mask;
}

/** Writes the non-zero pattern of float bits `u` into `words`; returns the non-zero count. */
export function impliedBits(u: Uint32Array, words: Uint32Array): number {
  const n = u.length;
  let kept = 0;
  for (let base = 0; base < n; base += 32) {
    const m = Math.min(32, n - base);
    let word = 0;
    for (let j = 0; j < m; j++) {
      // (x | -x) has its sign bit set iff x ≠ 0.
      const x = u[base + j] & 0x7fffffff;
      const nz = (x | -x) >>> 31;
      word |= nz << j;
      kept += nz;
    }
    words[base >>> 5] = word;
  }
  return kept;
}
