import { createHash } from 'node:crypto';
import { hamming, type Mask, sameShape, type TensorMask } from './mask.js';

const HASH_DOMAIN = 'sparsoup-mask-v1\0';

/** Orders names by their UTF-8 bytes, so the hash is the same in any language. */
function compareUtf8(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

/**
 * Canonical mask hash, lowercase hex sha256 of:
 *   "sparsoup-mask-v1\0", then for each tensor in UTF-8 byte order of its name:
 *   u32le byte length of the name, the name in UTF-8, u32le rank, each dim as u64le,
 *   then the packed bits (`ceil(size / 8)` bytes, LSB-first, padding bits 0).
 * Independent of tensor order in the mask and of how the bits are stored, so two masks are equal
 * iff their hashes are.
 */
export function maskHash(mask: Mask): string {
  const h = createHash('sha256');
  h.update(HASH_DOMAIN);
  const sorted = [...mask.tensors].sort((a, b) => compareUtf8(a.name, b.name));
  for (const t of sorted) {
    const name = Buffer.from(t.name, 'utf8');
    const head = Buffer.alloc(8 + t.shape.length * 8);
    head.writeUInt32LE(name.length, 0);
    head.writeUInt32LE(t.shape.length, 4);
    for (const [i, d] of t.shape.entries()) head.writeBigUInt64LE(BigInt(d), 8 + i * 8);
    h.update(head.subarray(0, 4));
    h.update(name);
    h.update(head.subarray(4));
    h.update(t.bits);
  }
  return h.digest('hex');
}

export interface TensorMaskDiff {
  name: string;
  /** True when the bits differ. */
  differing: boolean;
  /** Positions that differ. */
  hamming: number;
  /** Kept in `a`, pruned in `b`. */
  keptOnlyInA: number;
  /** Kept in `b`, pruned in `a`. */
  keptOnlyInB: number;
}

export interface MaskDiff {
  /** Same tensor names, shapes and bits. */
  equal: boolean;
  /** Tensors present in both with the same shape, in `a`'s order. */
  tensors: TensorMaskDiff[];
  /** Names in `a` but not in `b`. */
  missing: string[];
  /** Names in `b` but not in `a`. */
  extra: string[];
  shapeDifferences: { name: string; a: number[]; b: number[] }[];
  /** Sum of `hamming` over the compared tensors. */
  hamming: number;
}

export function diffMasks(a: Mask, b: Mask): MaskDiff {
  const inB = new Map<string, TensorMask>(b.tensors.map((t) => [t.name, t]));
  const inA = new Set(a.tensors.map((t) => t.name));
  const tensors: TensorMaskDiff[] = [];
  const missing: string[] = [];
  const shapeDifferences: MaskDiff['shapeDifferences'] = [];
  let total = 0;
  for (const ta of a.tensors) {
    const tb = inB.get(ta.name);
    if (!tb) {
      missing.push(ta.name);
      continue;
    }
    if (!sameShape(ta.shape, tb.shape)) {
      shapeDifferences.push({ name: ta.name, a: [...ta.shape], b: [...tb.shape] });
      continue;
    }
    const d = hamming(ta.bits, tb.bits);
    // kept(a) = common + onlyA, kept(b) = common + onlyB, onlyA + onlyB = hamming.
    const onlyA = (d + ta.kept - tb.kept) / 2;
    tensors.push({ name: ta.name, differing: d > 0, hamming: d, keptOnlyInA: onlyA, keptOnlyInB: d - onlyA });
    total += d;
  }
  const extra = b.tensors.filter((t) => !inA.has(t.name)).map((t) => t.name);
  return {
    equal: missing.length === 0 && extra.length === 0 && shapeDifferences.length === 0 && total === 0,
    tensors,
    missing,
    extra,
    shapeDifferences,
    hamming: total,
  };
}
