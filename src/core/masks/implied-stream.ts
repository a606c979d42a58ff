import { isPrunable } from '../pruning/prunable.js';
import { DTYPE_BYTES, type DType, type TensorEntry } from '../tensors.js';
import { maskHash } from './compare.js';
import { allocateMask, type Mask, type TensorMask } from './mask.js';

/**
 * The implied mask (see `impliedMask`) computed from a checkpoint's bytes as they stream past — an
 * upload or a file a worker writes — so nobody re-opens the file to learn it. Same rule: the
 * default prunable tensors; an element is pruned when it reads as ±0 in float32 (so a float64 too
 * small for float32 is pruned, as `readFloat32` would make it), anything else (NaN included) kept.
 *
 * `push(chunk, at)` takes chunks in file order with `at` the file offset of `chunk[0]`; bytes outside
 * the prunable tensors are ignored. Entries carry absolute offsets.
 */
export class ImpliedMaskStream {
  private readonly entries: TensorEntry[];
  private readonly mask: Mask;
  private index = 0;
  private readonly carry = new Uint8Array(8);
  private carryLength = 0;

  constructor(entries: readonly TensorEntry[]) {
    this.entries = entries.filter((e) => isPrunable(e));
    this.mask = allocateMask(this.entries);
  }

  /** False when the checkpoint has no prunable tensor (its implied-mask hash is null). */
  get hasPrunable(): boolean {
    return this.entries.length > 0;
  }

  push(chunk: Uint8Array, at: number): void {
    const end = at + chunk.byteLength;
    while (this.index < this.entries.length) {
      const e = this.entries[this.index];
      const eEnd = e.byteOffset + e.byteLength;
      if (eEnd <= at) {
        this.index++;
        this.carryLength = 0;
        continue;
      }
      if (e.byteOffset >= end) return;
      const from = Math.max(at, e.byteOffset);
      const to = Math.min(end, eEnd);
      this.consume(this.mask.tensors[this.index], e.dtype, chunk, from - at, to - at, from - e.byteOffset);
      if (to < eEnd) return;
      this.index++;
      this.carryLength = 0;
    }
  }

  /** The mask so far (complete once every byte was pushed). */
  result(): Mask {
    return this.mask;
  }

  /** The hash of the implied mask, or null when no tensor is prunable. */
  hash(): string | null {
    return this.hasPrunable ? maskHash(this.mask) : null;
  }

  private consume(tm: TensorMask, dtype: DType, bytes: Uint8Array, start: number, stop: number, posInTensor: number): void {
    const size = DTYPE_BYTES[dtype];
    let p = start;
    let element = Math.floor(posInTensor / size);
    if (this.carryLength > 0) {
      const take = Math.min(size - this.carryLength, stop - p);
      this.carry.set(bytes.subarray(p, p + take), this.carryLength);
      this.carryLength += take;
      p += take;
      if (this.carryLength < size) return;
      if (nonZero(dtype, this.carry, 0)) keep(tm, element);
      element++;
      this.carryLength = 0;
    }
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (; p + size <= stop; p += size, element++) {
      if (nonZeroAt(dtype, view, bytes, p)) keep(tm, element);
    }
    if (p < stop) {
      this.carry.set(bytes.subarray(p, stop), 0);
      this.carryLength = stop - p;
    }
  }
}

function keep(tm: TensorMask, i: number): void {
  tm.bits[i >>> 3] |= 1 << (i & 7);
  tm.kept++;
}

function nonZero(dtype: DType, bytes: Uint8Array, p: number): boolean {
  return nonZeroAt(dtype, new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength), bytes, p);
}

function nonZeroAt(dtype: DType, view: DataView, bytes: Uint8Array, p: number): boolean {
  switch (dtype) {
    case 'F32':
      return (view.getUint32(p, true) & 0x7fffffff) !== 0;
    case 'F16':
    case 'BF16':
      return (view.getUint16(p, true) & 0x7fff) !== 0;
    case 'F64':
      // readFloat32 rounds to float32: a value that rounds to ±0 there is pruned here too.
      return Math.fround(view.getFloat64(p, true)) !== 0;
    default: {
      // Prunable tensors are floats; other dtypes never reach here, but answer "any byte set".
      let any = 0;
      for (let k = 0; k < DTYPE_BYTES[dtype]; k++) any |= bytes[p + k];
      return any !== 0;
    }
  }
}

/**
 * Follows a checkpoint's byte stream for its implied mask when the layout is only known after a
 * header (safetensors): `layout()` answers the entries once they are known, else null.
 */
export class ImpliedMaskFollower {
  private stream: ImpliedMaskStream | null = null;
  private position = 0;

  constructor(private readonly layout: () => readonly TensorEntry[] | null | undefined) {}

  /** Call after the parser has seen `chunk`, so a header completed by it is known. */
  push(chunk: Uint8Array): void {
    if (!this.stream) {
      const entries = this.layout();
      if (entries) this.stream = new ImpliedMaskStream(entries);
    }
    this.stream?.push(chunk, this.position);
    this.position += chunk.byteLength;
  }

  /** The implied-mask hash of everything pushed, or null when no tensor is prunable. */
  hash(): string | null {
    if (!this.stream) {
      const entries = this.layout();
      if (!entries) throw new Error('the checkpoint layout never became known');
      this.stream = new ImpliedMaskStream(entries);
    }
    return this.stream.hash();
  }
}
