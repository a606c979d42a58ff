import { DTYPE_BYTES, type DType, type TensorEntry, type TensorStats } from '../tensors.js';

/**
 * Per-tensor zero and non-finite counts over tensor bytes that arrive in arbitrary chunks. Shared by
 * the safetensors and TensorFlow.js ingests. Keeps no tensor data: only the counts and a carry of
 * at most 7 bytes for an element split across two chunks.
 *
 * The entries must be contiguous and sorted by offset (both parsers guarantee it); the accumulator
 * sees only the data bytes, starting at the first entry's offset.
 */
export class TensorStatsAccumulator {
  readonly stats: TensorStats[];
  /** Data bytes this accumulator expects in total. */
  readonly expectedBytes: number;
  private index = 0;
  private posInTensor = 0;
  private received = 0;
  private readonly carry = new Uint8Array(8);
  private carryLength = 0;

  constructor(private readonly entries: readonly TensorEntry[]) {
    const start = entries.length > 0 ? entries[0].byteOffset : 0;
    let end = start;
    for (const e of entries) {
      if (e.byteOffset !== end) throw new Error(`tensor ${e.name} is not contiguous with the previous one`);
      end += e.byteLength;
    }
    this.expectedBytes = end - start;
    this.stats = entries.map((e) => ({
      name: e.name,
      dtype: e.dtype,
      shape: [...e.shape],
      size: e.byteLength / DTYPE_BYTES[e.dtype],
      zeros: 0,
      nonFinite: 0,
    }));
  }

  get receivedBytes(): number {
    return this.received;
  }

  get complete(): boolean {
    return this.received === this.expectedBytes;
  }

  /** Consumes data bytes; the caller must not pass more than `expectedBytes` in total. */
  consume(chunk: Uint8Array): void {
    if (this.received + chunk.byteLength > this.expectedBytes) throw new RangeError('more tensor bytes than expected');
    this.received += chunk.byteLength;
    let off = 0;
    while (off < chunk.byteLength) {
      while (this.entries[this.index].byteLength === this.posInTensor) {
        this.index++;
        this.posInTensor = 0;
      }
      const entry = this.entries[this.index];
      const st = this.stats[this.index];
      const size = DTYPE_BYTES[entry.dtype];
      if (this.carryLength > 0) {
        const take = Math.min(size - this.carryLength, chunk.byteLength - off);
        this.carry.set(chunk.subarray(off, off + take), this.carryLength);
        this.carryLength += take;
        off += take;
        this.posInTensor += take;
        if (this.carryLength === size) {
          countElements(entry.dtype, this.carry, 0, 1, st);
          this.carryLength = 0;
        }
        continue;
      }
      const avail = Math.min(entry.byteLength - this.posInTensor, chunk.byteLength - off);
      const whole = avail - (avail % size);
      if (whole > 0) countElements(entry.dtype, chunk, off, whole / size, st);
      const rest = avail - whole; // only at the end of a chunk: tensor lengths are whole elements
      if (rest > 0) this.carry.set(chunk.subarray(off + whole, off + avail), 0);
      this.carryLength = rest;
      off += avail;
      this.posInTensor += avail;
    }
  }
}

/** Adds the zeros (±0) and non-finite values among `n` elements at `bytes[start…]` to `st`. */
export function countElements(dtype: DType, bytes: Uint8Array, start: number, n: number, st: { zeros: number; nonFinite: number }): void {
  let zeros = 0;
  let nonFinite = 0;
  switch (dtype) {
    case 'F32':
      if (((bytes.byteOffset + start) & 3) === 0) {
        const v = new Uint32Array(bytes.buffer, bytes.byteOffset + start, n);
        for (let i = 0; i < n; i++) {
          const b = v[i];
          if ((b & 0x7fffffff) === 0) zeros++;
          else if ((b & 0x7f800000) === 0x7f800000) nonFinite++;
        }
      } else {
        for (let i = 0, p = start; i < n; i++, p += 4) {
          const hi = bytes[p + 3] & 0x7f;
          if ((bytes[p] | bytes[p + 1] | bytes[p + 2] | hi) === 0) zeros++;
          else if (hi === 0x7f && (bytes[p + 2] & 0x80) !== 0) nonFinite++;
        }
      }
      break;
    case 'F16':
      for (let i = 0, p = start; i < n; i++, p += 2) {
        const hi = bytes[p + 1] & 0x7f;
        if ((bytes[p] | hi) === 0) zeros++;
        else if ((hi & 0x7c) === 0x7c) nonFinite++;
      }
      break;
    case 'BF16':
      for (let i = 0, p = start; i < n; i++, p += 2) {
        const hi = bytes[p + 1] & 0x7f;
        if ((bytes[p] | hi) === 0) zeros++;
        else if (hi === 0x7f && (bytes[p] & 0x80) !== 0) nonFinite++;
      }
      break;
    case 'F64':
      for (let i = 0, p = start; i < n; i++, p += 8) {
        const hi = bytes[p + 7] & 0x7f;
        const b6 = bytes[p + 6];
        if ((bytes[p] | bytes[p + 1] | bytes[p + 2] | bytes[p + 3] | bytes[p + 4] | bytes[p + 5] | b6 | hi) === 0) zeros++;
        else if (hi === 0x7f && (b6 & 0xf0) === 0xf0) nonFinite++;
      }
      break;
    default: {
      // Integers and bool: zero means every byte is zero.
      const size = DTYPE_BYTES[dtype];
      if (size === 1) {
        for (let i = 0, p = start; i < n; i++, p++) if (bytes[p] === 0) zeros++;
      } else {
        for (let i = 0, p = start; i < n; i++, p += size) {
          let any = 0;
          for (let k = 0; k < size; k++) any |= bytes[p + k];
          if (any === 0) zeros++;
        }
      }
    }
  }
  st.zeros += zeros;
  st.nonFinite += nonFinite;
}
